"""OCSP responder throughput beside `openssl ocsp -port`, and revocation-to-answer delay (issue 17).

What it measures, for a CA of each ``--ca-key-types`` (default: the project's default P-256, and
RSA-2048), in ``--rounds`` alternating rounds (A, B, ... then ..., B, A: a shared machine's load
drifts, so each scenario sees the same conditions on average):

* OCSP answers/s, p50/p99 and the server's CPU per answer (user + system of all its processes,
  from /proc: the figure the machine's other load distorts least) at 16 concurrent clients, for
  - estkit's /ocsp (`estkit server serve DIR --workers N`, HTTPS), POST without a nonce (RFC 5019:
    pre-signed answers), (a) on keep-alive connections, (b) a new TLS connection per request (what
    `openssl ocsp` as a client does, and the only method openssl's responder allows); and with a
    nonce on keep-alive (signed per request, the worst case);
  - estkit's plain-HTTP revocation listener (`serve --revocation-port`, a second server on the
    same data directory, so each row's server CPU is its own), keep-alive and a new connection
    per request, pre-signed;
  - `openssl ocsp -port` (plain HTTP, one connection per request) answering for the same CA from
    an index of the same certificates, with ``-multi N`` processes (the count of our workers),
    signing every answer afresh with the same delegated P-256 responder key as ours, and (with
    a non-P-256 CA) with the CA's own key, as a plain openssl setup does.
* the delay from `estkit server revoke` (a separate process, as an operator runs it) to the first
  `revoked` answer from /ocsp, from the moment the command returns and from the moment it starts.

The 16 clients are spread over ``--load-processes`` processes, requests are pre-made bytes on
raw sockets, and the generator's own CPU per answer is printed. On a 2-core machine the server
and the generator share the cores: a row whose server CPU plus load CPU per answer, times its
answers/s, is about 2 s per second is capped by the machine, and the generator's share of it is
the load CPU column (the plain-HTTP keep-alive row: about 15 µs server, 12 µs generator). There,
"answers per server CPU-second" is the server's own figure.

Targets: >= 5x openssl's answers/s; revocation visible <= 1 s. Figures on a shared machine are
noisy: compare CPU per answer, and the per-round ratios.

``--baseline REV``: instead, this checkout's /ocsp beside commit REV's (keep-alive, pre-signed),
for a change on the server's /ocsp path: the server CPU per answer of each, in alternating rounds.

Run: ``python benchmarks/bench_ocsp.py [--duration 2] [--rounds 3] [--workers 2] [--certs 50]``.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import multiprocessing.pool
import os
import re
import selectors
import shutil
import signal
import socket
import ssl
import statistics
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
# The load processes start together this long after being handed their job.
START_DELAY_SECONDS = 0.3
# Seconds a load process still reads the answers out at the end of a run before it closes.
DRAIN_SECONDS = 5.0
# Every n-th answer is parsed and its status checked (parsing all would load the generator).
VERIFY_EVERY = 16
# Distinct nonce requests cycled in the nonce scenario (each answer is signed anyway).
NONCE_REQUESTS = 2000
REVOKED_SHARE = 5  # every 5th certificate is revoked in both responders
REVOCATION_SAMPLES = 5  # revocations timed (each a separate `estkit server revoke` process)
_BANNER = re.compile(r"listening on https://(?:127\.0\.0\.1|localhost):(\d+)")
_REVOCATION_BANNER = re.compile(r"OCSP, CRL \(http\): http://127\.0\.0\.1:(\d+)")


@dataclass
class Result:
    count: int
    errors: int
    seconds: float
    latencies: list[float]
    answered: int = 0  # including the warm-up: what the server's CPU time was spent on
    server_cpu: float = 0.0  # CPU seconds of the server's processes during the whole run
    load_cpu: float = 0.0  # CPU seconds of the load processes during the whole run

    @property
    def cpu_per_answer_us(self) -> float:
        return self.server_cpu / self.answered * 1e6 if self.answered else float("nan")

    @property
    def load_cpu_per_answer_us(self) -> float:
        return self.load_cpu / self.answered * 1e6 if self.answered else float("nan")

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
            f"{name:<46} {self.rate:7.0f}/s  p50 {self.percentile(0.5):5.1f} ms  "
            f"p99 {self.percentile(0.99):6.1f} ms  server CPU {self.cpu_per_answer_us:4.0f} "
            f"us/answer  load CPU {self.load_cpu_per_answer_us:4.0f} us/answer  "
            f"(n={self.count}, errors={self.errors})"
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


def _start_estkit(
    data_dir: Path,
    workers: int,
    log: Path,
    env: dict[str, str] | None = None,
    revocation: bool = False,
) -> tuple[subprocess.Popen[bytes], int]:
    """The server and its HTTPS port; with ``revocation`` also its plain-HTTP revocation
    listener, whose port is then returned instead."""
    command = [sys.executable, "-m", "estkit.cli.main", "server", "serve", str(data_dir)]
    command += ["--host", "127.0.0.1", "--port", "0", "--workers", str(workers)]
    command += ["--log-level", "warning"]
    if revocation:
        command += ["--revocation-port", "0"]
    handle = log.open("wb")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        match = (_REVOCATION_BANNER if revocation else _BANNER).search(text)
        if match and _BANNER.search(text):
            return process, int(match.group(1))
        if process.poll() is not None:
            raise SystemExit(f"estkit server exited:\n{log.read_text()}")
        time.sleep(0.05)
    process.kill()
    raise SystemExit(f"estkit server printed no banner:\n{log.read_text()}")


def _free_port() -> int:
    """A port free the way openssl binds it: on every interface, IPv6 dual-stack, without
    SO_REUSEADDR (a port a load run left in TIME_WAIT is not free for it)."""
    family, address = (socket.AF_INET6, "::") if socket.has_ipv6 else (socket.AF_INET, "")
    with socket.socket(family) as sock:
        sock.bind((address, 0))
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
#
# Why processes and raw sockets: 16 client threads in one Python process (http.client, parsing
# every answer) measured ~1800 answers/s against both servers: the generator's GIL was the cap,
# not the servers. Here the 16 clients are spread over --load-processes processes, each request
# is pre-made bytes sent on a raw socket, and only every VERIFY_EVERY-th answer is parsed (its
# status checked against the store's). The generator's own CPU per answer is printed, so a reader
# can see how much of the machine it took.
#
# Plain-HTTP loads (openssl's rows and estkit's http rows alike) run each process's clients on one
# epoll loop (selectors) instead of a thread each: the generator shares the 2 cores with the
# server, and threads handing the GIL to each other cost it about 12 us per keep-alive answer
# against about 6 us on one loop, CPU the server under test then did not get. The TLS rows keep
# a thread per client (a non-blocking TLS handshake by hand is not worth it for those rows).


@dataclass(frozen=True)
class Load:
    """What every load process needs (picklable: it crosses into the worker processes)."""

    host: str
    port: int
    cafile: str | None  # None: plain HTTP
    keep_alive: bool
    requests: tuple[bytes, ...]  # complete HTTP requests, pre-made
    expected: tuple[ocsp.OCSPCertStatus, ...]  # the status each request must get


def _http_requests(bodies: list[bytes], keep_alive: bool) -> tuple[bytes, ...]:
    connection = b"keep-alive" if keep_alive else b"close"
    return tuple(
        b"POST /ocsp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/ocsp-request\r\n"
        + b"Connection: " + connection + b"\r\nContent-Length: " + str(len(body)).encode()
        + b"\r\n\r\n" + body
        for body in bodies
    )  # fmt: skip


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


def _content_length(head: bytes) -> int | None:
    match = _CONTENT_LENGTH.search(head)
    return int(match[1]) if match else None


def _exchange(sock: socket.socket, request: bytes) -> tuple[bool, bytes]:
    """Send one pre-made request; (status 200?, body). Reads by Content-Length, else to EOF."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the answer's headers")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = _content_length(head)
    while length is None or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            if length is None:
                break
            raise ConnectionError("closed before the end of the answer")
        body += chunk
    return head[9:12] == b"200", body


