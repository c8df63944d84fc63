"""Renewal timing as pure functions (BCP-003-03 C12, C13, C14)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from estkit.nmos.schedule import (
    MAX_BACKOFF_SECONDS,
    Action,
    backoff_delay,
    plan_certificate,
    renewal_due_at,
    retry_after_failed_renewal,
    retry_after_same_root,
    validate_renewal_fraction,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)
NINETY_DAYS = timedelta(days=90)


def lifetime_elapsed(now: datetime, not_before: datetime, not_after: datetime) -> float:
    """Fraction (0.0 at notBefore, 1.0 at notAfter) of the validity period already used: the
    test's own yardstick, computed independently of the scheduler under test."""
    return (now - not_before) / (not_after - not_before)


def test_renewal_is_due_at_80_percent_of_the_lifetime_c13() -> None:
    assert renewal_due_at(T0, T0 + NINETY_DAYS) == T0 + timedelta(days=72)
    assert renewal_due_at(T0, T0 + NINETY_DAYS, 0.5) == T0 + timedelta(days=45)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.49, 1.0, 1.5])
def test_renewal_before_half_the_lifetime_or_at_expiry_is_refused_c13(fraction: float) -> None:
    with pytest.raises(ValueError, match="50%"):
        validate_renewal_fraction(fraction)


def test_backoff_doubles_from_one_second_and_is_capped_c12() -> None:
    assert [backoff_delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 32, 64]
    assert backoff_delay(0) == 0
    assert backoff_delay(1000) == MAX_BACKOFF_SECONDS


def test_failed_renewal_retries_after_half_the_remaining_validity_c13() -> None:
    not_after = T0 + NINETY_DAYS
    now = T0 + timedelta(days=72)
    assert retry_after_failed_renewal(now, not_after, 1) == now + timedelta(days=9)
    # Repeated failures keep halving: 18 days left -> 9 -> 4.5 ...
    later = now + timedelta(days=9)
    assert retry_after_failed_renewal(later, not_after, 2) == later + timedelta(days=4.5)


def test_failed_renewal_under_a_day_left_backs_off_from_one_second_c13() -> None:
    not_after = T0 + NINETY_DAYS
    now = not_after - timedelta(hours=20)
    delays = [
        (retry_after_failed_renewal(now, not_after, n) - now).total_seconds() for n in range(1, 5)
    ]
    assert delays == [1, 2, 4, 8]


def test_expired_certificate_means_start_over_now_c13() -> None:
    not_after = T0 + NINETY_DAYS
    now = not_after + timedelta(seconds=1)
    assert retry_after_failed_renewal(now, not_after, 3) == now
    plan = plan_certificate(now, T0, not_after)
    assert plan.action is Action.PROVISION and "expired" in plan.reason


def test_same_root_returned_retries_after_half_its_remaining_life_c14() -> None:
    root_end = T0 + timedelta(days=3650)
    now = T0 + timedelta(days=2920)  # 80% of ten years
    assert retry_after_same_root(now, root_end) == now + timedelta(days=365)


def test_plan_for_missing_not_yet_valid_due_and_waiting_certificates() -> None:
    assert plan_certificate(T0, None, None).action is Action.PROVISION
    assert (
        plan_certificate(T0, T0 + timedelta(hours=1), T0 + NINETY_DAYS).action is Action.PROVISION
    )
    waiting = plan_certificate(T0 + timedelta(days=10), T0, T0 + NINETY_DAYS)
    assert waiting.action is Action.WAIT and waiting.at == T0 + timedelta(days=72)
    due = plan_certificate(T0 + timedelta(days=72), T0, T0 + NINETY_DAYS)
    assert due.action is Action.RENEW


def test_a_retry_time_postpones_renewal_but_never_past_expiry() -> None:
    now = T0 + timedelta(days=73)
    retry = T0 + timedelta(days=81)
    plan = plan_certificate(now, T0, T0 + NINETY_DAYS, retry_at=retry)
    assert plan.action is Action.WAIT and plan.at == retry
    beyond = plan_certificate(now, T0, T0 + NINETY_DAYS, retry_at=T0 + timedelta(days=200))
    assert beyond.at == T0 + NINETY_DAYS


def test_a_year_of_renewals_happens_every_72_days_never_before_half_life() -> None:
    """Walk a year in one-hour steps, renewing whenever the plan says so."""
    not_before, not_after = T0, T0 + NINETY_DAYS
    renewals: list[datetime] = []
    now = T0
    while now < T0 + timedelta(days=365):
        plan = plan_certificate(now, not_before, not_after)
        if plan.action is Action.RENEW:
            assert lifetime_elapsed(now, not_before, not_after) >= 0.5
            renewals.append(now)
            not_before, not_after = now, now + NINETY_DAYS
        now += timedelta(hours=1)
    gaps = {(b - a) for a, b in itertools.pairwise(renewals)}
    assert renewals[0] == T0 + timedelta(days=72)
    assert gaps == {timedelta(days=72)}
    assert len(renewals) == 5
