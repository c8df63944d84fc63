"""OCSP responder throughput beside `openssl ocsp -port`, and revocation-to-answer delay (issue 17).

What it measures:

* OCSP answers/s and p50/p99 at 16 concurrent clients (threads) against
  - estkit's /ocsp (`estkit server serve DIR --workers N`, HTTPS), POST without a nonce (the RFC
    5019 case: pre-signed answers), (a) keep-alive connections, (b) a new TLS connection per
    request (what `openssl ocsp` as a client does); and with a nonce on keep-alive (signed per
    request, the worst case);
  - `openssl ocsp -port` (plain HTTP, one connection per request: the only mode it has) answering
    for the same CA with the same delegated responder key, from an index of the same
    certificates, with `-multi N` processes (the same process count as our workers).
* the delay from `estkit server revoke` (a separate process, as an operator runs it) to the first
  `revoked` answer from /ocsp, from the moment the command returns (the revocation is committed)
  and from the moment it starts.

Targets: >= 5x openssl's answers/s; revocation visible <= 1 s.
The machine is shared: figures are noisy, run it more than once before believing a ratio.

Run: ``python benchmarks/bench_ocsp.py [--duration 3] [--workers 2] [--certs 50]``.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from estkit.ca.authority import CertificateAuthority
from estkit.ca.ocsp import responder_paths
from estkit.ca.profiles import Profile
from estkit.ca.store import open_store
from estkit.protocol.csr import build_csr
from estkit.protocol.keys import generate_private_key
from estkit.server.datadir import init_data_dir

TARGET_RATIO = 5.0
TARGET_REVOCATION_SECONDS = 1.0
CLIENTS = 16
START_TIMEOUT_SECONDS = 60
WARMUP_SECONDS = 0.5
REVOKED_SHARE = 5  # every 5th certificate is revoked in both responders
REVOCATION_SAMPLES = 5  # revocations timed (each a separate `estkit server revoke` process)
_BANNER = re.compile(r"listening on https://(?:127\.0\.0\.1|localhost):(\d+)")


@dataclass
class Result:
    count: int
    errors: int
    seconds: float
    latencies: list[float]
    answered: int = 0  # including the warm-up: what the server's CPU time was spent on
    server_cpu: float = 0.0  # CPU seconds of the server's processes during the whole run

    @property
    def cpu_per_answer_us(self) -> float:
        return self.server_cpu / self.answered * 1e6 if self.answered else float("nan")

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1e3

    def line(self, name: str) -> str:
        return (
            f"{name:<44} {self.rate:8.0f}/s  p50 {self.percentile(0.5):6.1f} ms  "
            f"p99 {self.percentile(0.99):6.1f} ms  server CPU "
            f"{self.cpu_per_answer_us:4.0f} us/answer  (n={self.count}, errors={self.errors})"
        )


# --- fixtures ---------------------------------------------------------------------------------


def _issue_leaves(data_dir: Path, count: int) -> tuple[list[x509.Certificate], x509.Certificate]:
    authority = CertificateAuthority.load(data_dir / "ca")
    store = open_store(f"sqlite:///{data_dir / 'estkit.db'}")
    leaves = []
    for index in range(count):
        key = generate_private_key("p256")
        csr = build_csr(key, common_name=f"bench-{index}.example")
        leaf = authority.issue(csr, Profile())
        store.record_issued(leaf, operation="simpleenroll", label=None)
        if index % REVOKED_SHARE == REVOKED_SHARE - 1:
            store.revoke(format(leaf.serial_number, "x"), "keyCompromise")
        leaves.append(leaf)
    store.close()
    return leaves, authority.issuer_certificate


def _request(leaf: x509.Certificate, issuer: x509.Certificate, nonce: bool = False) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1())
    if nonce:
        builder = builder.add_extension(x509.OCSPNonce(os.urandom(16)), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def _openssl_index(path: Path, leaves: list[x509.Certificate], data_dir: Path) -> None:
    store = open_store(f"sqlite:///{data_dir / 'estkit.db'}")
    lines = []
    for leaf in leaves:
        record = store.get_issued(format(leaf.serial_number, "x"))
        assert record is not None
        expiry = leaf.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
        serial = format(leaf.serial_number, "X")
        if len(serial) % 2:
            serial = "0" + serial
        subject = "/" + "/".join(leaf.subject.rfc4514_string().split(","))
        if record.status == "revoked" and record.revoked_at is not None:
            when = record.revoked_at.strftime("%y%m%d%H%M%SZ") + ",keyCompromise"
            lines.append(f"R\t{expiry}\t{when}\t{serial}\tunknown\t{subject}")
        else:
            lines.append(f"V\t{expiry}\t\t{serial}\tunknown\t{subject}")
    store.close()
    path.write_text("\n".join(lines) + "\n")


# --- servers ----------------------------------------------------------------------------------


def _start_estkit(data_dir: Path, workers: int, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    command = [sys.executable, "-m", "estkit.cli.main", "server", "serve", str(data_dir)]
    command += ["--host", "127.0.0.1", "--port", "0", "--workers", str(workers)]
    command += ["--log-level", "warning"]
    handle = log.open("wb")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        match = _BANNER.search(log.read_text(errors="replace"))
        if match:
            return process, int(match.group(1))
        if process.poll() is not None:
            raise SystemExit(f"estkit server exited:\n{log.read_text()}")
        time.sleep(0.05)
    process.kill()
    raise SystemExit(f"estkit server printed no banner:\n{log.read_text()}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_openssl(
    index: Path, issuer: Path, responder: tuple[Path, Path], workers: int, log: Path
) -> tuple[subprocess.Popen[bytes], int]:
    # OpenSSL 3.0's responder takes a bare port and listens on every interface (it cannot be told
    # to bind to loopback); it runs only for the duration of the measurement.
    port = _free_port()
    command = [
        shutil.which("openssl") or "openssl",
        "ocsp",
        "-port",
        str(port),
        "-index",
        str(index),
        "-CA",
        str(issuer),
        "-rsigner",
        str(responder[0]),
        "-rkey",
        str(responder[1]),
        "-nmin",
        "60",
        "-ignore_err",
    ]
    if workers > 1:
        command += ["-multi", str(workers)]
    # With -multi, openssl puts itself in a process group of its own (setpgid fails, and it
    # exits, if it is already a session leader): stop it with killpg.
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        # No probe connection: the single-threaded responder would wait on it. With -multi the
        # first process may leave its children serving; they stay in its session (killpg).
        if "ACCEPT" in log.read_text(errors="replace"):
            time.sleep(0.5)
            return process, port
        if process.poll() is not None:
            raise SystemExit(f"openssl ocsp exited:\n{log.read_text()}")
        time.sleep(0.05)
    raise SystemExit("openssl ocsp did not start listening")


def _stop(process: subprocess.Popen[bytes], group: bool = False) -> None:
    if process.poll() is None:
        if group:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def _process_tree_cpu(root: int) -> float:
    """CPU seconds (user + system) used so far by ``root`` and every descendant (via /proc):
    a capacity figure that the shared machine's noise and the load generator do not distort."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return sum(times.get(pid, 0.0) for pid in tree)


