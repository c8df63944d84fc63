"""The layout and small building blocks every console page uses.

Everything here is a pure function of its arguments (no I/O), and all text goes through
:func:`estkit.console.html.esc`; the only markup is what these functions build.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from estkit.ca.store import Page
from estkit.console.admin_ca import Operator
from estkit.console.auth import CSRF_FIELD
from estkit.console.html import Html, join, render, tag
from estkit.console.model import EXPIRY_WARNING_DAYS, CertRow, humanize_duration

NAV_ITEMS = (
    ("dashboard", "/", "Dashboard"),
    ("requests", "/requests", "Requests"),
    ("certificates", "/certificates", "Certificates"),
    ("ca", "/ca", "CA"),
)

# Self-contained style of the pages shown before sign-in (the stylesheet itself needs sign-in).
# Its hash goes into that page's Content-Security-Policy, so no 'unsafe-inline' is needed.
MESSAGE_STYLE = (
    "body{font:16px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;background:#f4f6f8;"
    "color:#1d2733;margin:0}.message{max-width:36rem;margin:12vh auto;background:#fff;"
    "padding:2rem;border-radius:10px;box-shadow:0 1px 3px rgba(0,0,0,.12)}"
    "h1{font-size:1.3rem;margin:0 0 .75rem}code{background:#eef1f4;padding:.1rem .3rem;"
    "border-radius:4px}a{color:#1f5fbf}"
)
MESSAGE_STYLE_HASH = (
    "sha256-" + base64.b64encode(hashlib.sha256(MESSAGE_STYLE.encode()).digest()).decode()
)


@dataclass(frozen=True)
class PageContext:
    operator: Operator
    csrf_token: str
    pending_count: int
    poll_ms: int
    data_dir: str
    can_logout: bool


def digest_of(content: Html) -> str:
    """Fingerprint of a page's live region: the browser swaps content only when it changed."""
    return hashlib.sha256(content.encode()).hexdigest()[:32]


def nav(active: str, pending_count: int) -> Html:
    links = []
    for key, href, label in NAV_ITEMS:
        badge = Html("")
        if key == "requests":
            badge = tag(
                "span",
                str(pending_count),
                class_="badge" + ("" if pending_count else " zero"),
                id="pending-badge",
                aria_label=f"{pending_count} pending",
            )
        links.append(
            tag(
                "a",
                label,
                badge,
                href=href,
                class_="active" if key == active else None,
                aria_current="page" if key == active else None,
            )
        )
    return join(links)


def csrf_input(token: str) -> Html:
    return tag("input", type="hidden", name=CSRF_FIELD, value=token)


def post_form(
    csrf: str,
    action: str,
    *fields: object,
    button: Html,
    class_: str = "inline",
    confirm: str | None = None,
) -> Html:
    """A POST form carrying the CSRF token (every state-changing console action is one): the
    ``fields``, then ``button``; ``confirm`` is the question the page's script asks first."""
    return tag(
        "form",
        csrf_input(csrf),
        *fields,
        button,
        method="post",
        action=action,
        class_=class_,
        data_confirm=confirm,
    )


def page(
    title: str, active: str, content: Html, ctx: PageContext, notice: Html | None = None
) -> Html:
    logout = Html("")
    if ctx.can_logout:
        logout = post_form(
            ctx.csrf_token, "/logout", button=tag("button", "Sign out", class_="btn link")
        )
    return render(
        "layout.html",
        title=title,
        nav=nav(active, ctx.pending_count),
        operator=ctx.operator.name,
        auth_method=ctx.operator.method,
        logout=logout,
        notice=notice or Html(""),
        content=content,
        poll_ms=ctx.poll_ms,
        digest=digest_of(content),
        data_dir=ctx.data_dir,
    )


def message_page(
    title: str, message: str, extra: Html | None = None, head: Html | None = None
) -> Html:
    return render(
        "message.html",
        title=title,
        message=message,
        extra=extra or Html(""),
        head=head or Html(""),
        style=Html(MESSAGE_STYLE),
    )


def notice_box(text: str, kind: str = "ok") -> Html:
    return tag("div", text, class_=f"notice {kind}", role="status")


# -- small formatting helpers -------------------------------------------------------------------


def fmt_time(value: dt.datetime | None) -> Html:
    if value is None:
        return Html("—")
    value = value.astimezone(dt.UTC)
    return tag("time", value.strftime("%Y-%m-%d %H:%M"), datetime=value.isoformat(), title="UTC")


def fmt_date(value: dt.datetime) -> Html:
    value = value.astimezone(dt.UTC)
    return tag("time", value.strftime("%Y-%m-%d"), datetime=value.isoformat(), title=str(value))


def pill(text: str, kind: str) -> Html:
    return tag("span", text, class_=f"pill {kind}")


def mono(text: object, cls: str = "mono") -> Html:
    return tag("code", text, class_=cls)


def muted(text: str) -> Html:
    return tag("span", text, class_="muted")


def cell(label: str, *content: object, cls: str | None = None) -> Html:
    """A table cell that knows its column name, for the stacked layout on narrow screens (the
    content is wrapped in one element so it stays in one grid column there)."""
    return tag("td", tag("div", *content, class_="cv"), data_label=label, class_=cls)


def table(headers: Sequence[str], rows: Iterable[Html], *, empty: str, cls: str = "") -> Html:
    body = list(rows)
    if not body:
        return tag("p", empty, class_="empty")
    head = tag("thead", tag("tr", *(tag("th", h, scope="col") for h in headers)))
    return tag(
        "div",
        tag("table", head, tag("tbody", *body), class_=f"data {cls}".strip()),
        class_="table-wrap",
    )


def names_list(names: Sequence[str]) -> Html:
    if not names:
        return muted("none")
    return tag("ul", *(tag("li", n) for n in names), class_="names")


def short_fingerprint(fp: str | None) -> Html:
    if not fp:
        return muted("—")
    return mono(fp, "mono fp")


def expiry_cell(row: CertRow, now: dt.datetime) -> Html:
    left = row.seconds_left(now)
    if left <= 0:
        hint = pill("expired", "muted")
    else:
        kind = "warn" if left <= EXPIRY_WARNING_DAYS * 86400 else "plain"
        hint = tag("span", f"in {humanize_duration(left)}", class_=f"rel {kind}")
    return join([fmt_date(row.not_after), " ", hint])


def pager(found: Page[Any], page: int, href: Callable[[int], str], noun: str) -> Html:
    """ "rows 51–100 of 20000" and the links to the neighbouring pages (newest first: the next
    page holds older rows). Nothing when everything fits on one page."""
    if found.total <= len(found.items) and page == 1:
        return Html("")
    if not found.items:  # a page number past the end (typed, or the list shrank)
        return tag(
            "nav",
            tag("span", f"page {page} is past the last of the {found.total} {noun}"),
            " · ",
            tag("a", "first page", href=href(1), rel="first", class_="btn link"),
            class_="pager hint",
            aria_label=f"pages of {noun}",
        )
    links: list[Html | str] = [
        tag(
            "span",
            f"{noun} {found.offset + 1}–{found.offset + len(found.items)} of {found.total}",
        )
    ]
    if page > 1:
        links += [" · ", tag("a", "← newer", href=href(page - 1), rel="prev", class_="btn link")]
    if found.next_offset is not None:
        more = f"more: next {min(found.limit, found.total - found.next_offset)} →"
        links += [" · ", tag("a", more, href=href(page + 1), rel="next", class_="btn link more")]
    return tag("nav", *links, class_="pager hint", aria_label=f"pages of {noun}")
