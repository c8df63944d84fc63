"""Bounds on the approval queue (issue 14, item 3): caps per requester, per source address and in
total, and expiry of requests nobody decided.

Why: under ``approval = "untrusted"`` anyone may queue a request, so a scanner presenting a fresh
self-signed certificate each time queued 300 requests (126 MB) in seconds. A repeat of a queued
request (same label, operation, public key and requester: RFC 7030 §4.2.3, the client polls with
the same CSR) is the same entry and never counts against a cap; a *new* request beyond a cap gets
``503`` with ``Retry-After`` and nothing is stored. Caps are read from ``[limits]`` each time.

Counting then inserting is not one transaction: requests racing in at the same moment (several
workers) may pass a cap by the number of requests in flight, never more.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import TYPE_CHECKING

from estkit.server.accesslog import address_of
from estkit.server.limits import ConnectionLimits
from estkit.server.refusal import Refusal
from estkit.server.state import ServerState

if TYPE_CHECKING:  # enroll.py calls this module; imported for the annotations only
    from estkit.protocol.csr import CsrInfo
    from estkit.server.enroll import EnrollmentRequest

# Seconds a client refused for a full queue waits before trying again: long enough that a flood
# is slowed to a trickle, short enough that a device gets in soon after an operator decides.
QUEUE_FULL_RETRY_AFTER_SECONDS = 600
# Seconds between sweeps for expired requests (one DELETE over the pending rows, per process).
EXPIRY_SWEEP_INTERVAL_SECONDS = 60.0

_sweeps: dict[int, float] = {}  # id(store) -> monotonic time of its last sweep
_sweeps_lock = threading.Lock()


def expire_old_requests(state: ServerState, limits: ConnectionLimits, now: dt.datetime) -> None:
    """Drop pending requests older than ``queue_expiry_days`` (at most once a minute)."""
    store = state.store
    clock = time.monotonic()
    with _sweeps_lock:
        last = _sweeps.get(id(store))
        if last is not None and clock - last < EXPIRY_SWEEP_INTERVAL_SECONDS:
            return
        _sweeps[id(store)] = clock
    store.expire_pending(now - dt.timedelta(days=limits.queue_expiry_days), now=now)


def check_queue_limits(
    state: ServerState, request: EnrollmentRequest, info: CsrInfo, requester: str
) -> None:
    """Raise 503 + Retry-After when queueing this request would pass a cap; a request already
    in the queue (a poll) always passes. Runs on the store's thread, from ``enroll._queue``."""
    limits = state.config.limits
    store = state.store
    expire_old_requests(state, limits, dt.datetime.now(dt.UTC))
    known = store.find_request(
        label=request.label or "",
        operation=request.operation,
        public_key_sha256=info.public_key_sha256,
        requester=requester,
    )
    peer = request.peer
    if known is not None:
        return  # a repeat: the same entry (or a decided one), nothing new is stored
    sources = store.pending_sources()
    address = address_of(peer)
    checks = (
        (len(sources), limits.queue_total, "queue_total", "the server"),
        (
            sum(1 for _, p in sources if address_of(p) == address),
            limits.queue_per_address,
            "queue_per_address",
            f"address {address}",
        ),
        (
            sum(1 for r, _ in sources if r == requester),
            limits.queue_per_requester,
            "queue_per_requester",
            "this requester",
        ),
    )
    for count, cap, name, whose in checks:
        if count >= cap:
            retry = str(QUEUE_FULL_RETRY_AFTER_SECONDS)
            raise Refusal(
                503,
                f"the approval queue is full for {whose}: {count} requests are waiting for an "
                f"operator ({name}={cap}); nothing was queued, retry after {retry} seconds or "
                "ask the operator to decide the pending requests",
                headers=[("Retry-After", retry)],
            )


__all__ = [
    "EXPIRY_SWEEP_INTERVAL_SECONDS",
    "QUEUE_FULL_RETRY_AFTER_SECONDS",
    "address_of",
    "check_queue_limits",
    "expire_old_requests",
]
