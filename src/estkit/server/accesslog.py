"""Bounded logging under load: one structured access-log line per request and per failed TLS
handshake, and refusals logged at most once per interval with a count.

Why: a flood of refused requests wrote one warning line (and one store event) each, 603 MB in
one run. :class:`RateLimitedLog` is the one helper every refusal goes through (connection refused
at the cap, accept() out of descriptors, request refused by the application, queue caps): per
interval and kind it logs the first occurrence in full and counts the rest, reporting the count
with the next sample. The access log (logger ``estkit.access``) stays one short line per request
so an operator can still account for every connection; route or drop it with ordinary logging
configuration.

Lines are ``key=value`` pairs (values with spaces are quoted), greppable and machine-readable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

access_logger = logging.getLogger("estkit.access")
logger = logging.getLogger("estkit.server")

# At most one full refusal line per kind per this many seconds; the rest are counted and the
# count is reported with the next line. 10 s keeps an attack at a few lines a minute while a
# single refusal still shows at once.
REFUSAL_LOG_INTERVAL_SECONDS = 10.0
# Failed TLS handshakes logged per peer address per interval before they are only counted: a
# scanner probing versions and ciphers shows in full, a handshake flood (20k a minute in the
# issue-14 benchmark, 4 MB of log) costs a line per address per interval.
HANDSHAKE_LOG_BURST = 10
# Kinds a RateLimitedLog tracks at once (kinds may name peer addresses: bounded memory).
MAX_RATE_LIMITED_KINDS = 4096
# Longest value written into an access-log field: a hostile peer picks paths and SNI names.
MAX_FIELD_CHARS = 200


def _value(value: object) -> str:
    text = str(value)[:MAX_FIELD_CHARS]
    if not text:
        return "-"
    if any(c in text for c in ' "=\\') or not text.isprintable():
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in escaped) + '"'
    return text


def address_of(peer: str | None) -> str:
    """The host part of a peer as the server writes it (``1.2.3.4:5``, ``[::1]:5``)."""
    if not peer:
        return "unknown"
    if peer.startswith("["):
        return peer[1 : peer.find("]")] if "]" in peer else peer
    host, _, port = peer.rpartition(":")
    return host if host and port.isdigit() else peer


def format_fields(**fields: object) -> str:
    """``key=value`` pairs in the given order; None values are left out."""
    return " ".join(f"{key}={_value(value)}" for key, value in fields.items() if value is not None)


def access(event: str, **fields: object) -> None:
    """One access-log line: ``event`` then the fields (``request``, ``tls_handshake_failed``)."""
    if access_logger.isEnabledFor(logging.INFO):
        access_logger.info("%s %s", event, format_fields(**fields))


def access_handshake_failed(address: str, **fields: object) -> None:
    """The access-log line of a failed TLS handshake: HANDSHAKE_LOG_BURST per peer address per
    interval, then counted (``suppressed=N`` on the next line from that address)."""
    if not access_logger.isEnabledFor(logging.INFO):
        return
    suppressed = handshake_failures.admit(address)
    if suppressed is not None:
        access("tls_handshake_failed", **fields, suppressed=suppressed or None)


class RateLimitedLog:
    """Logs the first event of each kind per interval and counts the others (thread-safe: the
    console listener runs on its own thread)."""

    def __init__(
        self,
        target: logging.Logger,
        interval: float = REFUSAL_LOG_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        *,
        burst: int = 1,
    ) -> None:
        self._target = target
        self._interval = interval
        self._clock = clock
        self._burst = burst
        self._lock = threading.Lock()
        # kind -> [window start, events logged in it, events counted since the last logged one]
        self._windows: dict[str, list[float]] = {}

    def admit(self, kind: str) -> int | None:
        """None when this event is only counted; else how many of its kind were suppressed since
        the last logged one (the caller logs it, e.g. also to the store)."""
        now = self._clock()
        with self._lock:
            window = self._windows.get(kind)
            if window is None or now - window[0] >= self._interval:
                if window is None and len(self._windows) >= MAX_RATE_LIMITED_KINDS:
                    self._forget(now)
                suppressed = int(window[2]) if window else 0
                self._windows[kind] = [now, 1, 0]
                return suppressed
            if window[1] < self._burst:
                window[1] += 1
                suppressed, window[2] = int(window[2]), 0
                return suppressed
            window[2] += 1
            return None

    def _forget(self, now: float) -> None:
        """Bound the table (kinds may name peer addresses): drop finished windows, or all."""
        stale = [k for k, w in self._windows.items() if now - w[0] >= self._interval]
        for kind in stale:
            del self._windows[kind]
        if len(self._windows) >= MAX_RATE_LIMITED_KINDS:
            self._windows.clear()

    def reset(self) -> None:
        """Forget every interval and count (a test starting afresh)."""
        with self._lock:
            self._windows.clear()

    def log(self, kind: str, level: int, message: str, *args: object) -> bool:
        """Log ``message % args`` unless rate-limited; True when it was written."""
        suppressed = self.admit(kind)
        if suppressed is None:
            return False
        if suppressed:
            message += " (%d more %s since the last such message)"
            args = (*args, suppressed, kind)
        self._target.log(level, message, *args)
        return True


# The process's refusal log: every refusal goes through this one instance.
refusals = RateLimitedLog(logger)
handshake_failures = RateLimitedLog(access_logger, burst=HANDSHAKE_LOG_BURST)

__all__ = [
    "HANDSHAKE_LOG_BURST",
    "MAX_FIELD_CHARS",
    "MAX_RATE_LIMITED_KINDS",
    "REFUSAL_LOG_INTERVAL_SECONDS",
    "RateLimitedLog",
    "access",
    "access_handshake_failed",
    "address_of",
    "format_fields",
    "handshake_failures",
    "refusals",
]