def _connect(load: Load, context: ssl.SSLContext | None) -> socket.socket:
    sock = socket.create_connection((load.host, load.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return context.wrap_socket(sock, server_hostname="localhost") if context else sock


def _answer_right(body: bytes, expected: ocsp.OCSPCertStatus) -> bool:
    try:
        answer = ocsp.load_der_ocsp_response(body)
        return (
            answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
            and answer.certificate_status is expected
        )
    except ValueError:
        return False


def _client(load: Load, offset: int, start: float, stop: float, tally: list[object]) -> None:
    """One client: requests back to back until ``stop`` (wall clock); counts from ``start``."""
    context = ssl.create_default_context(cafile=load.cafile) if load.cafile else None
    if context is not None:
        context.options |= ssl.OP_NO_TICKET  # every new connection is a full handshake
    sock = _connect(load, context) if load.keep_alive else None
    position, count, errors, answered = offset, 0, 0, 0
    latencies: list[float] = []
    while (began := time.time()) < stop:
        index = position % len(load.requests)
        position += 1
        try:
            one = sock if sock is not None else _connect(load, context)
            ok, body = _exchange(one, load.requests[index])
            if sock is None:
                one.close()
            if ok and position % VERIFY_EVERY == 0:
                ok = _answer_right(body, load.expected[index])
        except (OSError, ValueError):
            ok = False
            if sock is not None:
                sock.close()
                sock = _connect(load, context)
        answered += ok
        if began >= start:
            if ok:
                count += 1
                latencies.append(time.time() - began)
            else:
                errors += 1
    if sock is not None:
        sock.close()
    tally.append((count, errors, answered, latencies))


class _PlainClient:
    """One closed-loop plain-HTTP client of :func:`_plain_clients`: at most one request out."""

    __slots__ = ("began", "buffer", "connecting", "position", "sock")

    def __init__(self, position: int) -> None:
        self.sock: socket.socket | None = None
        self.position = position
        self.buffer = b""
        self.began = 0.0
        self.connecting = False


def _answer_complete(buffer: bytes) -> bool | None:
    """True when ``buffer`` holds a whole answer (head and Content-Length bytes of body), None
    when its head has no Content-Length (read to EOF then), False when more is to come."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return False
    length = _content_length(buffer[:end])
    if length is None:
        return None
    return len(buffer) - end - 4 >= length


def _plain_clients(
    load: Load, first: int, clients: int, start: float, stop: float
) -> tuple[int, int, int, list[float]]:
    """``clients`` plain-HTTP clients on one epoll loop (see the comment above "load"): each sends
    its next pre-made request when the whole answer to the last one is in; a new connection for
    each request unless ``load.keep_alive``. (ok, errors, answered, latencies)."""
    selector = selectors.DefaultSelector()
    address = (load.host, load.port)
    count = errors = answered = 0
    latencies: list[float] = []

    def open_and_send(client: _PlainClient) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        client.sock, client.connecting, client.buffer = sock, True, b""
        sock.connect_ex(address)  # EINPROGRESS: writable once connected
        selector.register(sock, selectors.EVENT_WRITE, client)

    def send_next(client: _PlainClient) -> None:
        assert client.sock is not None
        client.began = time.time()
        client.buffer = b""
        # A request is a few hundred bytes: one send on a fresh or idle socket takes it all.
        client.sock.send(load.requests[client.position % len(load.requests)])

    def drop(client: _PlainClient) -> None:
        if client.sock is not None:
            selector.unregister(client.sock)
            client.sock.close()
            client.sock = None

    pending = [_PlainClient(first + n) for n in range(clients)]
    for client in pending:
        client.began = time.time()
        open_and_send(client)
    # At ``stop`` no new request is sent, but the answers still out are read (within
    # DRAIN_SECONDS): a client that closes with its answer unread makes the responder's write
    # fail, which a single-threaded responder (openssl's) may not survive.
    active = len(pending)
    drain_until = stop + DRAIN_SECONDS
    while active and (now := time.time()) < drain_until:
        for key, _mask in selector.select(timeout=min(1.0, max(0.0, drain_until - now))):
            client = key.data
            sock = client.sock
            try:
                if client.connecting:
                    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if error:
                        raise OSError(error, os.strerror(error))
                    client.connecting = False
                    selector.modify(sock, selectors.EVENT_READ, client)
                    sent = client.began
                    send_next(client)
                    if not load.keep_alive:
                        client.began = sent  # a new connection's time counts in its answer
                    continue
                chunk = sock.recv(65536)
                if chunk:
                    client.buffer += chunk
                    if not _answer_complete(client.buffer):
                        continue  # more to come (or, with no Content-Length, up to EOF)
                elif _answer_complete(client.buffer) is not None:
                    raise ConnectionError("closed before the end of the answer")
                ok = client.buffer[9:12] == b"200"
                index = client.position % len(load.requests)
                client.position += 1
                if ok and client.position % VERIFY_EVERY == 0:
                    body = client.buffer.partition(b"\r\n\r\n")[2]
                    ok = _answer_right(body, load.expected[index])
            except OSError:
                ok = False
                client.position += 1
            answered += ok
            if start <= client.began < stop:
                if ok:
                    count += 1
                    latencies.append(now - client.began)
                else:
                    errors += 1
            if now >= stop:
                drop(client)
                active -= 1
            elif ok and load.keep_alive:
                send_next(client)
            else:
                drop(client)
                client.began = time.time()
                open_and_send(client)
    for client in pending:
        drop(client)
    selector.close()
    return count, errors, answered, latencies


def _load_process(
    job: tuple[Load, int, int, float, float],
) -> tuple[int, int, int, list[float], float]:
    """``clients`` clients of one load process; (ok, errors, answered, latencies, CPU s)."""
    load, first, clients, start, stop = job
    cpu = time.process_time()
    time.sleep(max(0.0, start - WARMUP_SECONDS - time.time()))
    if load.cafile is None:
        ok, errors, answered, latencies = _plain_clients(load, first, clients, start, stop)
        return ok, errors, answered, latencies, time.process_time() - cpu
    tally: list[object] = []
    threads = [
        threading.Thread(target=_client, args=(load, first + n, start, stop, tally))
        for n in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results = [item for item in tally if isinstance(item, tuple)]
    return (
        sum(r[0] for r in results),
        sum(r[1] for r in results),
        sum(r[2] for r in results),
        [value for r in results for value in r[3]],
        time.process_time() - cpu,
    )


def _load(
    pool: multiprocessing.pool.Pool, processes: int, load: Load, duration: float, server_pid: int
) -> Result:
    """CLIENTS clients over the pool's processes for ``duration`` s (after a warm-up)."""
    shares = [CLIENTS // processes + (n < CLIENTS % processes) for n in range(processes)]
    start = time.time() + START_DELAY_SECONDS + WARMUP_SECONDS
    jobs = [
        (load, sum(shares[:n]) * 7, share, start, start + duration)
        for n, share in enumerate(shares)
        if share
    ]
    cpu_before = _process_tree_cpu(server_pid)
    parts = pool.map(_load_process, jobs, chunksize=1)
    total = Result(sum(p[0] for p in parts), sum(p[1] for p in parts), duration, [])
    total.latencies = [value for p in parts for value in p[3]]
    total.answered = sum(p[2] for p in parts)
    total.server_cpu = _process_tree_cpu(server_pid) - cpu_before
    total.load_cpu = sum(p[4] for p in parts)
    return total


Connect = Callable[[], http.client.HTTPConnection]


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


def _requests_and_statuses(
    leaves: list[x509.Certificate],
    issuer: x509.Certificate,
    data_dir: Path,
    count: int,
    nonce: bool,
) -> tuple[list[bytes], tuple[ocsp.OCSPCertStatus, ...]]:
    """``count`` DER requests over ``leaves`` in turn, and the status each must get."""
    store = open_store(f"sqlite:///{data_dir / 'estkit.db'}")
    revoked = {
        leaf.serial_number
        for leaf in leaves
        if (record := store.get_issued(format(leaf.serial_number, "x"))) is not None
        and record.status == "revoked"
    }
    store.close()
    chosen = [leaves[n % len(leaves)] for n in range(count)]
    bodies = [_request(leaf, issuer, nonce=nonce) for leaf in chosen]
    statuses = tuple(
        ocsp.OCSPCertStatus.REVOKED if leaf.serial_number in revoked else ocsp.OCSPCertStatus.GOOD
        for leaf in chosen
    )
    return bodies, statuses


def _compare(
    pool: multiprocessing.pool.Pool, args: argparse.Namespace, key_type: str
) -> dict[str, list[Result]]:
    """Alternating rounds of every scenario for a CA of ``key_type``; results per scenario."""
    with tempfile.TemporaryDirectory(prefix="bench-ocsp-") as tmp:
        work = Path(tmp)
        paths = init_data_dir(work / "server", key_type=key_type)
        data_dir = paths.data_dir
        leaves, issuer = _issue_leaves(data_dir, args.certs + 1)
        probe, target = leaves[:-1], leaves[-1]
        issuer_path = work / "issuer.pem"
        issuer_path.write_bytes(issuer.public_bytes(serialization.Encoding.PEM))
        bodies, statuses = _requests_and_statuses(probe, issuer, data_dir, len(probe), False)
        nonce_bodies, nonce_statuses = _requests_and_statuses(
            probe, issuer, data_dir, NONCE_REQUESTS, True
        )
        index = work / "index.txt"
        _openssl_index(index, probe, data_dir)
        generation = data_dir / "ca" / "generations" / "g1"
        signers = {"delegated P-256 responder": responder_paths(data_dir / "ca", "g1")}
        if key_type != "p256":  # with a P-256 CA the CA key would sign just like the responder
            signers[f"the CA's {key_type} key"] = (
                generation / "issuing.pem",
                generation / "issuing.key",
            )
        cafile = str(paths.ca_certificates)
        estkit, port = _start_estkit(data_dir, args.workers, work / "estkit.log")
        servers: list[tuple[subprocess.Popen[bytes], bool]] = [(estkit, False)]
        try:
            # The same data directory served a second time, with the plain-HTTP revocation
            # listener (its own processes, so each row's server CPU is its own).
            plain, plain_port = _start_estkit(
                data_dir, args.workers, work / "estkit-http.log", revocation=True
            )
            servers.append((plain, False))
            # One answer first: the server has then written the delegated responder's files,
            # which openssl signs with too.
            https = _https_to(port, paths.ca_certificates)
            warm = https()
            warm.request("POST", "/ocsp", body=bodies[0],
                         headers={"Content-Type": "application/ocsp-request"})  # fmt: skip
            if not _answer_right(warm.getresponse().read(), statuses[0]):
                raise SystemExit("estkit's first OCSP answer is wrong")
            warm.close()
            scenarios: dict[str, tuple[Load, int]] = {
                "estkit HTTPS keep-alive (pre-signed)": (
                    Load("127.0.0.1", port, cafile, True, _http_requests(bodies, True), statuses),
                    estkit.pid,
                ),
                "estkit HTTPS new connection each": (
                    Load("127.0.0.1", port, cafile, False, _http_requests(bodies, False), statuses),
                    estkit.pid,
                ),
                "estkit HTTP keep-alive (pre-signed)": (
                    Load("127.0.0.1", plain_port, None, True, _http_requests(bodies, True),
                         statuses),
                    plain.pid,
                ),
                "estkit HTTP new connection each": (
                    Load("127.0.0.1", plain_port, None, False, _http_requests(bodies, False),
                         statuses),
                    plain.pid,
                ),
                "estkit keep-alive, nonce (signed each)": (
                    Load("127.0.0.1", port, cafile, True, _http_requests(nonce_bodies, True),
                         nonce_statuses),
                    estkit.pid,
                ),
            }  # fmt: skip
            multi = f" -multi {args.workers}" if args.workers > 1 else ""
            for n, (signer, files) in enumerate(signers.items()):
                openssl, openssl_port = _start_openssl(
                    index, issuer_path, files, args.workers, work / f"openssl-{n}.log"
                )
                servers.append((openssl, args.workers > 1))
                load = Load("127.0.0.1", openssl_port, None, False,
                            _http_requests(bodies, False), statuses)  # fmt: skip
                scenarios[f"openssl ocsp -port{multi} HTTP, {signer}"] = (load, openssl.pid)
            results: dict[str, list[Result]] = {name: [] for name in scenarios}
            print(
                f"\n{key_type} CA: OCSP answers at {CLIENTS} clients over {args.load_processes} "
                f"load processes, {args.certs} certificates, {args.workers} server processes "
                f"each, {args.rounds} alternating rounds of {args.duration:g} s"
            )
            for round_number in range(args.rounds):
                names = list(scenarios)
                for name in names if round_number % 2 == 0 else reversed(names):
                    load, pid = scenarios[name]
                    result = _load(pool, args.load_processes, load, args.duration, pid)
                    results[name].append(result)
                    print(f"  round {round_number + 1} " + result.line(name))
            _print_revocation_delays(data_dir, https, [target, *probe[: REVOCATION_SAMPLES - 1]],
                                     issuer)  # fmt: skip
            return results
        finally:
            for process, group in servers:
                _stop(process, group=group)


def _https_to(port: int, cafile: Path) -> Connect:
    context = ssl.create_default_context(cafile=str(cafile))

    def https() -> http.client.HTTPConnection:
        return http.client.HTTPSConnection("localhost", port, context=context, timeout=30)

    return https


def _print_revocation_delays(
    data_dir: Path, https: Connect, leaves: list[x509.Certificate], issuer: x509.Certificate
) -> None:
    delays = [_revocation_delay(data_dir, https, leaf, issuer) for leaf in leaves]
    after_commit = sorted(delay[0] for delay in delays)
    after_start = sorted(delay[1] for delay in delays)
    worst = after_commit[-1]
    verdict = "meets" if worst <= TARGET_REVOCATION_SECONDS else "misses"
    print(
        f"  revocation to 'revoked' answer ({len(delays)} revocations): after `server revoke` "
        f"returned median {after_commit[len(delays) // 2] * 1e3:.0f} ms, max "
        f"{worst * 1e3:.0f} ms; after it started median "
        f"{after_start[len(delays) // 2] * 1e3:.0f} ms, max {after_start[-1] * 1e3:.0f} ms "
        f"({verdict} the {TARGET_REVOCATION_SECONDS:.0f} s target)"
    )


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _summary(key_type: str, results: dict[str, list[Result]]) -> None:
    """Medians over the rounds; ratios per round (the same round's conditions), then median."""
    print(f"\n{key_type} CA, medians over the rounds:")
    for name, rounds in results.items():
        # Cores the server and the load generator kept busy together: near the machine's CPU
        # count, the machine (not the server alone) is the cap, and the load CPU is its share.
        busy = _median([r.rate * (r.cpu_per_answer_us + r.load_cpu_per_answer_us) / 1e6
                        for r in rounds])  # fmt: skip
        print(
            f"  {name:<62} {_median([r.rate for r in rounds]):7.0f}/s  server CPU "
            f"{_median([r.cpu_per_answer_us for r in rounds]):5.0f} us/answer  load CPU "
            f"{_median([r.load_cpu_per_answer_us for r in rounds]):5.0f} us/answer  "
            f"server + load {busy:.1f} of {os.cpu_count()} cores"
        )
    ours = [name for name in results if name.startswith("estkit") and "nonce" not in name]
    for theirs in (name for name in results if name.startswith("openssl")):
        for name in ours:
            pairs = list(zip(results[name], results[theirs], strict=True))
            rate = _median([a.rate / b.rate for a, b in pairs if b.rate])
            cpu = _median([b.cpu_per_answer_us / a.cpu_per_answer_us for a, b in pairs])
            verdict = "meets" if rate >= TARGET_RATIO else "misses"
            print(
                f"  {name} vs {theirs}: {rate:.1f}x answers/s ({verdict} the "
                f"{TARGET_RATIO:.0f}x target), {cpu:.1f}x answers per server CPU-second"
            )


def _side_by_side(pool: multiprocessing.pool.Pool, args: argparse.Namespace) -> None:
    """--baseline REV: REV's server and this checkout's, each on its own data directory made by
    its own ``server init``, the pre-signed keep-alive load in alternating rounds; the server
    CPU per answer of each and the ratio."""
    # The other benchmark's helpers: git archive of REV, PYTHONPATH to its src, its own init.
    from bench_server_enroll import _check_imports_from, _extract, _init_with, _source_env

    key_type = args.ca_key_types.split(",")[0].strip()
    with tempfile.TemporaryDirectory(prefix="bench-ocsp-ab-") as tmp:
        work = Path(tmp)
        baseline = _extract(args.baseline, work / "baseline-source")
        _check_imports_from(baseline)
        loads: dict[str, tuple[Load, int]] = {}
        servers: list[subprocess.Popen[bytes]] = []
        try:
            for name, source in (("baseline", baseline), ("current", None)):
                data_dir = work / name
                _init_with(source, data_dir, key_type)
                leaves, issuer = _issue_leaves(data_dir, args.certs)
                bodies, statuses = _requests_and_statuses(leaves, issuer, data_dir, args.certs,
                                                          False)  # fmt: skip
                env = _source_env(source)
                server, port = _start_estkit(data_dir, args.workers, work / f"{name}.log", env)
                servers.append(server)
                cafile = str(data_dir / "ca" / "cacerts.pem")
                load = Load("127.0.0.1", port, cafile, True, _http_requests(bodies, True),
                            statuses)  # fmt: skip
                loads[name] = (load, server.pid)
            results: dict[str, list[Result]] = {name: [] for name in loads}
            print(f"\nside by side: {args.baseline} vs this checkout, {key_type} CA, HTTPS "
                  f"keep-alive pre-signed, {args.rounds} alternating rounds")  # fmt: skip
            for round_number in range(args.rounds):
                names = list(loads) if round_number % 2 == 0 else list(reversed(loads))
                for name in names:
                    load, pid = loads[name]
                    result = _load(pool, args.load_processes, load, args.duration, pid)
                    results[name].append(result)
                    print(f"  round {round_number + 1} " + result.line(name))
            base, ours = results["baseline"], results["current"]
            pairs = zip(base, ours, strict=True)
            cpu = _median([b.cpu_per_answer_us / c.cpu_per_answer_us for b, c in pairs])
            base_cpu = _median([r.cpu_per_answer_us for r in base])
            ours_cpu = _median([r.cpu_per_answer_us for r in ours])
            base_rate, ours_rate = _median([r.rate for r in base]), _median([r.rate for r in ours])
            print(
                f"  server CPU per answer: baseline {base_cpu:.0f} us, current {ours_cpu:.0f} us "
                f"(baseline/current {cpu:.2f}x, median of the rounds); answers/s baseline "
                f"{base_rate:.0f}, current {ours_rate:.0f}"
            )
        finally:
            for server in servers:
                _stop(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (A/B/A...)")
    parser.add_argument("--workers", type=int, default=2, help="server processes (both sides)")
    parser.add_argument("--certs", type=int, default=50, help="certificates asked about")
    parser.add_argument(
        "--load-processes", type=int, default=4, help="processes the 16 clients are spread over"
    )
    parser.add_argument(
        "--ca-key-types", default="p256,rsa2048", help="CA key types to compare, comma-separated"
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="instead: this checkout's /ocsp beside commit REV's (server CPU per answer)",
    )
    args = parser.parse_args()
    if args.baseline:
        with multiprocessing.get_context("fork").Pool(args.load_processes) as pool:
            _side_by_side(pool, args)
        return
    print(f"bench_ocsp {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs")
    summaries: dict[str, dict[str, list[Result]]] = {}
    with multiprocessing.get_context("fork").Pool(args.load_processes) as pool:
        for key_type in args.ca_key_types.split(","):
            summaries[key_type] = _compare(pool, args, key_type.strip())
    for key_type, results in summaries.items():
        _summary(key_type, results)


if __name__ == "__main__":
    main()
