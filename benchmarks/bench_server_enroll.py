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

Run: ``python benchmarks/bench_server_enroll.py [--duration 5] [--workers 2] [--profile]``.
Prints figures; asserts nothing. ``--profile`` samples a one-worker server with py-spy at 16
clients and prints where the server's time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from estkit.ca.manufacturer import ManufacturerCA, issue_device_certificate
from estkit.protocol.csr import build_csr, encode_csr_body
from estkit.protocol.keys import generate_private_key
from estkit.server.datadir import InitResult, init_data_dir

TARGET_ENROLLMENTS_PER_SECOND = 400
TARGET_SINGLE_P50_MS = 5.0
TARGET_FRACTION_OF_HANDSHAKES = 0.5
KEY_TYPES = {"p256": "ECDHE-ECDSA-AES128-GCM-SHA256", "rsa2048": "ECDHE-RSA-AES128-GCM-SHA256"}
SERVER_CERT_SUFFIX = {"p256": "ec", "rsa2048": "rsa"}
START_TIMEOUT_SECONDS = 60
WARMUP_SECONDS = 0.5
RESPONSE_LIMIT_BYTES = 1 << 20
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


@contextlib.contextmanager
def _estkit_server(data_dir: Path, workers: int) -> Iterator[tuple[int, int]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "estkit.cli.main", "server", "serve", str(data_dir), "--port", "0",
         "--workers", str(workers), "--log-level", "error"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, COLUMNS="250"),
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


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def run(duration: float, workers: int, ca_key: str) -> None:
    print(f"estkit server enrollment benchmark: {os.cpu_count()} CPUs, server --workers {workers},")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--ca-key", default="p256", help="CA key type (init default: p256)")
    parser.add_argument("--profile", action="store_true", help="py-spy the server instead")
    args = parser.parse_args()
    if args.profile:
        profile(args.duration, args.ca_key)
    else:
        run(args.duration, args.workers, args.ca_key)


if __name__ == "__main__":
    main()
