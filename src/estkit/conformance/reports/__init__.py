"""Report formats of a :class:`~estkit.conformance.model.SuiteReport`: console, JSON, JUnit, HTML.

Each reporter turns a report into text or a rich renderable and nothing more; writing files and
printing is the caller's (the CLI's) job, so the library never prints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from estkit._lazy import lazy_exports

if TYPE_CHECKING:
    from estkit.conformance.reports.console import progress_text as progress_text
    from estkit.conformance.reports.console import results_table as results_table
    from estkit.conformance.reports.console import summary_text as summary_text
    from estkit.conformance.reports.html import report_to_html as report_to_html
    from estkit.conformance.reports.json_report import report_to_json as report_to_json
    from estkit.conformance.reports.junit import report_to_junit as report_to_junit

if not TYPE_CHECKING:  # Python reads the names from the imports above, lazily
    __getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