# --- load -------------------------------------------------------------------------------------

Connect = Callable[[], http.client.HTTPConnection]


def _answer_ok(body: bytes) -> bool:
    try:
        return (
            ocsp.load_der_ocsp_response(body).response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        )
    except ValueError:
        return False


def _load(
    connect: Connect,
    requests: list[bytes],
    duration: float,
    keep_alive: bool,
    server_pid: int,
    nonce_from: Callable[[], bytes] | None = None,
) -> Result:
    cpu_before = _process_tree_cpu(server_pid)
    stop_at = time.monotonic() + WARMUP_SECONDS + duration
    measure_from = time.monotonic() + WARMUP_SECONDS
    lock = threading.Lock()
    total = Result(0, 0, duration, [])

    def worker(offset: int) -> None:
        conn = connect() if keep_alive else None
        position = offset
        latencies, count, errors, answered = [], 0, 0, 0
        while True:
            now = time.monotonic()
            if now >= stop_at:
                break
            body = nonce_from() if nonce_from else requests[position % len(requests)]
            position += 1
            started = time.monotonic()
            ok = False
            try:
                one = connect() if conn is None else conn
                headers = {"Content-Type": "application/ocsp-request"}
                if conn is None:
                    headers["Connection"] = "close"
                one.request("POST", "/ocsp", body=body, headers=headers)
                reply = one.getresponse()
                ok = reply.status == 200 and _answer_ok(reply.read())
                if conn is None:
                    one.close()
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                    conn = connect()
            answered += ok
            if started >= measure_from:
                if ok:
                    count += 1
                    latencies.append(time.monotonic() - started)
                else:
                    errors += 1
        with lock:
            total.count += count
            total.errors += errors
            total.latencies.extend(latencies)
            total.answered += answered

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total.server_cpu = _process_tree_cpu(server_pid) - cpu_before
    return total


