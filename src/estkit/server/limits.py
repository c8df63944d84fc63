"""Connection limits of the EST server: how long and how many, so slow or hostile clients cannot
starve the others (issue 6, "Nothing lost").

Why these limits and not just aiohttp's defaults: aiohttp keeps an idle keep-alive connection for
an hour, has no limit on how long a request head or body may take to arrive, and no cap on open
connections, so a few hundred slowloris clients could hold a small server's file descriptors for
as long as they like. An EST exchange is a few kilobytes that a device sends at once; these limits
are generous for that and tight for an attacker. All of them can be changed in the ``[limits]``
table of ``estkit.toml`` (``estkit.server.config.set_limits`` edits it).
"""

from __future__ import annotations

import math
import resource
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from estkit.errors import EstkitError

# Seconds from a connection's first byte (or, for a new connection, from the TLS handshake) until
# its request head (request line + headers, a few hundred bytes) must be complete. Apache's
# mod_reqtimeout and nginx's client_header_timeout default to 20 and 60 s for browsers on slow
# links; EST devices send their head in one segment, so 10 s is ample.
HEADER_TIMEOUT_SECONDS = 10.0
# Seconds for the whole request body once the head arrived. A CSR is at most 64 KiB
# (MAX_REQUEST_BODY_BYTES); even at 9600 bit/s that is under a minute, typical is milliseconds.
BODY_TIMEOUT_SECONDS = 30.0
# Bytes per second a request body must keep up once BODY_RATE_GRACE_SECONDS have passed (Apache
# mod_reqtimeout's MinRate default, 500): a body trickled at 1 byte every 2 s is cut off after the
# grace instead of holding its descriptor for the whole body_timeout.
BODY_MIN_RATE_BYTES_PER_SECOND = 500.0
# Seconds a body may take regardless of rate (a device on a slow link gets its first segments in).
BODY_RATE_GRACE_SECONDS = 5.0
# Seconds an idle keep-alive connection stays open between requests (aiohttp: one hour). nginx's
# keepalive_timeout is 75 s; devices enroll a few times a year, so there is nothing to keep warm.
IDLE_TIMEOUT_SECONDS = 30.0
# Seconds a TCP connection may take to complete its TLS handshake (asyncio's default: 60 s).
TLS_HANDSHAKE_TIMEOUT_SECONDS = 10.0
# Open connections per server process. When full, the oldest idle connection is closed to make
# room; if none is idle the new one is closed. 1000 keeps a process below the common soft
# `ulimit -n` of 1024 descriptors, with room left for the store, log and listening sockets.
MAX_CONNECTIONS = 1000
# Descriptors kept back from the connection budget for everything that is not a client
# connection: the store (SQLite file, WAL, shm, or PostgreSQL sockets), log files, the listening
# sockets, DNS-SD sockets, CA files read on reload, the event loop's self-pipe and epoll.
RESERVED_DESCRIPTORS = 64
# Connections the web console may hold: a few operators with browsers (about six connections
# each). Taken from the same process's descriptors, so an idle-connection flood on the console
# port cannot starve the EST port (issue 14, first attack).
CONSOLE_MAX_CONNECTIONS = 64
# Connections the plain-HTTP revocation listener may hold (revocation_http.py), when it is on:
# relying parties ask and go (idle ones are closed after idle_timeout and evicted first at the
# cap), and an answer costs tens of microseconds, so 512 slots serve thousands of answers a second.
# An eighth of the usable descriptors when they are few; taken from the EST port's share.
REVOCATION_MAX_CONNECTIONS = 512
# Smallest budget a listener gets even when RLIMIT_NOFILE is tiny (tests, odd containers).
MIN_CONNECTION_BUDGET = 16
# Ceiling on the raised soft RLIMIT_NOFILE when the hard limit is "unlimited".
NOFILE_CEILING = 65536
# Approval queue (BCP-003-03 S4 "manual"/"untrusted" labels): a requester, an address and the
# whole server may have at most this many requests waiting for an operator. One device asks for
# one certificate per label, so 4 per requester leaves room for a few labels; 20 per address lets
# a small gateway or test bench through while one scanner with fresh self-signed certificates
# cannot fill the queue (an earlier run: 300 x 202 in seconds); 1000 in total is more than any
# operator reviews. Beyond a cap the client gets 503 + Retry-After and nothing is queued.
QUEUE_PER_REQUESTER = 4
QUEUE_PER_ADDRESS = 20
QUEUE_TOTAL = 1000
# Days a pending request waits for a decision before it is dropped (the device, still polling,
# queues it again): a week covers a weekend and a holiday without keeping stale rows forever.
QUEUE_EXPIRY_DAYS = 7.0
# Failed TLS handshakes plus refused requests one source address may cause per second (per
# listener and worker process) before its new connections get no TLS work (held unread for
# guard.TARPIT_SECONDS, then closed) for failure_backoff seconds (as fail2ban or nginx's
# limit_req do). A device retries a refused request after seconds, so even a gateway of a few
# devices stays far below 20; a flood (one refused request costs ~2.5 ms of server CPU, a refused
# handshake ~0.15 ms) or a scanner reaches it at once: a flood of refused requests on a busy
# 2-core machine ran at 60 per second and worker, under any threshold much above 20. Addresses
# are what the server sees: a distributed attacker is not stopped by it, and devices behind an
# attacker's NAT address are closed out with it. The host's own loopback addresses are exempt
# (guard.THROTTLE_EXEMPT).
FAILURES_PER_SECOND = 20
# Seconds an address that went over failures_per_second gets no TLS work for its new
# connections. Long enough that a flood costs the server almost nothing (20 requests per backoff),
# short enough that a device behind the same address gets back in on its next retry.
FAILURE_BACKOFF_SECONDS = 10.0
# Largest request line / header field in bytes (aiohttp's and nginx's default, 8 KiB): EST
# headers are short; an Authorization: Digest header is a few hundred bytes.
MAX_HEADER_FIELD_BYTES = 8190
# Most header fields per request (aiohttp: 128). An EST request carries about ten.
MAX_HEADERS = 64


