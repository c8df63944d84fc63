"""A single self-contained HTML page: summary, one row per case, evidence folded under each row.

Written with ``html.escape`` and no template engine: the page is small and fixed, and every value
from the server (messages, headers, names) is escaped in exactly one place, :func:`_e`.
"""

from __future__ import annotations

import html
import json

from estkit.conformance.model import Status, SuiteReport

_COLOURS = {
    Status.PASS: "#1a7f37",
    Status.FAIL: "#cf222e",
    Status.WARN: "#9a6700",
    Status.SKIP: "#0969da",
    Status.NA: "#6e7781",
}

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #1f2328; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #d0d7de; padding: 0.4em 0.6em; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; }
.status { font-weight: bold; text-transform: uppercase; white-space: nowrap; }
pre { background: #f6f8fa; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
details summary { cursor: pointer; color: #57606a; }
code { white-space: nowrap; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def report_to_html(report: SuiteReport) -> str:
    """The report as an HTML5 document."""
    verdict = "FAILED" if report.failed else "PASSED"
    verdict_colour = _COLOURS[Status.FAIL] if report.failed else _COLOURS[Status.PASS]
    counts = ", ".join(
        f'<span style="color:{_COLOURS[status]}">{report.count(status)} {_e(status)}</span>'
        for status in Status
    )
    server = json.dumps(dict(report.server), indent=2, default=str)
    rows = []
    for result in report.results:
        evidence = json.dumps(result.evidence, indent=2, default=str)
        rows.append(
            f'<tr id="{_e(result.id)}" data-status="{_e(result.status)}">'
            f"<td><code>{_e(result.id)}</code></td>"
            f"<td>{_e(result.name)}</td>"
            f"<td>{_e(result.requirement)}</td>"
            f'<td class="status" style="color:{_COLOURS[result.status]}">{_e(result.status)}</td>'
            f"<td>{_e(result.message)}"
            f"<details><summary>evidence ({result.duration_ms:.0f} ms)</summary>"
            f"<pre>{_e(evidence)}</pre></details></td>"
            "</tr>"
        )
    title = f"estkit test-server: {report.server.get('url', '')}"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f"<title>{_e(title)}</title>",
            f"<style>{_STYLE}</style>",
            "</head>",
            "<body>",
            f"<h1>{_e(title)}</h1>",
            f'<p><strong style="color:{verdict_colour}">{verdict}</strong> — '
            f"{len(report.results)} cases in {report.duration_ms / 1000:.1f} s "
            f"(started {_e(report.started_at.isoformat())}): {counts}</p>",
            f"<details><summary>server</summary><pre>{_e(server)}</pre></details>",
            "<table>",
            "<thead><tr><th>id</th><th>name</th><th>requirement</th><th>status</th>"
            "<th>message</th></tr></thead>",
            "<tbody>",
            *rows,
            "</tbody>",
            "</table>",
            "</body>",
            "</html>",
            "",
        ]
    )
