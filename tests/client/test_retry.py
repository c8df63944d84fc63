"""202/503 with Retry-After (RFC 7030 §4.2.3, checklist E8, BCP-003-03 C10).

The decision is tested as a pure function; the behaviour over real TLS against quirky servers
that defer, with an injected sleep so no test waits for real.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from estkit.client import (
    AsyncEstClient,
    CsrSpec,
    EstClient,
    EstConnectionError,
    EstError,
    EstRetryLaterError,
    EstTimeoutError,
    RetryPolicy,
)
from estkit.client.retry import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RETRY_AFTER_SECONDS,
    MAX_RETRY_AFTER_SECONDS,
    decide_wait,
)
from estkit.protocol import build_certs_only, decode_csr_body, encode_base64_body

from .conftest import SleepRecorder
from .pki import QuirkyPki
from .quirky import Canned, QuirkyServer, Recorded

ENROLL = "/.well-known/est/simpleenroll"
CACERTS = "/.well-known/est/cacerts"
# Whole seconds, as HTTP-dates have; near the real time so issued certificates are valid.
NOW = datetime.now(UTC).replace(microsecond=0)

Start = Callable[..., QuirkyServer]


# --- the pure decision ------------------------------------------------------------------------


def test_named_defaults_are_sane() -> None:
    assert DEFAULT_MAX_ATTEMPTS >= 2
    assert 0 < DEFAULT_RETRY_AFTER_SECONDS <= MAX_RETRY_AFTER_SECONDS


def test_delta_seconds_are_honoured() -> None:
    decision = decide_wait(202, "7", NOW, RetryPolicy())
    assert decision.seconds == 7
    assert not decision.clamped
    assert "202" in decision.reason and "7" in decision.reason


def test_http_date_is_converted_to_a_delay() -> None:
    when = format_datetime(NOW + timedelta(seconds=42), usegmt=True)
    decision = decide_wait(503, when, NOW, RetryPolicy())
    assert decision.seconds == pytest.approx(42)
    assert "503" in decision.reason


def test_missing_retry_after_uses_the_default() -> None:
    decision = decide_wait(202, None, NOW, RetryPolicy(default_retry_after=3))
    assert decision.seconds == 3
    assert "without Retry-After" in decision.reason


def test_unreadable_retry_after_uses_the_default_and_says_so() -> None:
    decision = decide_wait(202, "soon-ish", NOW, RetryPolicy(default_retry_after=4))
    assert decision.seconds == 4
    assert "unreadable" in decision.reason and "soon-ish" in decision.reason


def test_absurd_retry_after_is_clamped_and_reported() -> None:
    decision = decide_wait(202, "99999999", NOW, RetryPolicy(max_retry_after=60))
    assert decision.seconds == 60
    assert decision.clamped
    assert "more than the maximum 60" in decision.reason


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(max_attempts=0)


# --- over the wire ------------------------------------------------------------------------------


def _issue(pki: QuirkyPki) -> Callable[[Recorded], Canned]:
    def handle(request: Recorded) -> Canned:
        csr = decode_csr_body(request.body)
        cert = pki.issue(csr.public_key(), "slow.example")
        body = encode_base64_body(build_certs_only([cert]))
        return Canned(200, [("Content-Type", "application/pkcs7-mime")], body)

    return handle


def _deferring(pki: QuirkyPki, answers: list[Canned]) -> Callable[[Recorded], Canned]:
    """Serve ``answers`` in turn, then issue."""
    issue = _issue(pki)

    def handle(request: Recorded) -> Canned:
        if answers:
            return answers.pop(0)
        return issue(request)

    return handle


def _spec() -> CsrSpec:
    return CsrSpec(key=ec.generate_private_key(ec.SECP256R1()), common_name="slow.example")


def test_202_with_http_date_then_issued(
    pki: QuirkyPki, quirky: Start, sleeper: SleepRecorder
) -> None:
    when = format_datetime(NOW + timedelta(seconds=30), usegmt=True)
    server = quirky(
        {ENROLL: _deferring(pki, [Canned(202, [("Retry-After", when)], b"pending approval")])}
    )
    with EstClient(
        server.url,
        trust=pki.files["root"],
        sleep=sleeper,
        clock=lambda: NOW,
        on_wait=sleeper.on_wait,
    ) as client:
        result = client.simpleenroll(_spec(), pop=False)
    assert server.paths() == [ENROLL, ENROLL]
    assert sleeper.waits == [pytest.approx(30)]
    assert sleeper.progress[0][0] == 1 and "202" in sleeper.progress[0][2]
    assert result.attempts == 2
    # The same CSR (same key) is sent again: the server finds its pending request by key.
    assert server.requests[0].body == server.requests[1].body


def test_503_is_retried_for_cacerts(pki: QuirkyPki, quirky: Start, sleeper: SleepRecorder) -> None:
    cacerts = Canned(
        200,
        [("Content-Type", "application/pkcs7-mime")],
        encode_base64_body(build_certs_only([pki.root])),
    )
    server = quirky({CACERTS: [Canned(503, [("Retry-After", "2")], b"busy"), cacerts]})
    with EstClient(server.url, trust=pki.files["root"], sleep=sleeper) as client:
        result = client.cacerts()
    assert server.paths() == [CACERTS, CACERTS]
    assert sleeper.waits == [2]
    assert result.certificates == [pki.root]


def test_absurd_retry_after_is_clamped_on_the_wire(
    pki: QuirkyPki, quirky: Start, sleeper: SleepRecorder
) -> None:
    server = quirky({ENROLL: _deferring(pki, [Canned(202, [("Retry-After", "86400000")])])})
    with EstClient(
        server.url,
        trust=pki.files["root"],
        sleep=sleeper,
        retry=RetryPolicy(max_retry_after=5),
    ) as client:
        result = client.simpleenroll(_spec(), pop=False)
    assert sleeper.waits == [5]
    assert any("more than the maximum 5" in warning for warning in result.warnings)


def test_missing_retry_after_waits_the_default(
    pki: QuirkyPki, quirky: Start, sleeper: SleepRecorder
) -> None:
    server = quirky({ENROLL: _deferring(pki, [Canned(202)])})
    with EstClient(server.url, trust=pki.files["root"], sleep=sleeper) as client:
        client.simpleenroll(_spec(), pop=False)
    assert sleeper.waits == [DEFAULT_RETRY_AFTER_SECONDS]


def test_attempts_are_bounded(pki: QuirkyPki, quirky: Start, sleeper: SleepRecorder) -> None:
    server = quirky({ENROLL: Canned(202, [("Retry-After", "3")], b"still waiting for Bob")})
    with (
        EstClient(
            server.url, trust=pki.files["root"], sleep=sleeper, retry=RetryPolicy(max_attempts=3)
        ) as client,
        pytest.raises(EstRetryLaterError) as caught,
    ):
        client.simpleenroll(_spec(), pop=False)
    assert server.paths() == [ENROLL] * 3
    assert sleeper.waits == [3, 3]
    error = caught.value
    assert error.attempts == 3 and error.retry_after == 3 and error.status == 202
    assert "still waiting for Bob" in error.server_text
    assert "try again in 3" in str(error)


async def test_async_client_polls_the_same_way(
    pki: QuirkyPki, quirky: Start, sleeper: SleepRecorder
) -> None:
    server = quirky({ENROLL: _deferring(pki, [Canned(503, [("Retry-After", "1")])] * 2)})
    async with AsyncEstClient(
        server.url, trust=pki.files["root"], sleep=sleeper.asleep, on_wait=sleeper.on_wait
    ) as client:
        result = await client.simpleenroll(_spec(), pop=False)
    assert server.paths() == [ENROLL] * 3
    assert sleeper.waits == [1, 1]
    assert [attempt for attempt, _s, _r in sleeper.progress] == [1, 2]
    assert result.attempts == 3


# --- timeouts are retried like 202/503 (issue 15, item 5) ---------------------------------------

# The client's whole-exchange timeout in these tests, and how long a stalled answer is held back:
# well past the timeout, and released when the test ends so no thread lingers.
TIMEOUT_SECONDS = 0.5
STALL_SECONDS = 10.0


class _Staller:
    """Holds back the answers to the first ``stalls`` POSTs past the client's timeout, then
    answers (issues) normally; records how many POSTs arrived."""

    def __init__(self, pki: QuirkyPki, stalls: int) -> None:
        self.stalls = stalls
        self.released = threading.Event()
        self.issue = _issue(pki)

    def __call__(self, request: Recorded) -> Canned:
        if self.stalls > 0:
            self.stalls -= 1
            self.released.wait(STALL_SECONDS)
            return Canned(503, [], b"too late")
        return self.issue(request)


@pytest.fixture
def staller(pki: QuirkyPki) -> Iterator[Callable[[int], _Staller]]:
    made: list[_Staller] = []

    def make(stalls: int) -> _Staller:
        made.append(_Staller(pki, stalls))
        return made[-1]

    yield make
    for item in made:
        item.released.set()


def test_a_timed_out_post_is_sent_again_after_the_default_wait(
    pki: QuirkyPki, quirky: Start, sleeper: SleepRecorder, staller: Callable[[int], _Staller]
) -> None:
    server = quirky({ENROLL: staller(1)})
    with EstClient(
        server.url,
        trust=pki.files["root"],
        sleep=sleeper,
        on_wait=sleeper.on_wait,
        timeout=TIMEOUT_SECONDS,
    ) as client:
        result = client.simpleenroll(_spec(), pop=False)
    assert server.paths() == [ENROLL, ENROLL]
    # The same CSR (same key): a server that queued the first one recognises the second.
    assert server.requests[0].body == server.requests[1].body
    assert sleeper.waits == [DEFAULT_RETRY_AFTER_SECONDS]
    assert "no answer in time" in sleeper.progress[0][2]
    assert result.attempts == 2
    assert result.certificate.public_key() == decode_csr_body(server.requests[1].body).public_key()


def test_the_last_attempts_timeout_is_raised(
    pki: QuirkyPki, quirky: Start, sleeper: SleepRecorder, staller: Callable[[int], _Staller]
) -> None:
    server = quirky({ENROLL: staller(2)})
    with (
        EstClient(
            server.url,
            trust=pki.files["root"],
            sleep=sleeper,
            timeout=TIMEOUT_SECONDS,
            retry=RetryPolicy(max_attempts=2, default_retry_after=1),
        ) as client,
        pytest.raises(EstTimeoutError) as caught,
    ):
        client.simpleenroll(_spec(), pop=False)
    assert server.paths() == [ENROLL, ENROLL]
    assert sleeper.waits == [1]
    assert "no answer in 2 attempts" in str(caught.value)


async def test_async_client_retries_a_timeout_the_same_way(
    pki: QuirkyPki, quirky: Start, sleeper: SleepRecorder, staller: Callable[[int], _Staller]
) -> None:
    server = quirky({ENROLL: staller(1)})
    async with AsyncEstClient(
        server.url, trust=pki.files["root"], sleep=sleeper.asleep, timeout=TIMEOUT_SECONDS
    ) as client:
        result = await client.simpleenroll(_spec(), pop=False)
    assert server.paths() == [ENROLL, ENROLL]
    assert server.requests[0].body == server.requests[1].body
    assert sleeper.waits == [DEFAULT_RETRY_AFTER_SECONDS]
    assert result.attempts == 2


def test_a_refused_connection_is_not_retried(pki: QuirkyPki, sleeper: SleepRecorder) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (
        EstClient(f"https://127.0.0.1:{port}", trust=pki.files["root"], sleep=sleeper) as client,
        pytest.raises(EstConnectionError) as caught,
    ):
        client.simpleenroll(_spec(), pop=False)
    assert not isinstance(caught.value, EstTimeoutError)
    assert sleeper.waits == []


def test_a_403_is_not_retried(pki: QuirkyPki, quirky: Start, sleeper: SleepRecorder) -> None:
    server = quirky({ENROLL: Canned(403, [("Content-Type", "text/plain")], b"not you")})
    with (
        EstClient(server.url, trust=pki.files["root"], sleep=sleeper) as client,
        pytest.raises(EstError) as caught,
    ):
        client.simpleenroll(_spec(), pop=False)
    assert server.paths() == [ENROLL]
    assert sleeper.waits == []
    assert "not you" in str(caught.value)
