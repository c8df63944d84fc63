"""Retry-After parsing and formatting (checklist E8)."""

from __future__ import annotations

import datetime

import pytest

from estkit.protocol import format_retry_after, parse_retry_after

NOW = datetime.datetime(2015, 10, 21, 7, 28, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("5", 5.0),
        ("-3", 0.0),
        ("Wed, 21 Oct 2015 07:29:00 GMT", 60.0),  # IMF-fixdate
        ("Wednesday, 21-Oct-15 07:28:30 GMT", 30.0),  # obsolete RFC 850 form
        ("Wed Oct 21 07:28:10 2015", 10.0),  # asctime form
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),  # in the past
    ],
)
def test_parse_retry_after(value: str, expected: float) -> None:
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    "value", [None, "", "soon", "1.5", "12abc", "9" * 40, "Wed, 99 Foo 2015", "x" * 1000, "٣"]
)
def test_unusable_values_give_none(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


def test_naive_now_is_treated_as_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    assert parse_retry_after("Wed, 21 Oct 2015 07:29:00 GMT", naive) == 60.0


@pytest.mark.parametrize(
    ("seconds", "expected"), [(0, "1"), (0.2, "1"), (1, "1"), (1.2, "2"), (10, "10"), (-5, "1")]
)
def test_format_retry_after(seconds: float, expected: str) -> None:
    assert format_retry_after(seconds) == expected
    assert parse_retry_after(format_retry_after(seconds), NOW) == float(expected)


def test_format_refuses_non_finite() -> None:
    with pytest.raises(ValueError, match="finite"):
        format_retry_after(float("nan"))
