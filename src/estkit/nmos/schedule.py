"""When to renew and when to retry: pure functions over times, no I/O, no clock of their own.

Why pure: BCP-003-03's timing rules (C12-C14) are where a fleet of devices either renews quietly or
hammers its EST server at the same second. Keeping them as plain functions of "now" and the
certificate's validity lets tests walk through months of renewals and retries in milliseconds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

# C13: renewal is RECOMMENDED at 80% of the certificate's lifetime ...
DEFAULT_RENEWAL_FRACTION = 0.8
# ... and MUST NOT happen before 50% of it (earlier renewal only churns keys and the CA's store).
MIN_RENEWAL_FRACTION = 0.5
# Renewing at 100% would mean running on an expired certificate: refuse fractions that high.
MAX_RENEWAL_FRACTION = 0.99
# C12/C13: "exponential backoff starting at 1 second".
BACKOFF_INITIAL_SECONDS = 1.0
# The spec sets no ceiling; without one a node down for a weekend would wait days after the
# network came back. 15 minutes keeps a dead server's load tiny while recovering quickly.
MAX_BACKOFF_SECONDS = 15 * 60.0
# C13: below one day of validity left, stop halving and back off exponentially instead.
SHORT_REMAINING_VALIDITY = timedelta(days=1)


def validate_renewal_fraction(fraction: float) -> float:
    """Return ``fraction`` if it respects C13's window, else raise ``ValueError`` saying why."""
    if not MIN_RENEWAL_FRACTION <= fraction <= MAX_RENEWAL_FRACTION:
        raise ValueError(
            f"renewal fraction {fraction} is outside "
            f"{MIN_RENEWAL_FRACTION}..{MAX_RENEWAL_FRACTION}: "
            "BCP-003-03 forbids renewing before 50% of the lifetime and recommends 0.8"
        )
    return fraction


def renewal_due_at(
    not_before: datetime, not_after: datetime, fraction: float = DEFAULT_RENEWAL_FRACTION
) -> datetime:
    """The moment at ``fraction`` of the lifetime (C13 for leaf certificates, C14 for roots)."""
    validate_renewal_fraction(fraction)
    return not_before + (not_after - not_before) * fraction


def backoff_delay(failures: int) -> float:
    """Seconds to wait after ``failures`` consecutive failures: 1, 2, 4, ... capped (C12)."""
    if failures < 1:
        return 0.0
    # Cap the exponent before computing so a long outage cannot overflow the float.
    exponent = min(failures - 1, 32)
    return min(BACKOFF_INITIAL_SECONDS * (2.0**exponent), MAX_BACKOFF_SECONDS)


def retry_after_failed_renewal(now: datetime, not_after: datetime, failures: int) -> datetime:
    """When to try again after a failed renewal, keeping the current certificate meanwhile (C13).

    Half the remaining validity while more than a day remains; exponential backoff from 1 s
    below that. An already expired certificate gets ``now``: the caller must start over with
    initial provisioning instead of renewing.
    """
    remaining = not_after - now
    if remaining <= timedelta(0):
        return now
    if remaining < SHORT_REMAINING_VALIDITY:
        return now + timedelta(seconds=backoff_delay(max(failures, 1)))
    return now + remaining / 2


def retry_after_same_root(now: datetime, root_not_after: datetime) -> datetime:
    """C14: the server returned the root we already hold; retry after half its remaining life."""
    remaining = root_not_after - now
    if remaining <= timedelta(0):
        return now
    return now + remaining / 2


class Action(enum.Enum):
    """What the agent should do for one certificate."""

    PROVISION = "provision"  # nothing usable: initial enrollment with the manufacturer certificate
    RENEW = "renew"  # valid but due: /simplereenroll presenting the certificate itself
    WAIT = "wait"  # nothing to do before ``at``


@dataclass(frozen=True)
class Plan:
    action: Action
    at: datetime
    reason: str


def plan_certificate(
    now: datetime,
    not_before: datetime | None,
    not_after: datetime | None,
    *,
    fraction: float = DEFAULT_RENEWAL_FRACTION,
    retry_at: datetime | None = None,
) -> Plan:
    """Decide the next action for one certificate (None dates = no certificate installed).

    ``retry_at`` is the time chosen after the last failure; it postpones the action but never
    past the certificate's expiry, where initial provisioning takes over (C13).
    """
    if not_before is None or not_after is None:
        at = retry_at if retry_at is not None and retry_at > now else now
        return Plan(Action.PROVISION, at, "no certificate installed")
    if now >= not_after:
        at = retry_at if retry_at is not None and retry_at > now else now
        return Plan(Action.PROVISION, at, "certificate expired: starting over")
    if now < not_before:
        # C9: a certificate that is not yet valid is unusable; treat it like a missing one.
        return Plan(Action.PROVISION, now, "certificate not yet valid")
    due = renewal_due_at(not_before, not_after, fraction)
    if retry_at is not None and retry_at > due:
        due = min(retry_at, not_after)
    if now >= due:
        return Plan(Action.RENEW, now, f"{fraction:.0%} of the lifetime reached")
    return Plan(Action.WAIT, due, "renewal scheduled")
