"""estkit.conformance: a conformance suite for any EST server (RFC 7030/8951, BCP-003-03/-01).

Library use::

    from estkit.conformance import Target, run_suite
    report = run_suite(Target.from_files(host="est.example", port=8443, cacert=..., cert=...,
                                         key=...))
    report.exit_status, report.result("enroll-rsa").status

The suite sees the server only over the network (HTTPS and raw TLS handshakes), exactly as it
would see anyone's server; it never imports estkit's server or CA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from estkit._lazy import lazy_exports

if TYPE_CHECKING:
    from estkit.conformance.cases import ALL_CASES, CASE_IDS
    from estkit.conformance.model import Case, CaseResult, Outcome, Status, SuiteReport
    from estkit.conformance.rogue import make_rogue_identity
    from estkit.conformance.runner import ProgressEvent, UnknownCaseError, run_suite
    from estkit.conformance.target import Identity, Target, TargetError

# name -> submodule: each name's module is imported the first time the name is read.
_EXPORTS: dict[str, str] = {
    "ALL_CASES": "cases",
    "CASE_IDS": "cases",
    "Case": "model",
    "CaseResult": "model",
    "Identity": "target",
    "Outcome": "model",
    "ProgressEvent": "runner",
    "Status": "model",
    "SuiteReport": "model",
    "Target": "target",
    "TargetError": "target",
    "UnknownCaseError": "runner",
    "make_rogue_identity": "rogue",
    "run_suite": "runner",
}


__all__ = [
    "ALL_CASES",
    "CASE_IDS",
    "Case",
    "CaseResult",
    "Identity",
    "Outcome",
    "ProgressEvent",
    "Status",
    "SuiteReport",
    "Target",
    "TargetError",
    "UnknownCaseError",
    "make_rogue_identity",
    "run_suite",
]

if not TYPE_CHECKING:  # type checkers read the imports above; Python runs this
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
