"""Hold under hostile load (issue 14): descriptor budget per listener, eviction instead of
refusal, EMFILE, slow bodies, TLS alerts, bounded logs and a bounded approval queue.

Each limit is shown to trigger (the server saw the hostile input and answered it as stated), a
legitimate request still succeeds while it holds, and nothing issued or queued is lost. Servers
run on loopback with real TLS; the descriptor limits are real (``ulimit -n`` / ``prlimit`` on a
real `estkit server serve` process).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import resource
import shlex
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from estkit.ca.manufacturer import create_manufacturer_ca, issue_device_certificate
from estkit.ca.store import Event, open_store
from estkit.server import queue_limits
from estkit.server.accesslog import (
    HANDSHAKE_LOG_BURST,
    MAX_RATE_LIMITED_KINDS,
    RateLimitedLog,
    handshake_failures,
    refusals,
)
from estkit.server.config import add_label, set_limits
from estkit.server.datadir import InitResult, init_data_dir
from estkit.server.guard import MAX_THROTTLED_ADDRESSES, THROTTLE_EXEMPT, FailureThrottle
from estkit.server.limits import (
    BODY_RATE_GRACE_SECONDS,
    RESERVED_DESCRIPTORS,
    ConnectionLimits,
    connection_budget,
)
from estkit.server.ra import issue_ra_certificate
from estkit.server.runner import RunningServer, start_server_thread

from .support import (
    LOOPBACK,
    ORDER_GAP_SECONDS,
    SERVER_NAME,
    ServeProcess,
    client_context,
    csr_body,
    enroll,
    free_port,
    request,
    wait_for,
)

# Descriptor limit of the `serve` processes below: small, so a few hundred connections exhaust it.
NOFILE = 256
# Seconds a well-behaved request may take while the server is under attack in these tests.
LEGIT_TIMEOUT_SECONDS = 15.0


@dataclass
class Server:
    running: RunningServer
    paths: InitResult
    device: ssl.SSLContext

    @property
    def port(self) -> int:
        return self.running.port


@contextlib.contextmanager
def _serving(tmp_path: Path, **limits: float) -> Iterator[Server]:
    """A server thread with an ``untrusted`` label and the given ``[limits]``."""
    paths = init_data_dir(tmp_path / "srv", key_type="p256")
    add_label(paths.config, "untrusted", approval="untrusted", retry_after_seconds=1)
    if limits:
        set_limits(paths.config, **limits)
    running = start_server_thread(paths.data_dir)
    try:
        yield Server(
            running,
            paths,
            client_context(paths.ca_certificates, paths.device_certificate, paths.device_key),
        )
    finally:
        running.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with _serving(tmp_path) as serving:
        yield serving


def _enroll_ok(port: int, context: ssl.SSLContext) -> None:
    reply = enroll(port, context, csr_body()[0], timeout=LEGIT_TIMEOUT_SECONDS)
    assert reply.status == 200, reply.text


# --- TLS alerts --------------------------------------------------------------------------------


def _s_client(port: int, *args: str) -> str:
    result = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"{LOOPBACK}:{port}",
            "-servername",
            SERVER_NAME,
            *args,
        ],
        input=b"",
        capture_output=True,
        timeout=30,
    )
    return (result.stdout + result.stderr).decode(errors="replace")


@pytest.mark.parametrize(
    ("args", "alert_text", "alert", "reason"),
    [
        (
            ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
            "alert protocol version",
            70,
            "offered TLSv1.1; TLS 1.2 or 1.3 is required",
        ),
        (
            ["-tls1_2", "-cipher", "AES128-SHA"],
            "alert handshake failure",
            40,
            "no offered cipher suite is allowed by BCP-003-01 T2",
        ),
    ],
    ids=["tls1.1", "non-bcp-cipher"],
)
def test_refused_handshake_gets_its_alert_and_an_access_log_line(
    server: Server,
    caplog: pytest.LogCaptureFixture,
    args: list[str],
    alert_text: str,
    alert: int,
    reason: str,
) -> None:
    caplog.set_level(logging.INFO, logger="estkit.access")
    handshake_failures.reset()
    output = _s_client(server.port, *args)
    # Before issue 14 the client saw "unexpected eof while reading" (the alert was dropped).
    assert alert_text in output and f"SSL alert number {alert}" in output, output
    lines = [r.getMessage() for r in caplog.records if r.name == "estkit.access"]
    failed = [line for line in lines if line.startswith("tls_handshake_failed")]
    assert len(failed) == 1, lines
    assert f"alert={alert}" in failed[0] and reason in failed[0] and "sni=localhost" in failed[0]
    # A BCP-003-01 client is still served.
    _enroll_ok(server.port, server.device)


def test_every_request_gets_one_access_log_line(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="estkit.access")
    _enroll_ok(server.port, server.device)
    refused = request(server.port, "GET", "/.well-known/est/nosuchop", server.device)
    assert refused.status == 404
    lines = [r.getMessage() for r in caplog.records if r.name == "estkit.access"]
    assert len(lines) == 2, lines
    assert re.match(r"request listener=est peer=127\.0\.0\.1:\d+ method=POST ", lines[0])
    assert "path=/.well-known/est/simpleenroll status=200" in lines[0]
    assert "path=/.well-known/est/nosuchop status=404" in lines[1]


# --- bounded refusal log -----------------------------------------------------------------------


def test_rate_limited_log_writes_one_sample_per_interval_with_the_count() -> None:
    now = [0.0]
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    target = logging.getLogger("estkit.test.ratelimit")
    target.addHandler(Collect())
    target.setLevel(logging.INFO)
    log = RateLimitedLog(target, interval=10.0, clock=lambda: now[0])
    for i in range(1000):
        log.log("refused requests", logging.WARNING, "refused %d", i)
    assert records == ["refused 0"]
    log.log("other kind", logging.WARNING, "other")  # kinds are counted apart
    now[0] = 10.5
    log.log("refused requests", logging.WARNING, "refused %d", 1000)
    assert records[-1] == "refused 1000 (999 more refused requests since the last such message)"


def test_rate_limited_log_burst_and_bounded_kinds() -> None:
    now = [0.0]
    log = RateLimitedLog(
        logging.getLogger("estkit.test.burst"), interval=10.0, clock=lambda: now[0], burst=3
    )
    assert [log.admit("10.0.0.1") for _ in range(5)] == [0, 0, 0, None, None]
    assert log.admit("10.0.0.2") == 0  # another address has its own burst
    now[0] = 11.0
    assert log.admit("10.0.0.1") == 2  # the next window reports the two counted ones
    for i in range(MAX_RATE_LIMITED_KINDS + 10):
        log.admit(f"peer-{i}")
    assert len(log._windows) <= MAX_RATE_LIMITED_KINDS


def test_a_handshake_flood_logs_a_bounded_number_of_access_lines(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="estkit.access")
    handshake_failures.reset()
    weak = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    weak.check_hostname, weak.verify_mode = False, ssl.CERT_NONE
    weak.maximum_version = ssl.TLSVersion.TLSv1_2
    weak.set_ciphers("AES128-SHA")
    attempts = 3 * HANDSHAKE_LOG_BURST
    for _ in range(attempts):
        with (
            socket.create_connection((LOOPBACK, server.port), timeout=10) as raw,
            pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"),
        ):
            weak.wrap_socket(raw, server_hostname=SERVER_NAME)
    lines = [r.getMessage() for r in caplog.records if r.name == "estkit.access"]
    failed = [line for line in lines if line.startswith("tls_handshake_failed")]
    assert len(failed) == HANDSHAKE_LOG_BURST, failed
    _enroll_ok(server.port, server.device)


def test_a_flood_of_refused_requests_logs_a_bounded_number_of_lines(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    refusals.reset()  # another test's refusal in the last interval would hide the first line
    flood = 40
    for _ in range(flood):
        reply = request(server.port, "GET", "/.well-known/est/nosuchop", server.device)
        assert reply.status == 404
    refusal_lines = [
        r for r in caplog.records if r.name == "estkit.server" and "refused" in r.getMessage()
    ]
    assert 1 <= len(refusal_lines) <= 2, [r.getMessage() for r in refusal_lines]
    # ...while the store's audit trail and the access log still account for every one.
    with open_store(server.paths.database_url) as store:
        assert len([e for e in store.list_events("refused") if e.fields["status"] == 404]) == flood
    assert len([r for r in caplog.records if r.name == "estkit.access"]) == flood


# --- slow bodies -------------------------------------------------------------------------------


def _slow_body(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    sock = context.wrap_socket(
        socket.create_connection((LOOPBACK, port), timeout=30), server_hostname=SERVER_NAME
    )
    sock.sendall(
        b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/pkcs10\r\nContent-Length: 4000\r\n\r\nM"
    )
    return sock


def _read_until_closed(sock: ssl.SSLSocket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    received = b""
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_a_body_below_the_minimum_rate_is_cut_after_the_grace(server: Server) -> None:
    sock = _slow_body(server.port, server.device)
    started = time.monotonic()
    try:
        sock.sendall(b"I")  # 2 bytes in: far below body_min_rate (500 B/s)
        _enroll_ok(server.port, server.device)  # others are served meanwhile
        received = _read_until_closed(sock, 30)
    finally:
        sock.close()
    elapsed = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert b"body_min_rate=500 bytes/s" in received
    # Cut at the grace, long before body_timeout (30 s).
    assert BODY_RATE_GRACE_SECONDS - 0.5 <= elapsed < BODY_RATE_GRACE_SECONDS + 5, elapsed


def test_at_the_cap_a_slow_body_is_evicted_for_a_legitimate_client(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="estkit.server")
    cap = 6
    set_limits(server.paths.config, max_connections=cap)
    wait_for(lambda: server.running._state.config.limits.max_connections == cap, 10)
    slow = []
    for _ in range(cap):
        slow.append(_slow_body(server.port, server.device))
        time.sleep(ORDER_GAP_SECONDS)
    try:
        time.sleep(0.5)  # the server has seen every head: all six are reading bodies
        _enroll_ok(server.port, server.device)
        # The oldest slow body was closed to make room (no answer: its slot was needed).
        assert _read_until_closed(slow[0], 10) == b""
        assert any(
            "max_connections=6) reached: closed the busy connection" in r.getMessage()
            for r in caplog.records
        )
    finally:
        for sock in slow:
            sock.close()
    # The handler of the evicted request saw why (recorded like any refusal, not a 500).
    with open_store(server.paths.database_url) as store:
        events = store.list_events("refused")
    assert any("connection closed before the request body arrived" in e.message for e in events)
    assert not any(e.fields.get("status") == 500 for e in events)


# --- the approval queue ------------------------------------------------------------------------


def _rogue_contexts(server: Server, tmp_path: Path, count: int) -> list[ssl.SSLContext]:
    """Client contexts with certificates from a CA the server does not trust (each a new
    requester, all from 127.0.0.1)."""
    rogue_ca = create_manufacturer_ca(tmp_path / "rogue", common_name="Unknown Vendor CA")
    contexts = []
    for i in range(count):
        device = issue_device_certificate(rogue_ca, device_serial=f"X-{i}")
        cert, key = tmp_path / f"rogue-{i}.pem", tmp_path / f"rogue-{i}.key"
        device.write(cert, key)
        contexts.append(client_context(server.paths.ca_certificates, cert, key))
    return contexts


def _pending(server: Server) -> int:
    with open_store(server.paths.database_url) as store:
        return len(store.list_requests("pending"))


def test_queue_caps_per_address_and_total_answer_503_and_keep_what_is_queued(
    server: Server, tmp_path: Path
) -> None:
    per_address = 5
    set_limits(server.paths.config, queue_per_address=per_address)
    wait_for(lambda: server.running._state.config.limits.queue_per_address == per_address, 10)
    rogues = _rogue_contexts(server, tmp_path, per_address + 2)
    bodies = [csr_body()[0] for _ in rogues]
    for context, body in zip(rogues[:per_address], bodies, strict=False):
        assert enroll(server.port, context, body, label="untrusted").status == 202
    over = enroll(server.port, rogues[per_address], bodies[per_address], label="untrusted")
    assert over.status == 503, over.text
    assert over.header("Retry-After") == str(queue_limits.QUEUE_FULL_RETRY_AFTER_SECONDS)
    assert "address 127.0.0.1" in over.text and f"queue_per_address={per_address}" in over.text
    assert _pending(server) == per_address  # nothing queued beyond the cap, nothing lost
    # A queued requester polling with its CSR is the same entry, never refused by a cap.
    again = enroll(server.port, rogues[0], bodies[0], label="untrusted")
    assert again.status == 202, again.text
    assert _pending(server) == per_address
    # A trusted device is not queued at all: it still enrolls.
    assert enroll(server.port, server.device, csr_body()[0], label="untrusted").status == 200

    set_limits(server.paths.config, queue_per_address=100, queue_total=per_address)
    wait_for(lambda: server.running._state.config.limits.queue_total == per_address, 10)
    total = enroll(server.port, rogues[per_address + 1], bodies[-1], label="untrusted")
    assert total.status == 503 and f"queue_total={per_address}" in total.text, total.text
    assert _pending(server) == per_address


def test_queue_cap_per_requester(server: Server, tmp_path: Path) -> None:
    (rogue,) = _rogue_contexts(server, tmp_path, 1)
    cap = 4  # the default (QUEUE_PER_REQUESTER)
    for _ in range(cap):
        assert enroll(server.port, rogue, csr_body()[0], label="untrusted").status == 202
    over = enroll(server.port, rogue, csr_body()[0], label="untrusted")
    assert over.status == 503 and "queue_per_requester=4" in over.text, over.text
    assert over.header("Retry-After") is not None
    assert _pending(server) == cap


def test_pending_requests_expire_and_a_repeat_queues_afresh(server: Server, tmp_path: Path) -> None:
    import datetime as dt

    (rogue,) = _rogue_contexts(server, tmp_path, 1)
    body = csr_body()[0]
    first = enroll(server.port, rogue, body, label="untrusted")
    assert first.status == 202
    first_id = int(first.text.split("request ")[1].split()[0])
    state = server.running._state
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=7, hours=1)
    queue_limits._sweeps.clear()
    queue_limits.expire_old_requests(state, state.config.limits, later)
    with open_store(server.paths.database_url) as store:
        assert store.get_request(first_id) is None
        expired = store.list_events("expired")
    assert [e.fields["request_id"] for e in expired] == [first_id]
    again = enroll(server.port, rogue, body, label="untrusted")
    assert again.status == 202
    assert int(again.text.split("request ")[1].split()[0]) != first_id
    # A request younger than the expiry stays.
    queue_limits._sweeps.clear()
    queue_limits.expire_old_requests(state, state.config.limits, dt.datetime.now(dt.UTC))
    assert _pending(server) == 1


# --- descriptor budget, console flood and EMFILE (real processes) -----------------------------


class LimitedServe(ServeProcess):
    """`estkit server serve` under `ulimit -n NOFILE` (soft and hard)."""

    def command(self) -> list[str]:
        return ["sh", "-c", f"ulimit -n {NOFILE} && exec {shlex.join(super().command())}"]


def _serve_init(tmp_path: Path) -> InitResult:
    return init_data_dir(tmp_path / "srv", key_type="p256")


def _idle_tcp(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.settimeout(10)
        sock.connect((LOOPBACK, port))
        socks.append(sock)
    return socks


def _closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_budget_is_derived_from_rlimit_nofile() -> None:
    assert connection_budget("console", 1024) == 64
    assert connection_budget("est", 1024) == 1024 - RESERVED_DESCRIPTORS - 64
    assert connection_budget("console", 256) == (256 - RESERVED_DESCRIPTORS) // 8
    # This process raised its soft limit to the hard one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == hard or hard == resource.RLIM_INFINITY


def test_idle_flood_on_the_console_port_does_not_starve_the_est_port(tmp_path: Path) -> None:
    paths = _serve_init(tmp_path)
    admin_port = free_port()
    device = client_context(paths.ca_certificates, paths.device_certificate, paths.device_key)
    console_budget = connection_budget("console", NOFILE)
    with LimitedServe(
        paths.data_dir, tmp_path / "serve.log", extra_args=["--admin-port", str(admin_port)]
    ).start() as serve:
        flood = _idle_tcp(admin_port, NOFILE + 44)  # more than the whole process may open
        try:
            _enroll_ok(serve.port, device)
            # The console shed the oldest idle connections to stay within its share...
            closed: set[int] = set()

            def shed() -> bool:
                closed.update(
                    i for i, s in enumerate(flood) if i not in closed and _closed_by_server(s)
                )
                return len(closed) >= len(flood) - console_budget

            assert wait_for(shed, 30), (len(closed), len(flood), console_budget)
            # ...and still answers a newcomer (an HTTP answer, whatever the page says).
            reply = request(admin_port, "GET", "/login", client_context(paths.ca_certificates))
            assert 200 <= reply.status < 500
        finally:
            for sock in flood:
                sock.close()
        log = serve.log_text()
    assert "Traceback" not in log, log[-3000:]
    assert f"console connection budget (max_connections={console_budget}) reached" in log


def test_accept_out_of_descriptors_evicts_and_does_not_spin(tmp_path: Path) -> None:
    paths = _serve_init(tmp_path)
    device = client_context(paths.ca_certificates, paths.device_certificate, paths.device_key)
    # One worker: prlimit lowers the limit of one process, and this is about one accept loop.
    with LimitedServe(
        paths.data_dir, tmp_path / "serve.log", extra_args=["--workers", "1"]
    ).start() as serve:
        _enroll_ok(serve.port, device)
        # Lower the running server's limit below its budget: accept() will hit EMFILE.
        in_use = len(os.listdir(f"/proc/{serve.pid}/fd"))
        resource.prlimit(serve.pid, resource.RLIMIT_NOFILE, (in_use + 40, NOFILE))
        flood = _idle_tcp(serve.port, 80)
        try:
            time.sleep(1.0)
            cpu_before = _cpu_seconds(serve.pid)
            time.sleep(2.0)
            # Not spinning on a failing accept(): well under a fifth of a core.
            assert _cpu_seconds(serve.pid) - cpu_before < 0.4
            _enroll_ok(serve.port, device)
        finally:
            for sock in flood:
                sock.close()
        log = serve.log_text()
    assert "Traceback" not in log, log[-3000:]
    assert "accept() failed (Too many open files)" in log
    with open_store(paths.database_url) as store:
        assert len(store.list_issued()) == 2  # both legitimate enrollments recorded


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- per-address failure throttle --------------------------------------------------------------

# The attacker's and a legitimate device's addresses in these tests: other loopback addresses
# (Linux routes 127/8 to lo) than 127.0.0.1, which the throttle exempts (guard.THROTTLE_EXEMPT).
ATTACKER = "127.0.0.2"
DEVICE = "127.0.0.3"
# A small threshold so a test crosses it in a few dozen requests; a short backoff so the test
# can watch it end.
TEST_FAILURES_PER_SECOND = 8
TEST_FAILURE_BACKOFF_SECONDS = 3.0


def test_failure_throttle_counts_per_address_per_second_and_backs_off() -> None:
    now = [0.0]
    limits = ConnectionLimits(failures_per_second=3, failure_backoff=10.0)
    started: list[tuple[str, int, float]] = []
    throttle = FailureThrottle(
        lambda: limits, clock=lambda: now[0], on_throttle=lambda *a: started.append(a)
    )
    for _ in range(3):
        throttle.failed("10.0.0.1")
    assert not throttle.blocked("10.0.0.1")  # at the limit, not over it
    now[0] = 1.0  # a new window: three more are still within the limit
    for _ in range(3):
        throttle.failed("10.0.0.1")
    assert not throttle.blocked("10.0.0.1")
    throttle.failed("10.0.0.1")  # the fourth in one second
    assert throttle.blocked("10.0.0.1") and throttle.blocked("10.0.0.1")
    assert not throttle.blocked("10.0.0.2")  # another address is not touched
    assert throttle.closed == 2
    assert started == [("10.0.0.1", 4, 10.0)]  # one audit event per backoff
    now[0] = 10.9
    assert throttle.blocked("10.0.0.1")  # still within the backoff
    now[0] = 11.0
    assert not throttle.blocked("10.0.0.1")  # over: counting starts afresh
    throttle.failed("10.0.0.1")
    assert not throttle.blocked("10.0.0.1")
    # A backoff that ended with no new connection does not stop the next one from starting.
    for _ in range(4):
        throttle.failed("10.0.0.3")
    now[0] = 30.0
    for _ in range(4):
        throttle.failed("10.0.0.3")
    assert throttle.blocked("10.0.0.3")
    for _ in range(10):  # the host's own loopback addresses are never backed off
        for address in THROTTLE_EXEMPT:
            throttle.failed(address)
    assert not any(throttle.blocked(address) for address in THROTTLE_EXEMPT)
    for i in range(MAX_THROTTLED_ADDRESSES + 10):  # bounded memory
        throttle.failed(f"10.1.{i // 256}.{i % 256}")
    assert len(throttle._addresses) <= MAX_THROTTLED_ADDRESSES


@pytest.fixture
def throttled(tmp_path: Path) -> Iterator[Server]:
    with _serving(
        tmp_path,
        failures_per_second=TEST_FAILURES_PER_SECOND,
        failure_backoff=TEST_FAILURE_BACKOFF_SECONDS,
    ) as serving:
        yield serving


def _events(server: Server, kind: str) -> list[Event]:
    with open_store(server.paths.database_url) as store:
        return store.list_events(kind)


def _get_from(source: str, port: int, context: ssl.SSLContext, path: str) -> bytes:
    """GET ``path`` on a fresh TLS connection from ``source``; the status line."""
    with (
        socket.create_connection((LOOPBACK, port), timeout=10, source_address=(source, 0)) as raw,
        context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls,
    ):
        tls.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {SERVER_NAME}\r\nConnection: close\r\n\r\n".encode()
        )
        return tls.recv(65536).split(b"\r\n", 1)[0]


def _enroll_from(source: str, server: Server) -> None:
    """A legitimate enrollment on a fresh TLS connection from ``source``: 200."""
    body = csr_body()[0]
    head = (
        f"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: {SERVER_NAME}\r\n"
        f"Content-Type: application/pkcs10\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    address = (LOOPBACK, server.port)
    with (
        socket.create_connection(
            address, timeout=LEGIT_TIMEOUT_SECONDS, source_address=(source, 0)
        ) as raw,
        server.device.wrap_socket(raw, server_hostname=SERVER_NAME) as tls,
    ):
        tls.sendall(head.encode() + body)
        status = tls.recv(65536).split(b"\r\n", 1)[0]
    assert status == b"HTTP/1.1 200 OK", status


def _closed_before_tls(source: str, port: int, context: ssl.SSLContext) -> bool:
    """True when the server closes a new connection from ``source`` without a TLS handshake
    (no alert, no certificate: the client sees EOF or a reset)."""
    with socket.create_connection((LOOPBACK, port), timeout=10, source_address=(source, 0)) as raw:
        try:
            context.wrap_socket(raw, server_hostname=SERVER_NAME).close()
        except ssl.SSLError as exc:
            return "EOF" in str(exc) or "alert" not in str(exc).lower()
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def test_a_refused_flood_from_one_address_is_closed_at_accept_and_others_still_enroll(
    throttled: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    refusals.reset()
    server = throttled
    # Queued and issued before the flood: both must survive it.
    (rogue,) = _rogue_contexts(server, server.paths.data_dir.parent, 1)
    assert enroll(server.port, rogue, csr_body()[0], label="untrusted").status == 202
    _enroll_ok(server.port, server.device)
    refused = 0
    status = b""
    for _ in range(TEST_FAILURES_PER_SECOND + 1):
        status = _get_from(ATTACKER, server.port, server.device, "/.well-known/est/nosuchop")
        assert status == b"HTTP/1.1 404 Not Found", status
        refused += 1
    # Over the limit within a second: the next connection from that address is closed at once,
    # before TLS (no certificate sent, no request read)...
    assert _closed_before_tls(ATTACKER, server.port, server.device)
    assert any(
        f"{ATTACKER}: {TEST_FAILURES_PER_SECOND + 1} failed TLS handshakes or refused requests"
        in r.getMessage()
        and "its new connections get no TLS for" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
    # ...while a device on another address enrolls as usual.
    _enroll_from(DEVICE, server)
    # Every refusal that was answered is in the audit trail, and the backoff is one event of its
    # own; nothing issued or queued is lost.
    assert wait_for(lambda: _events(server, "throttled"), 10)
    (throttled,) = _events(server, "throttled")
    assert throttled.fields == {
        "peer": ATTACKER,
        "failures": TEST_FAILURES_PER_SECOND + 1,
        "backoff_seconds": TEST_FAILURE_BACKOFF_SECONDS,
    }
    with open_store(server.paths.database_url) as store:
        events = store.list_events("refused")
        assert len([e for e in events if e.fields.get("peer", "").startswith(ATTACKER)]) == refused
        assert len(store.list_issued()) == 2
        assert len(store.list_requests("pending")) == 1
    # The backoff ends: the address is served again.
    time.sleep(TEST_FAILURE_BACKOFF_SECONDS + 0.2)
    assert _get_from(ATTACKER, server.port, server.device, "/.well-known/est/cacerts").startswith(
        b"HTTP/1.1 200"
    )
    assert any(
        f"backoff of {ATTACKER} over: 1 new connections from it got no TLS" in r.getMessage()
        for r in caplog.records
    )


def test_a_handshake_flood_from_one_address_is_closed_at_accept(
    throttled: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="estkit.access")
    handshake_failures.reset()
    server = throttled
    weak = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    weak.check_hostname, weak.verify_mode = False, ssl.CERT_NONE
    weak.maximum_version = ssl.TLSVersion.TLSv1_2
    weak.set_ciphers("AES128-SHA")
    for _ in range(TEST_FAILURES_PER_SECOND + 1):
        with (
            socket.create_connection(
                (LOOPBACK, server.port), timeout=10, source_address=(ATTACKER, 0)
            ) as raw,
            pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"),
        ):
            weak.wrap_socket(raw, server_hostname=SERVER_NAME)  # refused with its alert
    # Now closed before the server reads the ClientHello: no alert, no access-log line.
    logged = len(caplog.records)
    assert _closed_before_tls(ATTACKER, server.port, weak)
    time.sleep(0.2)
    assert not [r for r in caplog.records[logged:] if "tls_handshake_failed" in r.getMessage()]
    # A device on another address still enrolls; a weak hello from it still gets its alert.
    _enroll_from(DEVICE, server)
    with (
        socket.create_connection(
            (LOOPBACK, server.port), timeout=10, source_address=(DEVICE, 0)
        ) as raw,
        pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"),
    ):
        weak.wrap_socket(raw, server_hostname=SERVER_NAME)


def _refuse_many(source: str, server: Server, context: ssl.SSLContext, count: int) -> None:
    """``count`` requests from ``source`` the server answers and refuses (404, audited)."""
    for _ in range(count):
        status = _get_from(source, server.port, context, "/.well-known/est/nosuchop")
        assert status == b"HTTP/1.1 404 Not Found", status


def test_refusals_relayed_by_a_trusted_ra_do_not_back_off_its_address(throttled: Server) -> None:
    """An RA is one address for all the devices behind it: the refusals it relays are theirs.
    An RA certificate the server does not trust, or one that was revoked, is throttled as any
    other client."""
    server = throttled
    directory = server.paths.data_dir.parent
    data_dir = server.paths.data_dir
    trusted = issue_ra_certificate(
        data_dir, "ra-trusted", directory / "ra.pem", directory / "ra.key"
    )
    issue_ra_certificate(
        data_dir, "ra-untrusted", directory / "ra2.pem", directory / "ra2.key", trust=False
    )
    ca = server.paths.ca_certificates
    ra = client_context(ca, directory / "ra.pem", directory / "ra.key")
    untrusted_ra = client_context(ca, directory / "ra2.pem", directory / "ra2.key")
    # Three times the limit within seconds, all answered: no backoff for the trusted RA...
    _refuse_many(ATTACKER, server, ra, 3 * (TEST_FAILURES_PER_SECOND + 1))
    assert not _closed_before_tls(ATTACKER, server.port, ra)
    assert not _events(server, "throttled")

    # ...and each refusal it relayed is still audited.
    def audited() -> int:
        events = _events(server, "refused")
        return len([e for e in events if e.fields.get("peer", "").startswith(ATTACKER + ":")])

    assert wait_for(lambda: audited() == 3 * (TEST_FAILURES_PER_SECOND + 1), 10), audited()
    # An RA certificate not in [ra] trusted: backed off like anyone.
    _refuse_many(DEVICE, server, untrusted_ra, TEST_FAILURES_PER_SECOND + 1)
    assert _closed_before_tls(DEVICE, server.port, untrusted_ra)
    # The trusted one, revoked: its refusals count again (403 now, for the revocation).
    with open_store(server.paths.database_url) as store:
        store.revoke(trusted.serial_number, "keyCompromise")
    third = "127.0.0.4"
    for _ in range(TEST_FAILURES_PER_SECOND + 1):
        status = _get_from(third, server.port, ra, "/.well-known/est/nosuchop")
        assert status.startswith(b"HTTP/1.1 4"), status
    assert _closed_before_tls(third, server.port, ra)
