"""Helpers for the robustness tests: real `estkit server serve` processes and a tiny EST client.

Why subprocesses here, when most tests use the in-process fixture: kill -9, two instances on one
database and "the database went away" are about processes. A server killed with SIGKILL must be a
real process with its own store connection, and two instances must not share a Python heap.

Why http.client for requests: each call is one fresh TLS connection with an exact body and exact
headers, and nothing retries behind our back, so "the client received a 200 with certificate X" is
a fact the test can rely on.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estkit.protocol import build_csr, generate_private_key
from estkit.protocol.pkcs7 import decode_certs_only_body

LOOPBACK = "127.0.0.1"
# Seconds a `serve` process may take to print its banner (imports + TLS setup on a busy machine).
SERVER_START_TIMEOUT_SECONDS = 60.0
# Seconds SIGTERM gets before we fall back to SIGKILL at teardown.
SERVER_STOP_TIMEOUT_SECONDS = 15.0
# Client socket timeout: a request the server does not answer within this is a hang (a failure).
REQUEST_TIMEOUT_SECONDS = 30.0
# The banner names the server by the host name in its certificate (localhost) or by address.
_BANNER = re.compile(r"listening on https://(?:127\.0\.0\.1|localhost):(\d+)")
# The name the servers' TLS certificates carry (BCP-003-01 T4: names, not addresses); clients
# connect to 127.0.0.1 and verify this name.
SERVER_NAME = "localhost"
# Seconds between hostile connections whose order a test checks: the server ages a connection
# from when it reads its first bytes, and connections read in one pass of a busy event loop get
# the same moment, in any order. Apart, their order is clear.
ORDER_GAP_SECONDS = 0.1


# ------------------------------------------------------------------------------------------------
# server processes


def _children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux /proc)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                found += [
                    int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                ]
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@dataclass
class ServeProcess:
    """One `estkit server serve DIR` subprocess listening on loopback; logs go to a file."""

    data_dir: Path
    log_path: Path
    port: int = 0
    extra_args: Sequence[str] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"https://{LOOPBACK}:{self.port}"

    def est_path(self, operation: str, label: str | None = None) -> str:
        middle = f"/{label}" if label else ""
        return f"/.well-known/est{middle}/{operation}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "estkit.cli.main",
            "server",
            "serve",
            str(self.data_dir),
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            *self.extra_args,
        ]

    def start(self) -> ServeProcess:
        """Start and wait for the banner; a second start reuses the port of the first."""
        assert self.process is None or self.process.poll() is not None, "already running"
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = dict(os.environ, COLUMNS="200", PYTHONUNBUFFERED="1")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            text = self.log_text(offset)
            match = _BANNER.search(text)
            if match:
                self.port = int(match.group(1))
                return self
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"`estkit server serve` exited with {self.process.returncode}:\n{text[-3000:]}"
                )
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"`estkit server serve` printed no banner:\n{self.log_text(offset)}")

    def log_text(self, offset: int = 0) -> str:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(offset)
                return handle.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a power-less crash of the process.

        Only the supervising process is signalled, as an operator or the OOM killer would; its
        worker processes must die with it (runner.py), which this waits for (and fails if not):
        a worker left behind would keep serving the port and holding the store."""
        if self.process is not None and self.process.poll() is None:
            workers = _children(self.process.pid)
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=SERVER_STOP_TIMEOUT_SECONDS)
            deadline = time.monotonic() + SERVER_STOP_TIMEOUT_SECONDS
            while (
                alive := [pid for pid in workers if _alive(pid)]
            ) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not alive, f"worker processes {alive} outlived their killed supervisor"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=SERVER_STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def run_cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``estkit ARGS`` as a user would (a subprocess), capturing its output."""
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "estkit.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------------------------------
# client side


def client_context(
    cafile: Path, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    # Full verification: chain and host name (see LoopbackHTTPSConnection).
    context = ssl.create_default_context(cafile=str(cafile))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def certificate(self) -> x509.Certificate:
        certificates = decode_certs_only_body(self.body)
        assert len(certificates) == 1, f"expected one certificate, got {len(certificates)}"
        return certificates[0]


class LoopbackHTTPSConnection(http.client.HTTPConnection):
    """HTTPS to 127.0.0.1, verifying the certificate for :data:`SERVER_NAME`.

    Why not ``http.client.HTTPSConnection("localhost")``: that resolves the name (maybe to ::1
    first); this always uses the IPv4 loopback address and still checks the host name.
    """

    def __init__(self, port: int, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(LOOPBACK, port, timeout=timeout)
        self._tls_context = context

    def connect(self) -> None:
        super().connect()
        self.sock = self._tls_context.wrap_socket(self.sock, server_hostname=SERVER_NAME)


def request(
    port: int,
    method: str,
    path: str,
    context: ssl.SSLContext,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = REQUEST_TIMEOUT_SECONDS,
) -> Reply:
    """One request on a fresh TLS connection to 127.0.0.1:port."""
    connection = LoopbackHTTPSConnection(port, context, timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return Reply(
            status=response.status,
            headers={name.lower(): value for name, value in response.getheaders()},
            body=data,
        )
    finally:
        connection.close()


def csr_body(common_name: str | None = None, *, key_type: str = "p256") -> tuple[bytes, str]:
    """A fresh key and base64 CSR body; returns (body, common name)."""
    name = common_name or f"node-{uuid.uuid4().hex[:12]}.example.com"
    key = generate_private_key(key_type)
    csr = build_csr(key, common_name=name, dns_names=[name])
    der = csr.public_bytes(serialization.Encoding.DER)
    return base64.encodebytes(der), name


def enroll(
    port: int,
    context: ssl.SSLContext,
    body: bytes,
    *,
    label: str | None = None,
    operation: str = "simpleenroll",
    timeout: float = REQUEST_TIMEOUT_SECONDS,
) -> Reply:
    middle = f"/{label}" if label else ""
    return request(
        port,
        "POST",
        f"/.well-known/est{middle}/{operation}",
        context,
        body=body,
        headers={"Content-Type": "application/pkcs10"},
        timeout=timeout,
    )


def serial_hex(certificate: x509.Certificate) -> str:
    """The store's spelling of a serial (lower-case hex, no leading zeros)."""
    return format(certificate.serial_number, "x")


def wait_for(predicate: object, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = bool(predicate())  # type: ignore[operator]
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


@contextlib.contextmanager
def raw_tls(port: int, context: ssl.SSLContext, timeout: float = REQUEST_TIMEOUT_SECONDS):  # type: ignore[no-untyped-def]
    """A connected TLS socket to the server, for hand-written (hostile) HTTP."""
    sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
    try:
        tls = context.wrap_socket(sock, server_hostname=SERVER_NAME)
    except BaseException:
        sock.close()
        raise
    try:
        yield tls
    finally:
        with contextlib.suppress(OSError):
            tls.close()
