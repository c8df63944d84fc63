"""The issued-certificates page: search, filters, expiry, download and revocation."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from estkit.ca.store import Page
from estkit.console.html import Html, join, tag
from estkit.console.model import (
    SORT_ORDERS,
    STATUS_FILTERS,
    CertificateQuery,
    CertRow,
    as_utc,
)
from estkit.console.views.common import (
    cell,
    expiry_cell,
    fmt_date,
    fmt_time,
    mono,
    muted,
    names_list,
    pager,
    pill,
    post_form,
    table,
)

# Revocation reasons an operator may pick for an end-entity certificate (RFC 5280 §5.3.1).
# certificateHold is left out: the store has no "unhold", so it would be a revocation in disguise;
# cACompromise/aACompromise concern CA certificates.
OPERATOR_REVOCATION_REASONS = (
    ("unspecified", "unspecified"),
    ("keyCompromise", "key compromise"),
    ("superseded", "superseded"),
    ("cessationOfOperation", "cessation of operation"),
    ("affiliationChanged", "affiliation changed"),
    ("privilegeWithdrawn", "privilege withdrawn"),
)


def _select(name: str, label: str, options: Sequence[tuple[str, str]], current: str) -> Html:
    return tag(
        "label",
        tag("span", label),
        tag(
            "select",
            *(
                tag("option", text, value=value, selected=(value == current))
                for value, text in options
            ),
            name=name,
        ),
    )


def certificate_filters(
    query: CertificateQuery, labels: Sequence[str], key_types: Sequence[str]
) -> Html:
    status_options = [(s, s or "any") for s in STATUS_FILTERS]
    label_options = [("", "any"), *((lbl, lbl or "(none)") for lbl in labels if lbl)]
    key_options = [("", "any"), *((k, k) for k in key_types)]
    return tag(
        "form",
        tag(
            "label",
            tag("span", "Search"),
            tag(
                "input",
                type="search",
                name="q",
                value=query.q,
                placeholder="name or serial",
                autocomplete="off",
            ),
            class_="grow",
        ),
        _select("status", "Status", status_options, query.status),
        _select("label", "Label", label_options, query.label),
        _select("key_type", "Key type", key_options, query.key_type),
        _select("sort", "Sort", list(SORT_ORDERS.items()), query.sort),
        tag("button", "Apply", class_="btn", type="submit"),
        tag("a", "Reset", href="/certificates", class_="btn link"),
        method="get",
        action="/certificates",
        class_="filters",
        role="search",
    )


def _status_cell(row: CertRow) -> Html:
    status = row.display_status
    if status == "revoked":
        record = row.record
        detail = tag(
            "div",
            record.revocation_reason or "unspecified",
            " · ",
            fmt_time(as_utc(record.revoked_at)),
            class_="sub",
        )
        return join([pill("revoked", "bad"), detail])
    return pill(status, "ok" if status == "valid" else "muted")


def _revoke_form(row: CertRow, csrf: str) -> Html:
    serial = row.record.serial
    name = row.common_name or row.record.subject
    return post_form(
        csrf,
        f"/certificates/{serial}/revoke",
        tag(
            "select",
            *(tag("option", text, value=value) for value, text in OPERATOR_REVOCATION_REASONS),
            name="reason",
            aria_label=f"Revocation reason for {serial}",
        ),
        button=tag("button", "Revoke", class_="btn danger", type="submit"),
        class_="inline revoke",
        confirm=f"Revoke certificate {serial} ({name})? Devices using it lose access.",
    )


def _certificate_row(row: CertRow, now: dt.datetime, csrf: str) -> Html:
    record = row.record
    actions = [
        tag(
            "a", "PEM", href=f"/certificates/{record.serial}.pem", class_="btn small", download=True
        )
    ]
    if row.display_status == "valid":
        actions.append(_revoke_form(row, csrf))
    return tag(
        "tr",
        cell("Subject", tag("strong", row.common_name or record.subject), names_list(row.sans)),
        cell("Serial", mono(record.serial, "mono serial")),
        cell("Label", record.label or muted("(none)")),
        cell("Key", record.key_type or "—"),
        cell("Issued", fmt_date(row.not_before), tag("div", record.operation, class_="sub")),
        cell("Expires", expiry_cell(row, now)),
        cell("Status", _status_cell(row)),
        cell("Actions", tag("div", *actions, class_="actions")),
        id=f"cert-{record.serial}",
        data_status=row.display_status,
    )


def certificates_content(
    rows: Sequence[CertRow],
    found: Page[Any],
    total: int,
    query: CertificateQuery,
    labels: Sequence[str],
    key_types: Sequence[str],
    now: dt.datetime,
    csrf: str,
) -> Html:
    """One page of matching certificates (``rows``, from ``found``) with a "more" link."""
    shown = rows
    summary = f"{found.total} of {total} certificates match"

    def href(page: int) -> str:
        params = query.params(page)
        return "/certificates" + (f"?{urlencode(params)}" if params else "")

    return join(
        [
            certificate_filters(query, labels, key_types),
            tag(
                "section",
                tag("p", summary, class_="hint", id="cert-summary"),
                table(
                    ("Subject", "Serial", "Label", "Key", "Issued", "Expires", "Status", "Actions"),
                    (_certificate_row(r, now, csrf) for r in shown),
                    empty="No certificate matches."
                    if total
                    else "No certificate has been issued yet.",
                    cls="certs",
                ),
                pager(found, query.page, href, "certificates"),
                class_="card",
            ),
        ]
    )
