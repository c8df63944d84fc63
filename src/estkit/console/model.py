"""What the console pages show, computed from store records without any I/O or HTML.

Why separate from the views: filtering, sorting and the dashboard figures are the parts worth
testing on their own, and the same functions feed both the full page and the live-refresh JSON.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from cryptography import x509

# "Soon to expire": a month gives an operator time to notice a node whose renewal agent is stuck.
EXPIRY_WARNING_DAYS = 30
ISSUED_CHART_DAYS = 14
REFUSAL_WINDOW_DAYS = 7
# Tables stop here; the operator narrows the search instead of scrolling a browser to death.
MAX_TABLE_ROWS = 200
MAX_DASHBOARD_ROWS = 10
MAX_QUERY_LENGTH = 200
RECENT_DECISIONS = 20
MAX_REASON_LENGTH = 140

STATUS_FILTERS = ("", "valid", "revoked", "expired")
SORT_ORDERS = {
    "expiry": "expiry, soonest first",
    "-expiry": "expiry, latest first",
    "-issued": "most recently issued",
    "subject": "subject",
}
DEFAULT_SORT = "expiry"


def as_utc(value: dt.datetime | str | None) -> dt.datetime | None:
    """Store timestamps are aware UTC datetimes by contract; accept ISO text defensively."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def humanize_duration(seconds: float) -> str:
    """``42 s``, ``5 min``, ``3 h``, ``12 d``: short enough for a table cell."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


@lru_cache(maxsize=4096)
def certificate_names(certificate_pem: str) -> tuple[str | None, tuple[str, ...]]:
    """Common name and SANs of an issued certificate (cached: certificates never change)."""
    try:
        cert = x509.load_pem_x509_certificate(certificate_pem.encode())
    except ValueError:
        return None, ()
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    common_name = str(cns[0].value) if cns else None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return common_name, ()
    names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return common_name, tuple(names)


@dataclass(frozen=True)
class CertRow:
    """An issued-certificate record plus what the table needs to show and filter on."""

    record: Any  # estkit.ca.store.IssuedRecord
    common_name: str | None
    sans: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    expired: bool

    @property
    def display_status(self) -> str:
        if self.record.status == "revoked":
            return "revoked"
        return "expired" if self.expired else "valid"

    @property
    def issued_at(self) -> dt.datetime:
        """When the store recorded the issuance (notBefore is backdated for clock skew)."""
        return as_utc(self.record.issued_at) or self.not_before

    def seconds_left(self, now: dt.datetime) -> float:
        return (self.not_after - now).total_seconds()


def cert_rows(records: Iterable[Any], now: dt.datetime) -> list[CertRow]:
    rows = []
    for record in records:
        common_name, sans = certificate_names(record.certificate_pem or "")
        not_before = as_utc(record.not_before) or now
        not_after = as_utc(record.not_after) or now
        rows.append(CertRow(record, common_name, sans, not_before, not_after, not_after <= now))
    return rows


@dataclass(frozen=True)
class CertificateQuery:
    """The certificates page's search form, validated (unknown values fall back to defaults)."""

    q: str = ""
    status: str = ""
    label: str = ""
    key_type: str = ""
    sort: str = DEFAULT_SORT

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> CertificateQuery:
        status = params.get("status", "")
        sort = params.get("sort", DEFAULT_SORT)
        return cls(
            q=params.get("q", "").strip()[:MAX_QUERY_LENGTH],
            status=status if status in STATUS_FILTERS else "",
            label=params.get("label", "")[:MAX_QUERY_LENGTH],
            key_type=params.get("key_type", "")[:MAX_QUERY_LENGTH],
            sort=sort if sort in SORT_ORDERS else DEFAULT_SORT,
        )


def _normalise_serial(text: str) -> str:
    return text.lower().replace(":", "").replace(" ", "").removeprefix("0x").lstrip("0")


def matches_search(row: CertRow, q: str) -> bool:
    """Case-insensitive substring of subject, CN or a SAN; or a serial (colons, 0x tolerated)."""
    if not q:
        return True
    needle = q.lower()
    haystacks = [row.record.subject or "", row.common_name or "", *row.sans]
    if any(needle in h.lower() for h in haystacks):
        return True
    serial = _normalise_serial(q)
    return bool(serial) and serial in str(row.record.serial).lower()


