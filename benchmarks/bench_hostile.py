"""A legitimate device under hostile load (issue 14 benchmark).

Starts `estkit server serve DIR --admin-port N` with ``ulimit -n 1024`` (soft and hard: the common
default) and runs each attack of issue 14 for ``--duration`` seconds while one legitimate device
enrolls back to back (a fresh TLS connection per enrollment, client certificate from the trusted
demo manufacturer, ``Connection: close``). Prints the device's success rate and p50/p99 during each
attack beside the same without attack, what the attack achieved, and how many bytes the server's
log grew.

Attacks:

* ``console-idle``: ``--connections`` idle TCP connections to the console port (held; reopened
  when the server closes them).
* ``slow-body``: ``--connections`` TLS connections with a valid device certificate that send POST
  headers announcing a 4,000-byte body, then 1 byte every 2 s (reopened when closed).
* ``untrusted``: ``--requesters`` requests from as many fresh certificates of an unknown CA to a
  label with ``approval = "untrusted"``.
* ``refused-flood``: 4 threads sending requests the server refuses (404), back to back.
* ``tls-old``: 4 threads offering TLS 1.1, or TLS 1.2 with a cipher outside BCP-003-01.
* ``refused-flood-device-ip``, ``tls-old-device-ip``: the same floods from the device's own
  address, 127.0.0.1 (the setting of issue 14's first measurements). The host's loopback address
  is exempt from the per-address failure throttle, so these rows show what the server holds with
  no throttle at all.
* ``refused-flood-shared-nat``, ``tls-old-shared-nat``: device and attacker behind one address
  that is not exempt (``SHARED_ADDRESS``, as behind one NAT). Printed for information, with no
  verdict: a per-address throttle cannot tell two parties at one address apart, and the device
  is backed off with the attacker (docs/security.md, "Floods from one address").

The attacker runs in a process of its own (a device and an attacker are different machines:
attack threads in the device's process would make the device wait for Python's GIL, which is
the load generator's cost, not the server's). The device connects from 127.0.0.1; each attack
from an address of its own, counting up from ``--attacker-address`` (default 127.0.0.2: loopback
on Linux), so one attack's backoff does not spill into the next, except in the ``-device-ip``
and ``-shared-nat`` rows above. Each row also gives the
server's CPU time in the phase (all processes) and, for the floods, the server CPU per attack
request beyond the device's share.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import multiprocessing
import multiprocessing.synchronize
import os
import re
import resource
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from estkit.ca.manufacturer import create_manufacturer_ca, issue_device_certificate
from estkit.ca.store import open_store
from estkit.protocol.csr import build_csr, encode_csr_body
from estkit.protocol.keys import generate_private_key
from estkit.server import limits as server_limits
from estkit.server.config import add_label, set_limits
from estkit.server.datadir import InitResult, init_data_dir

# The server's descriptor limit: the common default the issue measured with.
SERVER_NOFILE = 1024
START_TIMEOUT_SECONDS = 60
# Starts tried when the console port picked as free was taken by someone else meanwhile.
START_ATTEMPTS = 3
# A legitimate enrollment that takes longer than this counts as failed.
LEGIT_TIMEOUT_SECONDS = 20.0
# Pause between the device's enrollments (it is a device, not a load generator).
LEGIT_PAUSE_SECONDS = 0.05
SLOW_BODY_BYTES = 4000
TRICKLE_INTERVAL_SECONDS = 2.0
FLOOD_THREADS = 4
# Seconds between attacks for the server to shed the last one's connections.
SETTLE_SECONDS = 3.0
TARGET_P50_FACTOR = 2.0
ATTACKS = (
    "console-idle",
    "slow-body",
    "untrusted",
    "refused-flood",
    "tls-old",
    "refused-flood-device-ip",
    "tls-old-device-ip",
    "refused-flood-shared-nat",
    "tls-old-shared-nat",
)
# Rows whose attacker uses the device's own address, 127.0.0.1 (exempt from the throttle).
DEVICE_IP_SUFFIX = "-device-ip"
# Rows where device and attacker share SHARED_ADDRESS (throttled together: no verdict).
SHARED_SUFFIX = "-shared-nat"
SHARED_ADDRESS = "127.0.0.99"
# Seconds the benchmark waits for the attack process to stop and report its counts.
ATTACK_STOP_SECONDS = 60.0
_BANNER = re.compile(r"listening on https://(?:127\.0\.0\.1|localhost):(\d+)")
_HOST = "127.0.0.1"


@dataclass
class Server:
    paths: InitResult
    port: int
    admin_port: int
    log: Path
    device: ssl.SSLContext
    rogue_dir: Path
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU of the server and its worker processes."""
        return sum(_process_cpu(pid) for pid in (self.pid, *_children(self.pid)))


