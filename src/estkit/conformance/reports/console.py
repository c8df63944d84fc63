"""Console report: a progress line while the cases run, then a table and a summary line.

These functions build ``rich`` renderables; the CLI decides where and whether to print them.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from estkit.conformance.model import CaseResult, Status, SuiteReport
from estkit.conformance.runner import ProgressEvent

STATUS_STYLES = {
    Status.PASS: "bold green",
    Status.FAIL: "bold red",
    Status.WARN: "bold yellow",
    Status.SKIP: "cyan",
    Status.NA: "dim",
}


def status_text(status: Status) -> Text:
    return Text(str(status), style=STATUS_STYLES[status])


def progress_text(event: ProgressEvent, counts: dict[Status, int]) -> Text:
    """``[12/41] running tls12 (TLS 1.2 supported) · 10 pass 1 warn``."""
    text = Text(f"[{event.index + 1}/{event.total}] ", style="bold")
    text.append(f"running {event.case.id}", style="cyan")
    text.append(f" ({event.case.name})", style="dim")
    shown = [(status, n) for status, n in counts.items() if n]
    if shown:
        text.append(" · ")
        for position, (status, n) in enumerate(shown):
            if position:
                text.append(" ")
            text.append(f"{n} {status}", style=STATUS_STYLES[status])
    return text


# Below this many columns the five-column table squeezes name and message into a few characters
# each; the compact layout stacks them instead (an 80-column terminal, a CI log).
WIDE_TABLE_COLUMNS = 140


def results_table(
    results: tuple[CaseResult, ...] | list[CaseResult], width: int | None = None
) -> Table:
    """One row per case: id, name, requirement, status, message.

    On a terminal narrower than :data:`WIDE_TABLE_COLUMNS` the same five fields are stacked in
    three columns (id over requirement, status, name over message) so every message stays readable.
    """
    if width is not None and width < WIDE_TABLE_COLUMNS:
        return _compact_table(results)
    table = Table(show_lines=False, expand=True)
    table.add_column("id", style="bold", no_wrap=True)
    table.add_column("name", ratio=2)
    table.add_column("requirement", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("message", ratio=4)
    for result in results:
        table.add_row(
            result.id,
            result.name,
            result.requirement,
            status_text(result.status),
            result.message,
        )
    return table


def _compact_table(results: tuple[CaseResult, ...] | list[CaseResult]) -> Table:
    table = Table(show_lines=True, expand=True)
    table.add_column("id / requirement", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("name / message", ratio=1, overflow="fold")
    for result in results:
        case = Text(result.id, style="bold")
        case.append("\n" + result.requirement, style="dim")
        outcome = Text(result.name, style="bold")
        outcome.append("\n" + result.message)
        table.add_row(case, status_text(result.status), outcome)
    return table


def summary_text(report: SuiteReport) -> Text:
    """``41 cases in 6.2 s: 35 pass, 0 fail, 4 warn, 2 skip, 0 n/a — PASSED``."""
    text = Text(f"{len(report.results)} cases in {report.duration_ms / 1000:.1f} s: ")
    for position, status in enumerate(Status):
        if position:
            text.append(", ")
        text.append(f"{report.count(status)} {status}", style=STATUS_STYLES[status])
    verdict = ("FAILED", "bold red") if report.failed else ("PASSED", "bold green")
    text.append(" — ")
    text.append(verdict[0], style=verdict[1])
    return text