def filter_certificates(rows: Sequence[CertRow], query: CertificateQuery) -> list[CertRow]:
    selected = [
        row
        for row in rows
        if matches_search(row, query.q)
        and (not query.status or row.display_status == query.status)
        and (not query.label or (row.record.label or "") == query.label)
        and (not query.key_type or row.record.key_type == query.key_type)
    ]
    if query.sort == "expiry":
        selected.sort(key=lambda r: r.not_after)
    elif query.sort == "-expiry":
        selected.sort(key=lambda r: r.not_after, reverse=True)
    elif query.sort == "-issued":
        selected.sort(key=lambda r: r.issued_at, reverse=True)
    else:
        selected.sort(
            key=lambda r: ((r.common_name or r.record.subject or "").lower(), r.not_after)
        )
    return selected


def facet_values(rows: Iterable[CertRow]) -> tuple[list[str], list[str]]:
    """Labels and key types present in the store, for the filter drop-downs."""
    labels = sorted({row.record.label or "" for row in rows})
    key_types = sorted({row.record.key_type for row in rows if row.record.key_type})
    return labels, key_types


@dataclass(frozen=True)
class DashboardStats:
    pending: int
    valid: int
    revoked: int
    expired: int
    expiring: list[CertRow]
    expiring_total: int
    issued_per_day: list[tuple[dt.date, int]]
    refusals: list[tuple[str, int]]
    refusals_total: int
    recent_events: list[Any] = field(default_factory=list)


def issued_per_day(rows: Iterable[CertRow], today: dt.date, days: int) -> list[tuple[dt.date, int]]:
    """Certificates issued on each of the last ``days`` days (UTC), oldest first, zeros included.

    Counted by the store's issue time, not notBefore, which the CA backdates for clock skew.
    """
    counts = Counter(row.issued_at.date() for row in rows)
    first = today - dt.timedelta(days=days - 1)
    return [(day, counts.get(day, 0)) for day in (first + dt.timedelta(n) for n in range(days))]


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_LONG_HEX = re.compile(r"\b(?:[0-9A-Fa-f]{2}:){7,}[0-9A-Fa-f]{2}\b|\b[0-9A-Fa-f]{16,}\b")
_BIG_NUMBER = re.compile(r"\b\d{3,}\b")


def refusal_key(event: Any) -> str:
    """Group refusals by reason: the HTTP status and the first clause of the message.

    Refusal messages say what was wrong, then (after ';') what to do, often with names and
    serials that would make every refusal its own group.
    """
    fields = getattr(event, "fields", None) or {}
    status = fields.get("status") if isinstance(fields, Mapping) else None
    message = str(getattr(event, "message", "") or "").split(";")[0].strip() or "unknown"
    # Quoted names (labels, CNs), serials/fingerprints and sizes/offsets differ per request.
    message = _QUOTED.sub("'…'", message)
    message = _LONG_HEX.sub("…", message)
    message = _BIG_NUMBER.sub("N", message)
    if len(message) > MAX_REASON_LENGTH:
        message = message[: MAX_REASON_LENGTH - 1] + "…"
    return f"{status} · {message}" if status else message


def event_time(event: Any) -> dt.datetime | None:
    for name in ("created_at", "time", "timestamp", "at"):
        value = getattr(event, name, None)
        if value is not None:
            return as_utc(value)
    return None


def dashboard_stats(
    rows: Sequence[CertRow],
    pending: int,
    refusal_events: Iterable[Any],
    recent_events: Sequence[Any],
    now: dt.datetime,
) -> DashboardStats:
    live = [r for r in rows if r.display_status == "valid"]
    horizon = now + dt.timedelta(days=EXPIRY_WARNING_DAYS)
    expiring = sorted((r for r in live if r.not_after <= horizon), key=lambda r: r.not_after)
    since = now - dt.timedelta(days=REFUSAL_WINDOW_DAYS)
    reasons: Counter[str] = Counter()
    for event in refusal_events:
        when = event_time(event)
        if when is None or when >= since:
            reasons[refusal_key(event)] += 1
    return DashboardStats(
        pending=pending,
        valid=len(live),
        revoked=sum(1 for r in rows if r.display_status == "revoked"),
        expired=sum(1 for r in rows if r.display_status == "expired"),
        expiring=expiring[:MAX_DASHBOARD_ROWS],
        expiring_total=len(expiring),
        issued_per_day=issued_per_day(rows, now.date(), ISSUED_CHART_DAYS),
        refusals=reasons.most_common(MAX_DASHBOARD_ROWS),
        refusals_total=sum(reasons.values()),
        recent_events=list(recent_events)[:MAX_DASHBOARD_ROWS],
    )
