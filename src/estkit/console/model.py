"""What the console pages show, computed from store records without any I/O or HTML.

Why separate from the views: the query parameters, paging and the dashboard figures are the parts
worth testing on their own, and the same functions feed both the full page and the live-refresh
JSON. Filtering, sorting, counting and grouping happen in the store's SQL (issue 14): a page
reads at most :data:`PAGE_SIZE` rows, the dashboard a handful of aggregates, whatever the size of
the store.
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
# Rows per page of the certificates and requests tables: a screen or two to scan; a "more" link
# reads the next page from the store.
PAGE_SIZE = 50
# ?page= beyond this is refused as a page (the store bounds OFFSET too): narrow the filters.
MAX_PAGE_NUMBER = 20_000
MAX_DASHBOARD_ROWS = 10
MAX_QUERY_LENGTH = 200
RECENT_DECISIONS = 20
MAX_REASON_LENGTH = 140
# The line that counts refusals whose messages were too many and too different to group.
OTHER_REFUSALS = "other reasons (too many different messages to group)"

STATUS_FILTERS = ("", "valid", "revoked", "expired")
SORT_ORDERS = {
    "expiry": "expiry, soonest first",
    "-expiry": "expiry, latest first",
    "-issued": "most recently issued",
    "subject": "subject",
}
# Newest first, like every listing (issue 14); "expiry" is one click away.
DEFAULT_SORT = "-issued"


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
    page: int = 1

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
            page=page_number(params),
        )

    def store_filters(self) -> dict[str, Any]:
        """Keyword arguments of ``CertificateStore.issued_page`` for this search (without the
        page): "valid" and "expired" split the store's valid status by notAfter."""
        status: str | None = None
        expired: bool | None = None
        if self.status in ("valid", "expired"):
            status, expired = "valid", self.status == "expired"
        elif self.status == "revoked":
            status = "revoked"
        return {
            "status": status,
            "expired": expired,
            "label": self.label or None,
            "key_type": self.key_type or None,
            "search": self.q or None,
            "sort": self.sort,
        }

    def params(self, page: int) -> dict[str, str]:
        """The query string of this search at another page (defaults left out)."""
        values = {
            "q": self.q,
            "status": self.status,
            "label": self.label,
            "key_type": self.key_type,
            "sort": "" if self.sort == DEFAULT_SORT else self.sort,
            "page": "" if page == 1 else str(page),
        }
        return {key: value for key, value in values.items() if value}


def page_number(params: Mapping[str, str]) -> int:
    """``?page=`` as a number from 1 to :data:`MAX_PAGE_NUMBER` (anything else: page 1)."""
    text = params.get("page", "")
    if not text.isdigit() or len(text) > len(str(MAX_PAGE_NUMBER)):
        return 1
    return min(max(int(text), 1), MAX_PAGE_NUMBER)


def page_offset(page: int) -> int:
    return (page - 1) * PAGE_SIZE


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


def chart_start(today: dt.date, days: int = ISSUED_CHART_DAYS) -> dt.datetime:
    """Midnight UTC of the first day of the issued-per-day chart."""
    first = today - dt.timedelta(days=days - 1)
    return dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC)


def issued_per_day(
    counts: Mapping[dt.date, int], today: dt.date, days: int
) -> list[tuple[dt.date, int]]:
    """Certificates issued on each of the last ``days`` days (UTC), oldest first, zeros included,
    from the store's per-day counts (by the store's issue time, not notBefore, which the CA
    backdates for clock skew)."""
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
    summary: Any,
    expiring: Sequence[CertRow],
    per_day: Mapping[dt.date, int],
    pending: int,
    refusal_groups: Iterable[Any],
    refusals_total: int,
    recent_events: Sequence[Any],
    now: dt.datetime,
) -> DashboardStats:
    """The dashboard from the store's aggregates (``summary``: an ``IssuedSummary``;
    ``refusal_groups``: ``EventGroup``s of refusals in the window, already counted)."""
    reasons: Counter[str] = Counter()
    for group in refusal_groups:
        reasons[refusal_key(group)] += int(getattr(group, "count", 1))
    ungrouped = refusals_total - sum(reasons.values())
    if ungrouped > 0:  # the store read only the most frequent messages
        reasons[OTHER_REFUSALS] += ungrouped
    return DashboardStats(
        pending=pending,
        valid=summary.valid,
        revoked=summary.revoked,
        expired=summary.expired,
        expiring=list(expiring)[:MAX_DASHBOARD_ROWS],
        expiring_total=summary.expiring,
        issued_per_day=issued_per_day(per_day, now.date(), ISSUED_CHART_DAYS),
        refusals=reasons.most_common(MAX_DASHBOARD_ROWS),
        refusals_total=refusals_total,
        recent_events=list(recent_events)[:MAX_DASHBOARD_ROWS],
    )
