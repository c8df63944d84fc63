"""How long to wait after a 202 or 503, and when to give up (RFC 7030 §4.2.3, checklist E8, C10).

Why a separate, pure module: the decision ("wait 10 s because the server said so", "the server
asked for a day, wait at most an hour and say so") is the same for the sync and the async client
and must be testable without sleeping. The clients only carry it out with an injectable sleep.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from estkit.protocol import limits
from estkit.protocol.retry import parse_retry_after

# Re-exported so callers tune the client with names from the client package.
DEFAULT_MAX_ATTEMPTS = limits.DEFAULT_MAX_ATTEMPTS
MAX_RETRY_AFTER_SECONDS = limits.MAX_RETRY_AFTER_SECONDS
DEFAULT_RETRY_AFTER_SECONDS = limits.DEFAULT_RETRY_AFTER_SECONDS

# Statuses that mean "ask again later" rather than "no".
RETRY_STATUSES = (202, 503)

WaitCallback = Callable[[int, float, str], None]
"""``on_wait(attempt, seconds, reason)``: called before each wait, e.g. to show progress."""

Sleep = Callable[[float], None]
AsyncSleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds on polling: how many requests in all, and the longest single wait."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_retry_after: float = MAX_RETRY_AFTER_SECONDS
    default_retry_after: float = DEFAULT_RETRY_AFTER_SECONDS

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if self.max_retry_after < 0 or self.default_retry_after < 0:
            raise ValueError("retry waits cannot be negative")


@dataclass(frozen=True)
class WaitDecision:
    """One wait before the next attempt, with the reason a person would want to read."""

    seconds: float
    reason: str
    clamped: bool
    server_value: str | None


_STATUS_WORDS = {202: "202 Accepted (request pending)", 503: "503 Service Unavailable"}


def decide_wait(
    status: int, retry_after: str | None, now: datetime, policy: RetryPolicy
) -> WaitDecision:
    """The wait the server asked for, or the default when it gave none, clamped to the policy.

    A ``Retry-After`` longer than ``policy.max_retry_after`` is clamped (and the reason says so)
    so a misconfigured server cannot park a client for days.
    """
    what = _STATUS_WORDS.get(status, str(status))
    asked = parse_retry_after(retry_after, now)
    if asked is None:
        seconds = min(policy.default_retry_after, policy.max_retry_after)
        if retry_after is None:
            reason = f"server answered {what} without Retry-After; waiting {seconds:g} s"
        else:
            reason = (
                f"server answered {what} with an unreadable Retry-After {retry_after!r}; "
                f"waiting the default {seconds:g} s"
            )
        return WaitDecision(seconds, reason, False, retry_after)
    if asked > policy.max_retry_after:
        seconds = policy.max_retry_after
        reason = (
            f"server answered {what} with Retry-After {retry_after!r} ({asked:g} s), more than "
            f"the maximum {policy.max_retry_after:g} s; waiting {seconds:g} s instead"
        )
        return WaitDecision(seconds, reason, True, retry_after)
    reason = f"server answered {what}; waiting {asked:g} s as its Retry-After asks"
    return WaitDecision(asked, reason, False, retry_after)
