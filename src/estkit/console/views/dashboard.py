"""The dashboard: counts, certificates issued per day, soon-to-expire, refusals, activity."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from estkit.console.html import Html, join, tag
from estkit.console.model import (
    EXPIRY_WARNING_DAYS,
    ISSUED_CHART_DAYS,
    REFUSAL_WINDOW_DAYS,
    DashboardStats,
    event_time,
)
from estkit.console.views.common import cell, expiry_cell, fmt_time, mono, muted, pill, table

CHART_WIDTH = 560
CHART_HEIGHT = 160
CHART_LABEL_SPACE = 22


def issued_chart(series: Sequence[tuple[dt.date, int]]) -> Html:
    """An inline SVG bar chart: no script, no external asset, readable without colour."""
    peak = max((count for _, count in series), default=0) or 1
    slot = CHART_WIDTH / max(len(series), 1)
    bar_width = slot * 0.7
    plot_height = CHART_HEIGHT - CHART_LABEL_SPACE - 14
    bars = []
    for index, (day, count) in enumerate(series):
        height = round(plot_height * count / peak, 1)
        x = round(index * slot + (slot - bar_width) / 2, 1)
        y = round(14 + plot_height - height, 1)
        title = tag("title", f"{day.isoformat()}: {count} issued")
        bars.append(
            tag(
                "g",
                title,
                tag(
                    "rect",
                    x=str(x),
                    y=str(y),
                    width=str(round(bar_width, 1)),
                    height=str(height),
                    rx="2",
                ),
                tag(
                    "text",
                    str(count),
                    x=str(round(x + bar_width / 2, 1)),
                    y=str(max(y - 3, 10)),
                    class_="v",
                )
                if count
                else Html(""),
                tag(
                    "text",
                    day.strftime("%d"),
                    x=str(round(x + bar_width / 2, 1)),
                    y=str(CHART_HEIGHT - 6),
                    class_="d",
                ),
            )
        )
    baseline_y = str(14 + plot_height)
    baseline = tag("line", x1="0", x2=str(CHART_WIDTH), y1=baseline_y, y2=baseline_y)
    return tag(
        "svg",
        baseline,
        *bars,
        viewBox=f"0 0 {CHART_WIDTH} {CHART_HEIGHT}",
        class_="chart",
        role="img",
        aria_label=f"certificates issued per day over the last {len(series)} days",
    )


def _stat(label: str, value: int, href: str, kind: str = "") -> Html:
    return tag(
        "a",
        tag("span", str(value), class_="value"),
        tag("span", label, class_="label"),
        href=href,
        class_=f"stat {kind}".strip(),
    )


def _event_row(event: Any) -> Html:
    fields = getattr(event, "fields", None) or {}
    # The console's own events name the "operator"; the store's decision events say "by".
    who = (fields.get("operator") or fields.get("by")) if isinstance(fields, dict) else None
    return tag(
        "tr",
        cell("When", fmt_time(event_time(event))),
        cell("Kind", pill(str(getattr(event, "kind", "event")), "info")),
        cell("What", getattr(event, "message", "")),
        cell("Operator", who or muted("—")),
    )


def dashboard_content(stats: DashboardStats, now: dt.datetime) -> Html:
    expiring_rows = [
        tag(
            "tr",
            cell("Subject", tag("strong", r.common_name or r.record.subject)),
            cell("Serial", mono(r.record.serial, "mono serial")),
            cell("Label", r.record.label or muted("(none)")),
            cell("Expires", expiry_cell(r, now)),
        )
        for r in stats.expiring
    ]
    refusal_rows = [
        tag("tr", cell("Reason", reason), cell("Count", tag("strong", str(count)), cls="num"))
        for reason, count in stats.refusals
    ]
    issued_total = sum(count for _, count in stats.issued_per_day)
    expiring_more = (
        tag("p", f"and {stats.expiring_total - len(stats.expiring)} more", class_="hint")
        if stats.expiring_total > len(stats.expiring)
        else Html("")
    )
    return join(
        [
            tag(
                "div",
                _stat(
                    "pending requests", stats.pending, "/requests", "warn" if stats.pending else ""
                ),
                _stat("valid certificates", stats.valid, "/certificates?status=valid"),
                _stat(
                    f"expire within {EXPIRY_WARNING_DAYS} days",
                    stats.expiring_total,
                    "/certificates?status=valid&sort=expiry",
                    "warn" if stats.expiring_total else "",
                ),
                _stat("revoked", stats.revoked, "/certificates?status=revoked"),
                _stat("expired", stats.expired, "/certificates?status=expired"),
                class_="stats",
            ),
            tag(
                "div",
                tag(
                    "section",
                    tag(
                        "h2",
                        f"Issued per day · last {ISSUED_CHART_DAYS} days ",
                        tag("span", str(issued_total), class_="count"),
                    ),
                    issued_chart(stats.issued_per_day),
                    class_="card",
                ),
                tag(
                    "section",
                    tag(
                        "h2",
                        f"Refusals by reason · last {REFUSAL_WINDOW_DAYS} days ",
                        tag("span", str(stats.refusals_total), class_="count"),
                    ),
                    table(("Reason", "Count"), refusal_rows, empty="No request was refused."),
                    class_="card",
                ),
                class_="grid2",
            ),
            tag(
                "section",
                tag("h2", f"Soon to expire · next {EXPIRY_WARNING_DAYS} days"),
                table(
                    ("Subject", "Serial", "Label", "Expires"),
                    expiring_rows,
                    empty="Nothing expires in the next month.",
                ),
                expiring_more,
                class_="card",
            ),
            tag(
                "section",
                tag("h2", "Recent activity"),
                table(
                    ("When", "Kind", "What", "Operator"),
                    (_event_row(e) for e in stats.recent_events),
                    empty="The audit log is empty.",
                ),
                class_="card",
            ),
        ]
    )