_WHOLE_NUMBERS = (
    "max_connections",
    "queue_per_requester",
    "queue_per_address",
    "queue_total",
    "failures_per_second",
)


class LimitsError(EstkitError, ValueError):
    """A ``[limits]`` value is not a positive number, or unknown; the message says which."""


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits one server process enforces (see the module constants for the reasoning)."""

    header_timeout: float = HEADER_TIMEOUT_SECONDS
    body_timeout: float = BODY_TIMEOUT_SECONDS
    idle_timeout: float = IDLE_TIMEOUT_SECONDS
    tls_handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT_SECONDS
    max_connections: int = MAX_CONNECTIONS
    body_min_rate: float = BODY_MIN_RATE_BYTES_PER_SECOND
    queue_per_requester: int = QUEUE_PER_REQUESTER
    queue_per_address: int = QUEUE_PER_ADDRESS
    queue_total: int = QUEUE_TOTAL
    queue_expiry_days: float = QUEUE_EXPIRY_DAYS
    failures_per_second: int = FAILURES_PER_SECOND
    failure_backoff: float = FAILURE_BACKOFF_SECONDS

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise LimitsError(f"limits.{item.name} must be a number, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise LimitsError(f"limits.{item.name} must be greater than 0, got {value!r}")
        for name in _WHOLE_NUMBERS:
            value = getattr(self, name)
            if int(value) != value:
                raise LimitsError(f"limits.{name} must be a whole number, got {value!r}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> ConnectionLimits:
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise LimitsError(
                f"unknown limit(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**dict(mapping))

    def to_mapping(self, *, only_changed: bool = False) -> dict[str, float | int]:
        """The TOML table; ``only_changed`` leaves out values equal to the defaults."""
        values = asdict(self)
        if only_changed:
            defaults = asdict(ConnectionLimits())
            values = {key: value for key, value in values.items() if value != defaults[key]}
        return values


def body_deadline(started: float, received: int, limits: ConnectionLimits) -> float:
    """Loop time by which a body that began arriving at ``started`` must be complete, having
    received ``received`` bytes so far: BODY_RATE_GRACE_SECONDS plus 1/body_min_rate s per byte
    received, never beyond body_timeout."""
    by_rate = started + BODY_RATE_GRACE_SECONDS + received / limits.body_min_rate
    return min(started + limits.body_timeout, by_rate)


_nofile: int | None = None


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (once per process); returns the soft limit.

    Why: many systems start services with a soft limit of 1024 and a much higher hard limit;
    the connection budget is derived from what the process may really open."""
    global _nofile
    if _nofile is None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = NOFILE_CEILING if hard == resource.RLIM_INFINITY else hard
        if soft == resource.RLIM_INFINITY:
            soft = NOFILE_CEILING
        if wanted > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
                soft = wanted
            except (ValueError, OSError):
                pass  # keep the soft limit; the budget follows it
        _nofile = soft
    return _nofile


