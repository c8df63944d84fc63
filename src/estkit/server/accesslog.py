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


def format_fields(**fields: object) -> str:
    """``key=value`` pairs in the given order; None values are left out."""
    return " ".join(f"{key}={_value(value)}" for key, value in fields.items() if value is not None)


def access(event: str, **fields: object) -> None:
    """One access-log line: ``event`` then the fields (``request``, ``tls_handshake_failed``)."""
    if access_logger.isEnabledFor(logging.INFO):
        access_logger.info("%s %s", event, format_fields(**fields))


class RateLimitedLog:
    """Logs the first event of each kind per interval and counts the others (thread-safe: the
    console listener runs on its own thread)."""

    def __init__(
        self,
        target: logging.Logger,
        interval: float = REFUSAL_LOG_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._target = target
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def admit(self, kind: str) -> int | None:
        """None when this event is only counted; else how many of its kind were suppressed since
        the last logged one (the caller logs it, e.g. also to the store)."""
        now = self._clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self._interval:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return None
            self._last[kind] = now
            return self._suppressed.pop(kind, 0)

    def reset(self) -> None:
        """Forget every interval and count (a test starting afresh)."""
        with self._lock:
            self._last.clear()
            self._suppressed.clear()

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

__all__ = [
    "MAX_FIELD_CHARS",
    "REFUSAL_LOG_INTERVAL_SECONDS",
    "RateLimitedLog",
    "access",
    "format_fields",
    "refusals",
]
