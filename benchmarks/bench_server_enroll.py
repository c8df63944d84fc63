"""EST server throughput: a fresh TLS handshake + /simpleenroll per request (issue 2 benchmark).

What it measures, per key type (P-256 and RSA-2048: the device certificate, the CSR and the
negotiated server certificate are all of that type):

* enrollments/s and p50/p99 latency for 1 and for 16 concurrent clients. Each request opens a new
  TCP + TLS 1.2 connection with client-certificate authentication (the demo manufacturer's device
  certificate), POSTs a pre-made CSR and reads the issued certificate; ``Connection: close``.
* the ceiling: bare TLS handshakes/s (same client, same certificates, same 16 clients) against
  ``openssl s_server`` presenting a certificate with the same kind of key and requesting a client
  certificate.

The server runs as `estkit server serve DIR --workers N` in a subprocess (what users deploy);
the load generator runs on the same machine (threads: the GIL is released during the handshake's
cryptography and socket I/O). Targets (2 cores, generator included): >= 400 P-256 enrollments/s at
16 clients, single-client p50 <= 5 ms, enrollment rate >= 50 % of the bare-handshake rate.

Run: ``python benchmarks/bench_server_enroll.py [--duration 5] [--workers N] [--profile]``.
Prints figures; asserts nothing. ``--profile`` samples a one-worker server with py-spy at 16
clients and prints where the server's time goes. Without ``--workers`` the server runs with its
default (one worker per CPU).

Side by side with an older commit (issue 16): ``--baseline REV`` extracts REV with
``git archive`` into a temporary directory, starts that commit's server (same interpreter,
``PYTHONPATH`` pointing at its ``src``; nothing is installed) and the current one, each with
default settings (``estkit server serve DIR --port 0``, no other flag) on its own data directory
made by its own ``server init``, and drives them with the same load in alternating rounds of the
same duration; it prints each round and the ratio current/baseline. ``--load processes`` (the
default there) is the closed-loop method of a separate multi-process load generator: N processes,
each a loop of new TCP + TLS 1.2 connection with the device's client certificate (a full
handshake every time: no session is offered again), POST of the same CSR to /simpleenroll in the
bytes ``http.client`` sends, read the whole response, close. The generator shares the cores with
the server, so it does no per-request work beyond that (see :func:`_process_loop`); each round
prints its CPU per enrollment (``load``) beside the server's.
``--load threads`` uses the thread-based client above instead.

``--handshake-cpu N``: the server's CPU per full TLS handshake in one process over memory BIOs
(the context ``serve`` builds, the device's chain; P-256 and RSA-2048, TLS 1.2 and 1.3), beside
the same context with stateless session tickets: a figure a busy machine barely moves.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import multiprocessing.pool
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from estkit.ca.manufacturer import ManufacturerCA, issue_device_certificate
from estkit.protocol.csr import build_csr, encode_csr_body
from estkit.protocol.keys import generate_private_key
from estkit.server.datadir import InitResult, init_data_dir

TARGET_ENROLLMENTS_PER_SECOND = 400
TARGET_SINGLE_P50_MS = 5.0
TARGET_FRACTION_OF_HANDSHAKES = 0.5
# Issue 16's goals for --baseline 6b0a37a (default settings, 16 clients, same run): P-256
# enrollments/s at least 2.3x the baseline's (5x the C reference server), RSA-2048 2x, and a
# single client's p50 at most 4 ms (P-256).
TARGET_RATIO = {"p256": 2.3, "rsa2048": 2.0}
TARGET_SIDE_BY_SIDE_P50_MS = 4.0
KEY_TYPES = {"p256": "ECDHE-ECDSA-AES128-GCM-SHA256", "rsa2048": "ECDHE-RSA-AES128-GCM-SHA256"}
SERVER_CERT_SUFFIX = {"p256": "ec", "rsa2048": "rsa"}
START_TIMEOUT_SECONDS = 60
WARMUP_SECONDS = 0.5
RESPONSE_LIMIT_BYTES = 1 << 20
# Seconds a load process waits on one send or receive before counting the request as failed.
LOAD_SOCKET_TIMEOUT_SECONDS = 30
# Flights exchanged at most before an in-memory handshake must be complete (TLS 1.2 needs 2).
HANDSHAKE_ROUNDS = 10
# OpenSSL's default number of TLS 1.3 tickets per handshake (what the server sent before).
TLS13_DEFAULT_TICKETS = 2
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)")
# Functions whose inclusive share --profile reports (where an enrollment's time goes).
PROFILE_STEPS = (
    "SSLObject.do_handshake",
    "_SelectorSocketTransport.write",
    "RequestHandler._handle_request",
    "EstHandler.enroll",
    "decode_csr_body",
    "enroll",
    "ClientTrust.check",
    "CertificateAuthority.issue",
    "vet_request",
    "CertificateBuilder.sign",
    "CertificateStore.record_issued",
)


@dataclass(frozen=True)
class Scenario:
    key_type: str
    host: str
    port: int
    context: ssl.SSLContext
    request: bytes  # the complete HTTP request, pre-made


@dataclass
class Result:
    count: int
    errors: int
    seconds: float
    latencies: list[float]
    load_cpu: float | None = None  # CPU seconds the load processes spent (None: not measured)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1e3


# --- load generation --------------------------------------------------------------------------


def _one_enrollment(scenario: Scenario) -> bool:
    with socket.create_connection((scenario.host, scenario.port)) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with scenario.context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(scenario.request)
            chunks = []
            received = 0
            while True:
                data = tls.recv(65536)
                if not data:
                    break
                chunks.append(data)
                received += len(data)
                if received > RESPONSE_LIMIT_BYTES:
                    return False
    return b"".join(chunks[:1]).startswith(b"HTTP/1.1 200")


def _one_handshake(scenario: Scenario) -> bool:
    with (
        socket.create_connection((scenario.host, scenario.port)) as raw,
        scenario.context.wrap_socket(raw, server_hostname="localhost"),
    ):
        return True


def _drive(
    operation: Callable[[Scenario], bool], scenario: Scenario, clients: int, duration: float
) -> Result:
    """``clients`` threads doing ``operation`` back to back for ``duration`` seconds."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start_at = time.perf_counter() + WARMUP_SECONDS
    stop_at = start_at + duration

    def worker(index: int) -> None:
        while True:
            began = time.perf_counter()
            if began >= stop_at:
                return
            try:
                ok = operation(scenario)
            except OSError:
                ok = False
            ended = time.perf_counter()
            if began >= start_at and ended <= stop_at:
                if ok:
                    latencies[index].append(ended - began)
                else:
                    errors[index] += 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flat = [value for values in latencies for value in values]
    return Result(count=len(flat), errors=sum(errors), seconds=duration, latencies=flat)


