"""Retry-After (RFC 9110 §10.2.3) for EST's 202 and 503 replies (RFC 7030 §4.2.3, checklist E8).

Why lenient parsing returning None: a client that cannot read the header falls back to its own
default wait instead of failing an enrollment that the server merely deferred.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# Digits beyond this are not a wait anyone means; also keeps int() on huge strings cheap.
_MAX_DELTA_DIGITS = 12
_MAX_HEADER_LENGTH = 256


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from ``now``, from delta-seconds or an HTTP-date; None when unusable.

    A date in the past gives 0. The caller clamps to its own maximum (MAX_RETRY_AFTER_SECONDS).
    """
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > _MAX_HEADER_LENGTH:
        return None
    if text.isascii() and text.isdigit():
        if len(text) > _MAX_DELTA_DIGITS:
            return None
        return float(int(text))
    if text.startswith("-") and text[1:].isascii() and text[1:].isdigit():
        return 0.0  # negative delta: nonsense, treat as "now"
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # HTTP-dates are GMT (RFC 9110 §5.6.7)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    try:
        seconds = (when - now).total_seconds()
    except OverflowError:
        return None
    return max(0.0, seconds)


def format_retry_after(seconds: float) -> str:
    """Integer delta-seconds, rounded up and at least 1 (0 would invite a busy loop)."""
    if not math.isfinite(seconds):
        raise ValueError(f"Retry-After must be a finite number of seconds, got {seconds!r}")
    return str(max(1, math.ceil(seconds)))


__all__ = ["format_retry_after", "parse_retry_after"]
