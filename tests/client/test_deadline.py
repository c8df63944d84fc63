"""One overall deadline per exchange (issue 20 item 2): a trickling server cannot hold a client.

The server sends its headers with ``Content-Length: 100000`` at once and then one byte every 2 s;
a per-read timeout of 3 s never fires against it. Each test shows that the request reached the
server, that the server was still sending, and that the client gave up at its deadline.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from estkit.client import AsyncEstClient, EstClient, EstTimeoutError, RetryPolicy

from .hostile import TricklingServer
from .pki import QuirkyPki

DEADLINE = 3.0
# Scheduling slack on a loaded 2-core machine; the trickle alone would go on for 100000 x 2 s.
SLACK = 1.5
# One exchange: a timed-out attempt is otherwise repeated (tests/client/test_retry.py).
ONE_ATTEMPT = RetryPolicy(max_attempts=1)


@pytest.fixture
def trickler(pki: QuirkyPki) -> Iterator[TricklingServer]:
    with TricklingServer(pki.files["server_chain"], pki.files["server_key"]) as server:
        yield server


def _check_gave_up_at_deadline(server: TricklingServer, elapsed: float, message: str) -> None:
    assert server.requests == [b"GET /.well-known/est/cacerts HTTP/1.1"]
    assert server.bytes_sent >= 1, "the server never started trickling"
    assert DEADLINE - 0.2 <= elapsed <= DEADLINE + SLACK, elapsed
    assert f"overall deadline of {DEADLINE:g} s" in message


def test_sync_client_fails_at_the_overall_deadline(
    trickler: TricklingServer, pki: QuirkyPki
) -> None:
    client = EstClient(trickler.url, trust=pki.files["root"], timeout=DEADLINE, retry=ONE_ATTEMPT)
    start = time.monotonic()
    with client, pytest.raises(EstTimeoutError) as caught:
        client.cacerts()
    _check_gave_up_at_deadline(trickler, time.monotonic() - start, str(caught.value))


async def test_async_client_fails_at_the_overall_deadline(
    trickler: TricklingServer, pki: QuirkyPki
) -> None:
    start = time.monotonic()
    async with AsyncEstClient(
        trickler.url, trust=pki.files["root"], timeout=DEADLINE, retry=ONE_ATTEMPT
    ) as client:
        with pytest.raises(EstTimeoutError) as caught:
            await client.cacerts()
    _check_gave_up_at_deadline(trickler, time.monotonic() - start, str(caught.value))


def test_cli_timeout_is_the_whole_exchange(trickler: TricklingServer, pki: QuirkyPki) -> None:
    """`estkit client cacerts --timeout 3` in a real process, against the trickling server."""
    start = time.monotonic()
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "estkit.cli.main",
            "client",
            "cacerts",
            "--server",
            trickler.url,
            "--trust",
            str(pki.files["root"]),
            "--timeout",
            str(DEADLINE),
            "--max-attempts",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    elapsed = time.monotonic() - start
    assert process.returncode != 0
    assert "overall deadline of 3 s" in process.stderr, process.stderr
    assert "Traceback" not in process.stderr
    # Interpreter start-up adds to the wall time of a subprocess.
    assert elapsed <= DEADLINE + SLACK + 3.0, elapsed
    assert trickler.requests and trickler.bytes_sent >= 1