# --- set-up -----------------------------------------------------------------------------------


def _device(paths: InitResult, key_type: str, directory: Path) -> tuple[Path, Path]:
    manufacturer = ManufacturerCA.load(paths.manufacturer_ca.parent)
    credential = issue_device_certificate(
        manufacturer, device_serial=f"BENCH-{key_type}", key_type=key_type
    )
    cert, key = directory / f"device-{key_type}.pem", directory / f"device-{key_type}.key"
    credential.write(cert, key)
    return cert, key


def _scenario(paths: InitResult, key_type: str, host: str, port: int, directory: Path) -> Scenario:
    cert, key = _device(paths, key_type, directory)
    context = ssl.create_default_context(cafile=str(paths.ca_certificates))
    context.load_cert_chain(str(cert), str(key))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(KEY_TYPES[key_type])
    # A fresh handshake per request, as the issue asks: no session resumption.
    context.options |= ssl.OP_NO_TICKET
    body = encode_csr_body(
        build_csr(generate_private_key(key_type), common_name="bench.example.com")
    )
    request = (
        b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/pkcs10\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return Scenario(key_type, host, port, context, request)


def _source_env(source: Path | None) -> dict[str, str]:
    """The environment that makes ``python -m estkit`` import the code under ``source``/src."""
    env = dict(os.environ, COLUMNS="250")
    if source is not None:
        env["PYTHONPATH"] = str(source / "src")
    return env


def _check_imports_from(source: Path) -> None:
    """Fail loudly when an installed estkit would shadow the code under ``source``."""
    where = subprocess.run(
        [sys.executable, "-c", "import estkit; print(estkit.__file__)"],
        capture_output=True,
        text=True,
        env=_source_env(source),
        check=True,
    ).stdout.strip()
    if not Path(where).resolve().is_relative_to((source / "src").resolve()):
        raise RuntimeError(f"estkit is imported from {where}, not from {source}/src")


@contextlib.contextmanager
def _estkit_server(
    data_dir: Path,
    workers: int | None,
    *,
    source: Path | None = None,
    quiet: bool = True,
) -> Iterator[tuple[int, int]]:
    """``estkit server serve DIR --port 0`` (plus ``--workers``/``--log-level error`` when asked)
    from the code under ``source`` (default: this checkout); yields (port, pid)."""
    extra = ["--workers", str(workers)] if workers is not None else []
    extra += ["--log-level", "error"] if quiet else []
    process = subprocess.Popen(
        [sys.executable, "-m", "estkit.cli.main", "server", "serve", str(data_dir), "--port", "0",
         *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_source_env(source),
    )  # fmt: skip
    try:
        assert process.stdout is not None
        port = None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        for line in process.stdout:
            match = re.search(r"listening on https://(?:127\.0\.0\.1|localhost):(\d+)", line)
            if match:
                port = int(match.group(1))
                break
            if time.monotonic() > deadline:
                break
        if port is None:
            raise RuntimeError("the estkit server did not start")
        threading.Thread(target=process.stdout.read, daemon=True).start()  # drain the banner
        yield port, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def _openssl_server(paths: InitResult, key_type: str) -> Iterator[int]:
    suffix = SERVER_CERT_SUFFIX[key_type]
    port = _free_port()
    process = subprocess.Popen(
        [shutil.which("openssl") or "openssl", "s_server", "-quiet", "-accept", str(port),
         "-cert", str(paths.data_dir / "tls" / f"server-{suffix}.pem"),
         "-key", str(paths.data_dir / "tls" / f"server-{suffix}.key"),
         "-verify", "1", "-CAfile", str(paths.manufacturer_ca), "-no_ticket"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- reporting --------------------------------------------------------------------------------


def _line(label: str, result: Result) -> str:
    return (
        f"  {label:<34} {result.rate:8.1f}/s   p50 {result.percentile(0.5):7.2f} ms   "
        f"p99 {result.percentile(0.99):7.2f} ms   (n={result.count}, errors={result.errors})"
    )


def _load_cpu(result: Result) -> str:
    """The load generator's CPU per enrollment (it shares the cores with the server)."""
    if result.load_cpu is None or not result.count:
        return ""
    return f", load {1e3 * result.load_cpu / result.count:.2f} ms"


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def run(duration: float, workers: int | None, ca_key: str) -> None:
    shown = "default" if workers is None else str(workers)
    print(f"estkit server enrollment benchmark: {os.cpu_count()} CPUs, server --workers {shown},")
    print(f"CA key {ca_key}, {duration:.0f} s per measurement, load generator on the same host\n")
    with tempfile.TemporaryDirectory(prefix="estkit-bench-") as tmp:
        directory = Path(tmp)
        paths = init_data_dir(directory / "data", key_type=ca_key)
        summary: dict[str, dict[str, Result]] = {}
        with _estkit_server(paths.data_dir, workers) as (port, _):
            for key_type in KEY_TYPES:
                scenario = _scenario(paths, key_type, "127.0.0.1", port, directory)
                print(f"{key_type}: TLS 1.2 {KEY_TYPES[key_type]}, client certificate {key_type}")
                results = {}
                for clients in (1, 16):
                    results[f"enroll{clients}"] = _drive(
                        _one_enrollment, scenario, clients, duration
                    )
                    print(
                        _line(f"estkit enroll, {clients:>2} client(s)", results[f"enroll{clients}"])
                    )
                results["estkit_handshake"] = _drive(_one_handshake, scenario, 16, duration)
                print(_line("estkit bare handshakes, 16 clients", results["estkit_handshake"]))
                summary[key_type] = results
        for key_type in KEY_TYPES:
            with _openssl_server(paths, key_type) as port:
                scenario = _scenario(paths, key_type, "127.0.0.1", port, directory)
                ceiling = _drive(_one_handshake, scenario, 16, duration)
                summary[key_type]["openssl_handshake"] = ceiling
                print(_line(f"{key_type} openssl s_server handshakes, 16", ceiling))
    p256 = summary["p256"]
    rate16 = p256["enroll16"].rate
    p50 = p256["enroll1"].percentile(0.5)
    fraction = rate16 / p256["openssl_handshake"].rate if p256["openssl_handshake"].rate else 0
    print("\ntargets (P-256):")
    print(f"  >= {TARGET_ENROLLMENTS_PER_SECOND} enrollments/s at 16 clients: {rate16:.0f}/s "
          f"-> {_verdict(rate16 >= TARGET_ENROLLMENTS_PER_SECOND)}")  # fmt: skip
    print(f"  single-client p50 <= {TARGET_SINGLE_P50_MS} ms: {p50:.2f} ms "
          f"-> {_verdict(p50 <= TARGET_SINGLE_P50_MS)}")  # fmt: skip
    print(f"  >= {TARGET_FRACTION_OF_HANDSHAKES:.0%} of bare handshakes/s: {fraction:.0%} "
          f"-> {_verdict(fraction >= TARGET_FRACTION_OF_HANDSHAKES)}")  # fmt: skip
    rsa = summary["rsa2048"]
    rsa_fraction = rsa["enroll16"].rate / rsa["openssl_handshake"].rate
    print(f"  (RSA-2048: {rsa['enroll16'].rate:.0f}/s at 16 clients, {rsa_fraction:.0%} of "
          f"{rsa['openssl_handshake'].rate:.0f} bare handshakes/s)")  # fmt: skip


# --- side by side with an older commit (--baseline REV) ------------------------------------------


@dataclass(frozen=True)
class ClientSetup:
    """What every load process needs (picklable: it crosses into the worker processes)."""

    host: str
    port: int
    cafile: str
    cert: str
    key: str
    ciphers: str
    body: bytes
    path: str = "/.well-known/est/simpleenroll"


def _process_context(setup: ClientSetup) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=setup.cafile)
    context.check_hostname = False
    context.load_cert_chain(setup.cert, setup.key)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(setup.ciphers)
    return context


def _http_client_request(setup: ClientSetup) -> bytes:
    """The bytes ``http.client`` sends for ``request("POST", path, body, headers)``: one write,
    HTTP/1.1 without ``Connection: close`` (the client reads Content-Length bytes and closes)."""
    return (
        f"POST {setup.path} HTTP/1.1\r\nHost: {setup.host}:{setup.port}\r\n"
        f"Accept-Encoding: identity\r\nContent-Length: {len(setup.body)}\r\n"
        "Content-Type: application/pkcs10\r\n\r\n"
    ).encode() + setup.body


def _read_response(tls: ssl.SSLSocket) -> bool:
    """Read one response (head, then Content-Length bytes of body); True if it is a 200."""
    data = tls.recv(65536)
    while b"\r\n\r\n" not in data:
        more = tls.recv(65536)
        if not more or len(data) > RESPONSE_LIMIT_BYTES:
            return False
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    match = _CONTENT_LENGTH.search(head)
    if match is None:
        return False
    missing = int(match.group(1)) - len(body)
    while missing > 0:
        more = tls.recv(min(missing, 65536))
        if not more:
            return False
        missing -= len(more)
    return head.startswith(b"HTTP/1.1 200")


def _process_loop(job: tuple[ClientSetup, float]) -> tuple[int, int, list[float], float]:
    """One load process: enroll back to back for ``seconds``; (requests, ok, latencies, CPU s).

    Each request is what a separate multi-process load generator does with ``http.client``: a
    new TCP connection and a full TLS 1.2 handshake with the device's client certificate (no
    session resumption: no session is ever offered again), POST the same CSR in one write, read
    the whole response, close. What it does not repeat per request, so that the generator's own
    CPU (it shares the cores with the server) stays small: building the TLS context, the request
    bytes, name resolution and ``http.client``'s objects. Socket timeouts are the kernel's
    (SO_RCVTIMEO/SO_SNDTIMEO), so a blocking call costs no extra poll()."""
    setup, seconds = job
    context = _process_context(setup)
    request = _http_client_request(setup)
    address = (setup.host, setup.port)
    family = socket.AF_INET6 if ":" in setup.host else socket.AF_INET
    timeout = struct.pack("ll", LOAD_SOCKET_TIMEOUT_SECONDS, 0)
    clock = time.perf_counter
    requests = ok = 0
    latencies: list[float] = []
    record = latencies.append
    cpu_before = time.process_time()
    ends = clock() + seconds
    began = clock()
    while began < ends:
        raw = socket.socket(family, socket.SOCK_STREAM)
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as http.client does
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeout)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeout)
            raw.connect(address)
            tls = context.wrap_socket(raw)
            tls.sendall(request)
            ok += _read_response(tls)
            tls.close()
        except (OSError, ValueError):
            pass
        finally:
            raw.close()
        requests += 1
        ended = clock()
        record(ended - began)
        began = ended
    return requests, ok, latencies, time.process_time() - cpu_before


def _drive_processes(
    pool: multiprocessing.pool.Pool, setup: ClientSetup, clients: int, duration: float
) -> Result:
    """``clients`` of the pool's processes run :func:`_process_loop` for ``duration`` s."""
    results = pool.map(_process_loop, [(setup, duration)] * clients, chunksize=1)
    requests = sum(r[0] for r in results)
    ok = sum(r[1] for r in results)
    latencies = [value for r in results for value in r[2]]
    return Result(
        count=ok,
        errors=requests - ok,
        seconds=duration,
        latencies=latencies,
        load_cpu=sum(r[3] for r in results),
    )


def _drive_threads(setup: ClientSetup, clients: int, duration: float) -> Result:
    context = _process_context(setup)
    context.options |= ssl.OP_NO_TICKET
    request = (
        f"POST {setup.path} HTTP/1.1\r\nHost: localhost\r\n".encode()
        + b"Content-Type: application/pkcs10\r\nConnection: close\r\n"
        + f"Content-Length: {len(setup.body)}\r\n\r\n".encode()
        + setup.body
    )
    scenario = Scenario("", setup.host, setup.port, context, request)
    return _drive(_one_enrollment, scenario, clients, duration)


def _server_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants so far (Linux /proc; else 0).

    Why: on a shared machine the rates swing with other load, but the CPU a server spends per
    enrollment moves much less, so it is printed beside them."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in os.listdir(f"/proc/{current}/task"):
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
                pending += [int(child) for child in children]
        except (OSError, IndexError, ValueError):
            continue
    return total


def _extract(revision: str, directory: Path) -> Path:
    """``git archive REV`` unpacked into ``directory``: the baseline's source, nothing installed."""
    repository = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(repository), "archive", "--format=tar", revision],
        capture_output=True,
        check=True,
    ).stdout
    directory.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    return directory


