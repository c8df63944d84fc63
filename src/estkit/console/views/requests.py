"""The requests page: the manual-approval queue (BCP-003-03 S4) and recent decisions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from estkit.ca.store import Page
from estkit.console.html import Html, join, tag
from estkit.console.model import as_utc, humanize_duration
from estkit.console.views.common import (
    cell,
    fmt_time,
    mono,
    muted,
    names_list,
    pager,
    pill,
    post_form,
    short_fingerprint,
    table,
)

_TRUST_KIND = {"trusted": "ok", "expired": "warn", "untrusted": "bad", "revoked": "bad"}


def _client_block(req: Any) -> Html:
    trust = getattr(req, "client_trust", None) or "not recorded"
    http_user = getattr(req, "http_user", None)
    parts: list[Any] = [
        tag("dt", "trust"),
        tag("dd", pill(trust, _TRUST_KIND.get(trust, "muted")), class_="client-trust"),
    ]
    if req.client_subject or req.client_fingerprint:
        # The whole fingerprint: the operator compares it with the device's, character by
        # character; a shortened one would let a look-alike certificate pass.
        parts += [
            tag("dt", "subject"),
            tag("dd", req.client_subject or "—"),
            tag("dt", "issuer"),
            tag("dd", req.client_issuer or "—"),
            tag("dt", "SHA-256"),
            tag("dd", short_fingerprint(req.client_fingerprint)),
        ]
    else:
        parts += [tag("dt", "certificate"), tag("dd", muted("none presented"))]
    parts += [tag("dt", "HTTP user"), tag("dd", http_user or muted("—"))]
    return tag("dl", *parts, class_="kv")


def _verdict_block(verdict: Any) -> Html:
    if verdict is None:
        return muted("—")
    kind = "ok" if verdict.allowed else "bad"
    return tag(
        "div",
        pill("allows" if verdict.allowed else "refuses", kind),
        tag("div", verdict.reason, class_="sub"),
        class_="policy-now",
    )


def _pending_row(req: Any, now: dt.datetime, csrf: str, verdict: Any = None) -> Html:
    created = as_utc(req.created_at)
    age = humanize_duration((now - created).total_seconds()) if created else "?"
    cn = req.common_name or "(no CN)"
    approve = post_form(
        csrf,
        f"/requests/{int(req.id)}/approve",
        button=tag("button", "Approve", class_="btn primary", type="submit"),
    )
    reject = post_form(
        csrf,
        f"/requests/{int(req.id)}/reject",
        tag(
            "input",
            type="text",
            name="note",
            placeholder="reason (optional)",
            maxlength="200",
            aria_label=f"Reason for rejecting request {req.id}",
        ),
        button=tag("button", "Reject", class_="btn danger", type="submit"),
        class_="inline reject",
        confirm=f"Reject request #{req.id} for {cn}?",
    )
    return tag(
        "tr",
        cell(
            "Request", tag("strong", cn), tag("div", f"#{req.id} · {req.operation}", class_="sub")
        ),
        cell("SANs", names_list(list(req.dns_names or ()))),
        cell("Key", req.key_type or "—"),
        cell("Client certificate", _client_block(req), cls="client"),
        cell("Peer", mono(req.peer_address or "—")),
        cell("Label", req.label or muted("(none)")),
        cell("Policy now", _verdict_block(verdict)),
        cell("Age", tag("span", age, title=str(created))),
        cell("Decision", tag("div", approve, reject, class_="actions")),
        id=f"request-{int(req.id)}",
        data_cn=cn,
    )


def _decided_row(req: Any) -> Html:
    status_kind = {"approved": "ok", "issued": "ok", "rejected": "bad"}.get(req.status, "muted")
    serial = getattr(req, "serial", None)
    serial_cell = (
        tag("a", mono(serial, "mono serial"), href=f"/certificates?q={quote(serial)}")
        if serial
        else muted("—")
    )
    return tag(
        "tr",
        cell(
            "Request",
            tag("strong", req.common_name or "(no CN)"),
            tag("div", f"#{req.id}", class_="sub"),
        ),
        cell("Label", req.label or muted("(none)")),
        cell("Status", pill(req.status, status_kind)),
        cell("Decided by", req.decided_by or muted("—")),
        cell("When", fmt_time(as_utc(req.decided_at))),
        cell("Note", req.note or muted("—")),
        cell("Certificate", serial_cell),
    )


def _requests_href(page: int) -> str:
    return "/requests" if page == 1 else f"/requests?page={page}"


def requests_content(
    pending: Sequence[Any] | Page[Any],
    decided: Sequence[Any],
    now: dt.datetime,
    csrf: str,
    verdicts: Mapping[int, Any] | None = None,
    page: int = 1,
) -> Html:
    """The queue (one page of pending requests, newest first, with a "more" link to older ones)
    and the most recent decisions."""
    verdicts = verdicts or {}
    if isinstance(pending, Page):
        found = pending
        pending = found.items
    else:
        found = Page(list(pending), len(pending), 0, max(len(pending), 1))
    pending_table = table(
        (
            "Request",
            "SANs",
            "Key",
            "Client",
            "Peer",
            "Label",
            "Policy now",
            "Age",
            "Decision",
        ),
        (_pending_row(r, now, csrf, verdicts.get(r.id)) for r in pending),
        empty="No request is waiting for a decision.",
        cls="pending",
    )
    decided_table = table(
        ("Request", "Label", "Status", "Decided by", "When", "Note", "Certificate"),
        (_decided_row(r) for r in decided),
        empty="No decisions yet.",
    )
    return join(
        [
            tag(
                "section",
                tag("h2", "Waiting for approval ", tag("span", str(found.total), class_="count")),
                tag(
                    "p",
                    "Each request was answered with 202 and Retry-After; the device's next "
                    "identical request after approval receives its certificate.",
                    class_="hint",
                ),
                pending_table,
                pager(found, page, _requests_href, "pending requests"),
                class_="card",
                id="pending",
            ),
            tag("section", tag("h2", "Recent decisions"), decided_table, class_="card"),
        ]
    )