def connection_budget(
    listener: str, nofile: int | None = None, *, revocation_listener: bool = False
) -> int:
    """Connections ``listener`` (``"est"``, ``"console"`` or ``"revocation"``) may hold in this
    process.

    The listeners share the process's descriptors: RESERVED_DESCRIPTORS stay for the store and
    logs, the console gets at most CONSOLE_MAX_CONNECTIONS (an eighth when descriptors are few),
    the revocation listener, when it is on (``revocation_listener``), at most
    REVOCATION_MAX_CONNECTIONS (an eighth too), and the EST port the rest, so none can take
    another's descriptors."""
    usable = (raise_nofile_limit() if nofile is None else nofile) - RESERVED_DESCRIPTORS
    console = max(MIN_CONNECTION_BUDGET, min(CONSOLE_MAX_CONNECTIONS, usable // 8))
    revocation = max(MIN_CONNECTION_BUDGET, min(REVOCATION_MAX_CONNECTIONS, usable // 8))
    if listener == "console":
        return console
    if listener == "revocation":
        return revocation
    return max(MIN_CONNECTION_BUDGET, usable - console - (revocation if revocation_listener else 0))


def within_budget(limits: ConnectionLimits, budget: int) -> ConnectionLimits:
    """``limits`` with max_connections lowered to ``budget`` when it is above it.

    Cached per (limits, budget): the guard asks for its limits several times per connection, and
    a fresh validated copy each time was ~6% of the server's CPU under a flood of refused TLS
    handshakes (issue 14)."""
    if limits.max_connections <= budget:
        return limits
    key = (id(limits), budget)
    cached = _lowered.get(key)
    if cached is None or cached[0] is not limits:
        if len(_lowered) >= _LOWERED_CACHE_SIZE:
            _lowered.clear()
        cached = (limits, replace(limits, max_connections=budget))
        _lowered[key] = cached
    return cached[1]


# (id(limits), budget) -> (limits, lowered copy); the limits object is kept so its id stays its
# own. A few entries: one per listener, and a new one when the configuration is reloaded.
_LOWERED_CACHE_SIZE = 16
_lowered: dict[tuple[int, int], tuple[ConnectionLimits, ConnectionLimits]] = {}


__all__ = [
    "BODY_MIN_RATE_BYTES_PER_SECOND",
    "BODY_RATE_GRACE_SECONDS",
    "BODY_TIMEOUT_SECONDS",
    "CONSOLE_MAX_CONNECTIONS",
    "FAILURES_PER_SECOND",
    "FAILURE_BACKOFF_SECONDS",
    "HEADER_TIMEOUT_SECONDS",
    "IDLE_TIMEOUT_SECONDS",
    "MAX_CONNECTIONS",
    "MAX_HEADERS",
    "MAX_HEADER_FIELD_BYTES",
    "QUEUE_EXPIRY_DAYS",
    "QUEUE_PER_ADDRESS",
    "QUEUE_PER_REQUESTER",
    "QUEUE_TOTAL",
    "RESERVED_DESCRIPTORS",
    "REVOCATION_MAX_CONNECTIONS",
    "TLS_HANDSHAKE_TIMEOUT_SECONDS",
    "ConnectionLimits",
    "LimitsError",
    "body_deadline",
    "connection_budget",
    "raise_nofile_limit",
    "within_budget",
]