def _init_with(source: Path | None, data_dir: Path, ca_key: str) -> None:
    """``estkit server init DIR`` run by the code under ``source`` (default: this checkout)."""
    subprocess.run(
        [sys.executable, "-m", "estkit.cli.main", "server", "init", str(data_dir),
         "--key-type", ca_key],
        capture_output=True,
        check=True,
        env=_source_env(source),
    )  # fmt: skip


def _client_setup(data_dir: Path, key_type: str, port: int, directory: Path) -> ClientSetup:
    paths = InitResult.for_directory(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = _device(paths, key_type, directory)
    body = encode_csr_body(
        build_csr(generate_private_key(key_type), common_name="bench.example.com")
    )
    return ClientSetup(
        host="127.0.0.1",
        port=port,
        cafile=str(paths.ca_certificates),
        cert=str(cert),
        key=str(key),
        ciphers=KEY_TYPES[key_type],
        body=body,
    )


def side_by_side(
    revision: str,
    *,
    duration: float,
    rounds: int,
    clients: int,
    key_types: Sequence[str],
    load: str,
    ca_key: str,
) -> dict[str, float]:
    """Baseline REV and this checkout, default settings, same load, alternating rounds.

    Returns {key_type: ratio of enrollments/s at ``clients`` clients}."""
    commit = subprocess.run(
        ["git", "-C", str(Path(__file__).resolve().parent.parent), "rev-parse", "--short",
         revision],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    print(
        f"side by side: baseline {revision} ({commit}) vs this checkout; both `estkit server "
        f"serve DIR --port 0` (default settings); {os.cpu_count()} CPUs; load: {load}, "
        f"{clients} clients and 1 client, {rounds} alternating rounds of {duration:g} s\n"
    )
    ratios: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="estkit-side-")))
        baseline_source = _extract(revision, tmp / "baseline")
        _check_imports_from(baseline_source)
        sources: dict[str, Path | None] = {"baseline": baseline_source, "current": None}
        ports: dict[str, int] = {}
        pids: dict[str, int] = {}
        for name, source in sources.items():
            _init_with(source, tmp / name / "data", ca_key)
            port, pid = stack.enter_context(
                _estkit_server(tmp / name / "data", None, source=source, quiet=False)
            )
            ports[name], pids[name] = port, pid
        pool = (
            stack.enter_context(multiprocessing.get_context("fork").Pool(clients))
            if load == "processes"
            else None
        )

        def measure(setup: ClientSetup, count: int) -> Result:
            if pool is not None:
                return _drive_processes(pool, setup, count, duration)
            return _drive_threads(setup, count, duration)

        for key_type in key_types:
            setups = {
                name: _client_setup(tmp / name / "data", key_type, ports[name], tmp / name)
                for name in sources
            }
            for name in sources:  # warm-up: imports, first connections, SQLite pages
                measure(setups[name], 1)
            print(f"{key_type}: TLS 1.2 {KEY_TYPES[key_type]}, client certificate {key_type}")
            many: dict[str, list[Result]] = {name: [] for name in sources}
            single: dict[str, list[Result]] = {name: [] for name in sources}
            cpu: dict[str, list[float]] = {name: [] for name in sources}
            for round_number in range(rounds):
                # Alternate which server goes first, so neither always meets a warmer machine.
                order = list(sources) if round_number % 2 == 0 else list(reversed(sources))
                for name in order:
                    before = _server_cpu_seconds(pids[name])
                    many[name].append(measure(setups[name], clients))
                    spent = _server_cpu_seconds(pids[name]) - before
                    cpu[name].append(1e3 * spent / max(1, many[name][-1].count))
                    label = f"round {round_number + 1} {name:<8} {clients:>2} clients"
                    print(_line(label, many[name][-1]), f" CPU {cpu[name][-1]:.2f} ms/enrollment"
                          + _load_cpu(many[name][-1]))  # fmt: skip
            for name in sources:
                single[name].append(measure(setups[name], 1))
                print(_line(f"{name:<8}  1 client", single[name][-1]))
            rates = {name: [r.rate for r in many[name]] for name in sources}
            totals = {name: sum(rates[name]) for name in sources}
            ratio = totals["current"] / totals["baseline"] if totals["baseline"] else float("inf")
            ratios[key_type] = ratio
            print(f"\n  {key_type} at {clients} clients: baseline "
                  f"{statistics.median(rates['baseline']):.0f}/s, current "
                  f"{statistics.median(rates['current']):.0f}/s (medians of {rounds} rounds); "
                  f"ratio current/baseline {ratio:.2f}x (sum over rounds)")  # fmt: skip
            if all(cpu[name] and cpu[name][0] > 0 for name in sources):
                print(f"  server CPU per enrollment (all its processes, /proc): baseline "
                      f"{statistics.median(cpu['baseline']):.2f} ms, current "
                      f"{statistics.median(cpu['current']):.2f} ms (medians)")  # fmt: skip
            p50 = single["current"][0].percentile(0.5)
            base_p50 = single["baseline"][0].percentile(0.5)
            print(f"  {key_type} 1 client p50: baseline {base_p50:.2f} ms, current {p50:.2f} ms")
            if key_type in TARGET_RATIO:
                print(f"  issue-16 targets: ratio >= {TARGET_RATIO[key_type]}x -> "
                      f"{_verdict(ratio >= TARGET_RATIO[key_type])}", end="")  # fmt: skip
                if key_type == "p256":
                    print(f"; 1-client p50 <= {TARGET_SIDE_BY_SIDE_P50_MS} ms -> "
                          f"{_verdict(p50 <= TARGET_SIDE_BY_SIDE_P50_MS)}", end="")  # fmt: skip
                print("\n")
    return ratios