def _process_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except OSError:
        return []


@dataclass
class Measured:
    ok: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)

    def percentile(self, fraction: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1e3

    @property
    def success(self) -> float:
        total = self.ok + self.failed
        return 100.0 * self.ok / total if total else float("nan")


# --- set-up -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((_HOST, 0))
        return int(probe.getsockname()[1])


def _limit_server() -> None:  # runs in the child before exec: `ulimit -n 1024`
    resource.setrlimit(resource.RLIMIT_NOFILE, (SERVER_NOFILE, SERVER_NOFILE))


@contextlib.contextmanager
def _server(directory: Path, limits: dict[str, float] | None = None) -> Iterator[Server]:
    paths = init_data_dir(directory / "srv", key_type="p256")
    add_label(paths.config, "untrusted", approval="untrusted", retry_after_seconds=1)
    if limits:
        set_limits(paths.config, **limits)
    log = directory / "serve.log"
    for _ in range(START_ATTEMPTS):
        admin_port = _free_port()
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "estkit.cli.main", "server", "serve", str(paths.data_dir),
                 "--port", "0", "--admin-port", str(admin_port)],
                stdout=out, stderr=subprocess.STDOUT, preexec_fn=_limit_server,
                env=dict(os.environ, COLUMNS="250", PYTHONUNBUFFERED="1"),
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        port = None
        while port is None and time.monotonic() < deadline and process.poll() is None:
            match = _BANNER.search(log.read_text(errors="replace"))
            port = int(match.group(1)) if match else None
            time.sleep(0.05)
        if port is not None or "Address already in use" not in log.read_text(errors="replace"):
            break
        process.wait(timeout=30)  # the free console port was taken meanwhile: another one
    try:
        if port is None:
            raise RuntimeError(f"the estkit server did not start:\n{log.read_text()[-2000:]}")
        device = ssl.create_default_context(cafile=str(paths.ca_certificates))
        device.load_cert_chain(str(paths.device_certificate), str(paths.device_key))
        rogue_dir = directory / "rogue"
        yield Server(paths, port, admin_port, log, device, rogue_dir, process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _enroll_request(common_name: str = "bench.example.com") -> bytes:
    body = encode_csr_body(build_csr(generate_private_key("p256"), common_name=common_name))
    return (
        b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/pkcs10\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def _connect(
    port: int, source: str = _HOST, timeout: float = LEGIT_TIMEOUT_SECONDS
) -> socket.socket:
    return socket.create_connection((_HOST, port), timeout=timeout, source_address=(source, 0))


def _exchange(port: int, context: ssl.SSLContext, raw_request: bytes, source: str = _HOST) -> bytes:
    """One request on a fresh TLS connection from ``source``; the status line (or b"")."""
    with (
        _connect(port, source) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(raw_request)
        received = b""
        while b"\r\n" not in received:
            chunk = tls.recv(65536)
            if not chunk:
                break
            received += chunk
        while tls.recv(65536):
            pass
    return received.split(b"\r\n", 1)[0]


# --- the legitimate device --------------------------------------------------------------------


def _measure(server: Server, duration: float, source: str = _HOST) -> Measured:
    request = _enroll_request()
    result = Measured()
    stop_at = time.monotonic() + duration
    while time.monotonic() < stop_at:
        began = time.perf_counter()
        try:
            ok = _exchange(server.port, server.device, request, source).startswith(b"HTTP/1.1 200")
        except OSError:
            ok = False
        if ok:
            result.ok += 1
            result.latencies.append(time.perf_counter() - began)
        else:
            result.failed += 1
        time.sleep(LEGIT_PAUSE_SECONDS)
    return result


# --- attacks ----------------------------------------------------------------------------------


class Attack:
    """Runs in background threads of a child process between ``start`` and ``stop``;
    ``summary`` says what it got."""

    def __init__(self, server: Server, options: argparse.Namespace, source: str) -> None:
        self.server = server
        self.options = options
        self.source = source  # the attacker's source address
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()

    def requests(self) -> int:
        """Attack requests or handshakes the server saw (for CPU per attack request)."""
        return 0

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def spawn(self, target: Callable[[], None], n: int = 1) -> None:
        for _ in range(n):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self.threads.append(thread)

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def summary(self) -> str:
        return ", ".join(f"{key} {value}" for key, value in sorted(self.counts.items()))


class HeldConnections(Attack):
    """Keeps ``--connections`` connections open, reopening those the server closes."""

    def open_one(self) -> socket.socket:
        raise NotImplementedError

    def tick(self, sock: socket.socket) -> None:
        """Called every TRICKLE_INTERVAL_SECONDS per held connection."""

    def start(self) -> None:
        self.spawn(self.hold)

    def hold(self) -> None:
        held: list[socket.socket] = []
        next_tick = time.monotonic() + TRICKLE_INTERVAL_SECONDS
        try:
            while not self.stopping.is_set():
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + TRICKLE_INTERVAL_SECONDS
                    alive = []
                    for sock in held:
                        try:
                            self.tick(sock)
                            alive.append(sock)
                        except OSError:
                            self.count("closed by server")
                            sock.close()
                    held = alive
                elif len(held) < self.options.connections:
                    try:
                        held.append(self.open_one())
                        self.count("opened")
                    except OSError:
                        self.count("open failed")
                        time.sleep(0.01)
                else:
                    time.sleep(0.01)
        finally:
            for sock in held:
                sock.close()


class ConsoleIdle(HeldConnections):
    def open_one(self) -> socket.socket:
        return _connect(self.server.admin_port, self.source, timeout=5)

    def tick(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        try:
            if sock.recv(1) == b"":
                raise ConnectionResetError("closed")
        except BlockingIOError:
            pass


class SlowBody(HeldConnections):
    head = (
        b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/pkcs10\r\n"
        + f"Content-Length: {SLOW_BODY_BYTES}\r\n\r\n".encode()
    )

    def open_one(self) -> socket.socket:
        raw = _connect(self.server.port, self.source, timeout=5)
        try:
            tls = self.server.device.wrap_socket(raw, server_hostname="localhost")
            tls.sendall(self.head)
        except BaseException:
            raw.close()
            raise
        return tls

    def tick(self, sock: socket.socket) -> None:
        sock.settimeout(0.001)
        try:
            if sock.recv(1) == b"":  # an answer (408) or a close: reopen
                raise ConnectionResetError("closed")
            raise ConnectionResetError("answered")
        except (TimeoutError, ssl.SSLWantReadError):
            pass
        sock.settimeout(5)
        sock.sendall(b"M")


class Untrusted(Attack):
    def start(self) -> None:
        rogue_ca = create_manufacturer_ca(self.server.rogue_dir, common_name="Unknown Vendor CA")
        self.contexts = []
        for i in range(self.options.requesters):
            credential = issue_device_certificate(rogue_ca, device_serial=f"R-{i}")
            cert, key = self.server.rogue_dir / f"{i}.pem", self.server.rogue_dir / f"{i}.key"
            credential.write(cert, key)
            context = ssl.create_default_context(cafile=str(self.server.paths.ca_certificates))
            context.load_cert_chain(str(cert), str(key))
            self.contexts.append(context)
        self.request = _enroll_request("rogue.example.com").replace(
            b"/simpleenroll", b"/untrusted/simpleenroll"
        )
        self.spawn(self.run)

    def run(self) -> None:
        for context in self.contexts:
            if self.stopping.is_set():
                return
            try:
                status = _exchange(self.server.port, context, self.request, self.source)
                self.count(status.decode(errors="replace")[9:12] or "no answer")
            except OSError:
                self.count("error")

    def summary(self) -> str:
        with open_store(self.server.paths.database_url) as store:
            pending = len(store.list_requests("pending"))
        return f"{super().summary()}; pending rows {pending}"


class RefusedFlood(Attack):
    request = (
        b"GET /.well-known/est/nosuchop HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )

    def start(self) -> None:
        self.spawn(self.run, FLOOD_THREADS)

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                status = _exchange(self.server.port, self.server.device, self.request, self.source)
                self.count(status.decode(errors="replace")[9:12] or "no answer")
            except OSError:
                self.count("error")

    def requests(self) -> int:
        return sum(self.counts.values())


class TlsOld(Attack):
    def start(self) -> None:
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
        old.set_ciphers("DEFAULT@SECLEVEL=0")
        with warnings.catch_warnings():  # deprecated: that is the point of this attack
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        weak = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        weak.check_hostname, weak.verify_mode = False, ssl.CERT_NONE
        weak.maximum_version = ssl.TLSVersion.TLSv1_2
        weak.set_ciphers("AES128-SHA")
        self.contexts = {"tls1.1": old, "bad cipher": weak}
        self.spawn(self.run, FLOOD_THREADS)

    def run(self) -> None:
        while not self.stopping.is_set():
            for name, context in self.contexts.items():
                try:
                    with _connect(self.server.port, self.source, timeout=5) as raw:
                        context.wrap_socket(raw, server_hostname="localhost").close()
                    self.count(f"{name} accepted(!)")
                except ssl.SSLError as exc:
                    alert = "alert" in str(exc).lower()
                    self.count(f"{name} {'alert' if alert else 'no alert'}")
                except OSError:
                    self.count(f"{name} closed without alert")

    def requests(self) -> int:
        return sum(self.counts.values())


ATTACK_CLASSES: dict[str, type[Attack]] = {
    "console-idle": ConsoleIdle,
    "slow-body": SlowBody,
    "untrusted": Untrusted,
    "refused-flood": RefusedFlood,
    "tls-old": TlsOld,
}


_Results = multiprocessing.Queue  # of (counts, attack requests, attacker CPU seconds)


def _attack_process(
    attack: Attack,
    started: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
    results: _Results[tuple[dict[str, int], int, float]],
) -> None:
    """The attacker's process: start the attack, run until told to stop, report the counts."""
    attack.start()
    started.set()
    stop.wait()
    attack.stop()
    cpu = time.process_time()
    results.put((attack.counts, attack.requests(), cpu))


class AttackProcess:
    """Runs an :class:`Attack` in a forked process (see the module docstring)."""

    def __init__(self, attack: Attack) -> None:
        self.attack = attack
        context = multiprocessing.get_context("fork")
        self._started, self._stop = context.Event(), context.Event()
        self._results: _Results[tuple[dict[str, int], int, float]] = context.Queue()
        self._process = context.Process(
            target=_attack_process, args=(attack, self._started, self._stop, self._results)
        )
        self.requests = 0
        self.cpu = 0.0  # the attacker process's CPU seconds (it shares the machine)

    def start(self) -> None:
        self._process.start()
        self._started.wait(ATTACK_STOP_SECONDS + 600)  # untrusted issues its certificates first

    def stop(self) -> None:
        self._stop.set()
        try:
            self.attack.counts, self.requests, self.cpu = self._results.get(
                timeout=ATTACK_STOP_SECONDS
            )
        finally:
            self._process.join(timeout=ATTACK_STOP_SECONDS)
            if self._process.is_alive():
                self._process.kill()


# --- report -----------------------------------------------------------------------------------


def _row(
    name: str,
    result: Measured,
    baseline: Measured | None,
    log_bytes: int,
    cpu: float,
    judged: bool = True,
) -> str:
    p50 = result.percentile(0.5)
    ratio = f"{p50 / baseline.percentile(0.5):4.1f}x" if baseline else "  -  "
    verdict = "" if judged else "info (shared address: throttled with the attacker)"
    if baseline is not None and judged:
        good = result.success == 100.0 and p50 <= TARGET_P50_FACTOR * baseline.percentile(0.5)
        verdict = "ok" if good else "MISSED"
    return (
        f"{name:<25} {result.success:6.1f}% (n={result.ok + result.failed}, "
        f"failed={result.failed})  p50 {p50:7.1f} ms  p99 {result.percentile(0.99):7.1f} ms  "
        f"{ratio}  log +{log_bytes} B  server CPU {cpu:5.2f} s  {verdict}"
    )


def run(options: argparse.Namespace) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, options.connections + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < options.connections + 64:
        print(f"note: this process may open {wanted} files; --connections reduced")
        options.connections = max(16, wanted - 64)
    chosen = [name for name in options.attacks.split(",") if name]
    unknown = sorted(set(chosen) - set(ATTACKS))
    if unknown:
        raise SystemExit(f"unknown attack(s) {', '.join(unknown)}; known: {', '.join(ATTACKS)}")
    limits = {}
    for item in options.limit:
        key, _, value = item.partition("=")
        limits[key] = float(value)
    with (
        tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp,
        _server(Path(tmp), limits) as server,
    ):
        print(
            f"server: ulimit -n {SERVER_NOFILE}, EST port {server.port}, console port "
            f"{server.admin_port}; {options.duration:g} s per phase; noisy on a shared machine"
        )
        _measure(server, 0.5)  # warm-up
        size, cpu = server.log.stat().st_size, server.cpu_seconds()
        baseline = _measure(server, options.duration)
        quiet_cpu = server.cpu_seconds() - cpu
        print(_row("quiet", baseline, None, server.log.stat().st_size - size, quiet_cpu))
        per_enrollment = quiet_cpu / max(1, baseline.ok + baseline.failed)
        for index, name in enumerate(chosen):
            base = name.removesuffix(SHARED_SUFFIX).removesuffix(DEVICE_IP_SUFFIX)
            shared = name.endswith(SHARED_SUFFIX)
            own = str(ipaddress.ip_address(options.attacker_address) + index)
            device = SHARED_ADDRESS if shared else _HOST
            source = device if base != name else own
            attack = AttackProcess(ATTACK_CLASSES[base](server, options, source))
            attack.start()
            size, cpu = server.log.stat().st_size, server.cpu_seconds()
            time.sleep(min(2.0, options.duration / 2))  # let it build up
            result = _measure(server, options.duration, device)
            attack.stop()
            spent = server.cpu_seconds() - cpu
            log_bytes = server.log.stat().st_size - size
            print(_row(name, result, baseline, log_bytes, spent, judged=not shared))
            extra = ""
            if attack.requests:
                device = per_enrollment * (result.ok + result.failed)
                per_request = (spent - device) / attack.requests * 1e6
                extra = f"; ~{per_request:.0f} us server CPU per attack request"
            print(
                f"{'':<25} attack from {source} (its CPU {attack.cpu:.1f} s): "
                f"{attack.attack.summary()}{extra}"
            )
            # After a same-address flood the shared address is still backed off: wait it out.
            # (getattr: the benchmark also runs against older servers for A/B figures)
            default = getattr(server_limits, "FAILURE_BACKOFF_SECONDS", 0.0)
            backoff = limits.get("failure_backoff", default)
            time.sleep(SETTLE_SECONDS + (backoff if shared and name != chosen[-1] else 0.0))
        log = server.log.read_text(errors="replace")
        print(f"server log: {len(log)} bytes, tracebacks: {log.count('Traceback')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--connections", type=int, default=1100, help="held connections")
    parser.add_argument("--requesters", type=int, default=300, help="untrusted requesters")
    parser.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated subset")
    parser.add_argument(
        "--attacker-address",
        default="127.0.0.2",
        help="source address of the first attack, counted up for the next ones (the device "
        "uses 127.0.0.1)",
    )
    parser.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a [limits] value of the server (A/B runs: failures_per_second=1000000 turns the "
        "per-address throttle off)",
    )
    run(parser.parse_args())


if __name__ == "__main__":
    main()