def _revocation_delay(
    data_dir: Path, connect: Connect, leaf: x509.Certificate, issuer: x509.Certificate
) -> tuple[float, float]:
    request = _request(leaf, issuer)
    conn = connect()

    def status() -> ocsp.OCSPCertStatus:
        conn.request(
            "POST", "/ocsp", body=request, headers={"Content-Type": "application/ocsp-request"}
        )
        return ocsp.load_der_ocsp_response(conn.getresponse().read()).certificate_status

    assert status() is ocsp.OCSPCertStatus.GOOD
    started = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "estkit.cli.main",
            "server",
            "revoke",
            str(data_dir),
            format(leaf.serial_number, "x"),
        ],
        check=True,
        capture_output=True,
    )
    committed = time.monotonic()
    while status() is not ocsp.OCSPCertStatus.REVOKED:
        if time.monotonic() - committed > 30:
            raise SystemExit("the revocation never reached /ocsp")
        time.sleep(0.005)
    seen = time.monotonic()
    conn.close()
    return seen - committed, seen - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per scenario")
    parser.add_argument("--workers", type=int, default=2, help="server processes (both sides)")
    parser.add_argument("--certs", type=int, default=50, help="certificates asked about")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-ocsp-") as tmp:
        work = Path(tmp)
        paths = init_data_dir(work / "server")
        data_dir = paths.data_dir
        leaves, issuer = _issue_leaves(data_dir, args.certs + 1)
        probe, target = leaves[:-1], leaves[-1]
        issuer_path = work / "issuer.pem"
        issuer_path.write_bytes(issuer.public_bytes(serialization.Encoding.PEM))
        requests = [_request(leaf, issuer) for leaf in probe]

        estkit, port = _start_estkit(data_dir, args.workers, work / "estkit.log")
        try:
            context = ssl.create_default_context(cafile=str(paths.ca_certificates))

            def https() -> http.client.HTTPConnection:
                return http.client.HTTPSConnection("localhost", port, context=context, timeout=30)

            print(
                f"OCSP answers at {CLIENTS} clients, {args.certs} certificates, estkit "
                f"--workers {args.workers}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
            )
            ours_keep = _load(https, requests, args.duration, True, estkit.pid)
            print(ours_keep.line("estkit /ocsp (HTTPS keep-alive, pre-signed)"))
            ours_new = _load(https, requests, args.duration, False, estkit.pid)
            print(ours_new.line("estkit /ocsp (new TLS connection each)"))
            ours_nonce = _load(
                https,
                requests,
                args.duration,
                True,
                estkit.pid,
                nonce_from=lambda: _request(probe[0], issuer, nonce=True),
            )
            print(ours_nonce.line("estkit /ocsp (keep-alive, nonce: signed each)"))

            # The responder certificate our server created: openssl signs with the same key.
            responder = responder_paths(data_dir / "ca", "g1")
            index = work / "index.txt"
            _openssl_index(index, probe, data_dir)
            for processes in sorted({1, args.workers}):
                openssl, openssl_port = _start_openssl(
                    index, issuer_path, responder, processes, work / f"openssl-{processes}.log"
                )
                try:

                    def plain(port: int = openssl_port) -> http.client.HTTPConnection:
                        return http.client.HTTPConnection("127.0.0.1", port, timeout=30)

                    theirs = _load(plain, requests, args.duration, False, openssl.pid)
                    if theirs.errors and not theirs.count:  # say why rather than print 0/s
                        print((work / f"openssl-{processes}.log").read_text()[-2000:])
                finally:
                    _stop(openssl, group=processes > 1)
                name = "openssl ocsp -port" + (f" -multi {processes}" if processes > 1 else "")
                print(theirs.line(f"{name} (HTTP, signs each)"))
                if theirs.rate:
                    ratio = ours_keep.rate / theirs.rate
                    verdict = "meets" if ratio >= TARGET_RATIO else "misses"
                    capacity = theirs.cpu_per_answer_us / ours_keep.cpu_per_answer_us
                    print(
                        f"  estkit keep-alive / {name}: {ratio:.1f}x answers/s ({verdict} the "
                        f"{TARGET_RATIO:.0f}x target), {capacity:.1f}x answers per server "
                        f"CPU-second; new TLS connection each: {ours_new.rate / theirs.rate:.1f}x"
                    )

            delays = [
                _revocation_delay(data_dir, https, leaf, issuer)
                for leaf in [target, *probe[: REVOCATION_SAMPLES - 1]]
            ]
            after_commit = sorted(delay[0] for delay in delays)
            after_start = sorted(delay[1] for delay in delays)
            worst = after_commit[-1]
            verdict = "meets" if worst <= TARGET_REVOCATION_SECONDS else "misses"
            print(
                f"revocation to 'revoked' answer ({len(delays)} revocations): after `server "
                f"revoke` returned median {after_commit[len(delays) // 2] * 1e3:.0f} ms, max "
                f"{worst * 1e3:.0f} ms; after it started median "
                f"{after_start[len(delays) // 2] * 1e3:.0f} ms, max {after_start[-1] * 1e3:.0f} "
                f"ms ({verdict} the {TARGET_REVOCATION_SECONDS:.0f} s target)"
            )
        finally:
            _stop(estkit)


if __name__ == "__main__":
    main()
