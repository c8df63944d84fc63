"""Report formats of a :class:`~estkit.conformance.model.SuiteReport`: console, JSON, JUnit, HTML.

Each reporter turns a report into text or a rich renderable and nothing more; writing files and
printing is the caller's (the CLI's) job, so the library never prints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from estkit._lazy import lazy_exports

if TYPE_CHECKING:
    from estkit.conformance.reports.console import progress_text, results_table, summary_text
    from estkit.conformance.reports.html import report_to_html
    from estkit.conformance.reports.json_report import report_to_json
    from estkit.conformance.reports.junit import report_to_junit

# name -> submodule: each name's module is imported the first time the name is read.
_EXPORTS: dict[str, str] = {
    "progress_text": "console",
    "report_to_html": "html",
    "report_to_json": "json_report",
    "report_to_junit": "junit",
    "results_table": "console",
    "summary_text": "console",
}


__all__ = [
    "progress_text",
    "report_to_html",
    "report_to_json",
    "report_to_junit",
    "results_table",
    "summary_text",
]

if not TYPE_CHECKING:  # type checkers read the imports above; Python runs this
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