def _summarise_py_spy(raw: Path, top: int = 20) -> None:
    """Print self and inclusive shares from py-spy's folded stacks ("a;b;c count")."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        total += int(count)
        self_time[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame.split(" (")[0]] += int(count)
    print(f"\nserver CPU samples: {total} (py-spy, all threads)")
    print("self time:")
    for frame, count in self_time.most_common(top):
        print(f"  {100 * count / total:5.1f}%  {frame[:110]}")
    print("inclusive time of the main steps:")
    for name in PROFILE_STEPS:
        print(f"  {100 * inclusive[name] / total:5.1f}%  {name}")


def profile(duration: float, ca_key: str) -> None:
    """Sample one server process with py-spy while 16 clients enroll (P-256)."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        print("--profile needs py-spy (pip install py-spy)")
        return
    with tempfile.TemporaryDirectory(prefix="estkit-prof-") as tmp:
        directory = Path(tmp)
        paths = init_data_dir(directory / "data", key_type=ca_key)
        with _estkit_server(paths.data_dir, 1) as (port, pid):
            scenario = _scenario(paths, "p256", "127.0.0.1", port, directory)
            raw = directory / "profile.raw"
            sampler = subprocess.Popen(
                [py_spy, "record", "--pid", str(pid), "--duration", str(int(duration) + 1),
                 "--rate", "250", "--format", "raw", "--nonblocking", "--output", str(raw)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            result = _drive(_one_enrollment, scenario, 16, duration)
            sampler.wait(timeout=START_TIMEOUT_SECONDS)
        print(_line("profiled server (1 worker), 16 clients", result))
        if raw.exists():
            _summarise_py_spy(raw)
        else:
            print("py-spy wrote no profile (does it have ptrace permission?)")


def _handshake_pair(
    server: ssl.SSLContext, client: ssl.SSLContext
) -> tuple[ssl.SSLObject, ssl.SSLObject, list[tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]]]:
    """A server and a client end over memory BIOs, plus (end, its output, the peer's input)."""
    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    server_end = server.wrap_bio(server_in, server_out, server_side=True)
    client_end = client.wrap_bio(client_in, client_out, server_hostname="localhost")
    ends = [(client_end, client_out, server_in), (server_end, server_out, client_in)]
    return server_end, client_end, ends


def _handshake_cpu(
    server: ssl.SSLContext, client: ssl.SSLContext, count: int
) -> tuple[float, float]:
    """Milliseconds of this thread's CPU per handshake spent by the server end and by the
    client end (what each load connection costs the generator: a floor for its CPU)."""
    spent = [0.0, 0.0]  # client, server: the order of _handshake_pair's ends
    for _ in range(count):
        _server_end, _client_end, ends = _handshake_pair(server, client)
        done = [False, False]
        for _round in range(HANDSHAKE_ROUNDS):
            for index, (end, out, peer_in) in enumerate(ends):
                began = time.thread_time()
                if not done[index]:
                    with contextlib.suppress(ssl.SSLWantReadError):
                        end.do_handshake()
                        done[index] = True
                spent[index] += time.thread_time() - began
                if out.pending:
                    peer_in.write(out.read())
            if all(done):
                break
        else:
            raise RuntimeError("the in-memory handshake did not finish")
    return 1e3 * spent[1] / count, 1e3 * spent[0] / count


def handshake_cpu(count: int, ca_key: str) -> None:
    """Server CPU per full TLS handshake, in one process over memory BIOs (no sockets, no other
    process): the server's own context (``build_server_context``, as ``serve`` builds it) and
    the device's certificate chain, for each key type and TLS version. Steadier than rates on a
    shared machine: it is the handshake part of the server's CPU per enrollment."""
    from estkit.server.tls import CertificatePair, build_server_context

    with tempfile.TemporaryDirectory(prefix="estkit-hs-") as tmp:
        directory = Path(tmp)
        paths = init_data_dir(directory / "data", key_type=ca_key)
        pairs = [
            CertificatePair(*pair)
            for pair in zip(paths.server_certificates, paths.server_keys, strict=True)
        ]
        servers = {"current": build_server_context(pairs).context}
        # The same context as before issue 16's second part: stateless session tickets.
        ticketing = build_server_context(pairs).context
        ticketing.options &= ~ssl.OP_NO_TICKET
        ticketing.num_tickets = TLS13_DEFAULT_TICKETS
        servers["with session tickets"] = ticketing
        print(f"CPU per full handshake (ms, median of 3 alternating runs of {count} "
              "handshakes): the server end with each context; the client end (the load "
              "generator's floor per connection)")  # fmt: skip
        for key_type in KEY_TYPES:
            cert, key = _device(paths, key_type, directory)
            for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
                client = ssl.create_default_context(cafile=str(paths.ca_certificates))
                client.check_hostname = False
                client.load_cert_chain(cert, key)
                client.minimum_version = client.maximum_version = version
                if version is ssl.TLSVersion.TLSv1_2:
                    client.set_ciphers(KEY_TYPES[key_type])
                runs: dict[str, list[float]] = {name: [] for name in servers}
                clients: list[float] = []
                for server in servers.values():
                    _handshake_cpu(server, client, max(1, count // 10))  # warm-up
                for _ in range(3):
                    for name, server in servers.items():
                        server_ms, client_ms = _handshake_cpu(server, client, count)
                        runs[name].append(server_ms)
                        if name == "current":
                            clients.append(client_ms)
                shown = ", ".join(
                    f"{name} {statistics.median(values):.3f}" for name, values in runs.items()
                )
                print(f"  {key_type:<8} {version.name}: {shown}; "
                      f"client end {statistics.median(clients):.3f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument(
        "--workers", type=int, default=None, help="server worker processes (default: server's)"
    )
    parser.add_argument("--ca-key", default="p256", help="CA key type (init default: p256)")
    parser.add_argument("--profile", action="store_true", help="py-spy the server instead")
    parser.add_argument(
        "--handshake-cpu",
        type=int,
        metavar="N",
        help="server CPU per TLS handshake over memory BIOs, N handshakes per run",
    )
    parser.add_argument(
        "--baseline", metavar="REV", help="also run commit REV's server; print the ratio"
    )
    parser.add_argument("--rounds", type=int, default=3, help="--baseline: alternating rounds")
    parser.add_argument("--clients", type=int, default=16, help="--baseline: concurrent clients")
    parser.add_argument(
        "--key-types",
        default="p256,rsa2048",
        help="--baseline: comma-separated client key types (p256, rsa2048)",
    )
    parser.add_argument(
        "--load",
        choices=("processes", "threads"),
        default="processes",
        help="--baseline: one process per client (default) or one thread per client",
    )
    args = parser.parse_args()
    if args.baseline:
        key_types = [k for k in args.key_types.split(",") if k]
        unknown = sorted(set(key_types) - set(KEY_TYPES))
        if unknown:
            parser.error(f"unknown key type(s) {', '.join(unknown)}; use {', '.join(KEY_TYPES)}")
        side_by_side(
            args.baseline,
            duration=args.duration,
            rounds=args.rounds,
            clients=args.clients,
            key_types=key_types,
            load=args.load,
            ca_key=args.ca_key,
        )
    elif args.handshake_cpu:
        handshake_cpu(args.handshake_cpu, args.ca_key)
    elif args.profile:
        profile(args.duration, args.ca_key)
    else:
        run(args.duration, args.workers, args.ca_key)


if __name__ == "__main__":
    main()
