"""JSON report: ``{"results": [...], "summary": {...}, "server": {...}}`` (the issue's schema)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from estkit.conformance.model import SuiteReport


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


def report_to_json(report: SuiteReport) -> str:
    """The report as an indented JSON document ending with a newline."""
    return json.dumps(report.to_dict(), indent=2, default=_default) + "\n"
