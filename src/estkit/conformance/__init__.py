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
    from estkit.conformance.cases import ALL_CASES as ALL_CASES
    from estkit.conformance.cases import CASE_IDS as CASE_IDS
    from estkit.conformance.model import Case as Case
    from estkit.conformance.model import CaseResult as CaseResult
    from estkit.conformance.model import Outcome as Outcome
    from estkit.conformance.model import Status as Status
    from estkit.conformance.model import SuiteReport as SuiteReport
    from estkit.conformance.rogue import make_rogue_identity as make_rogue_identity
    from estkit.conformance.runner import ProgressEvent as ProgressEvent
    from estkit.conformance.runner import UnknownCaseError as UnknownCaseError
    from estkit.conformance.runner import run_suite as run_suite
    from estkit.conformance.target import Identity as Identity
    from estkit.conformance.target import Target as Target
    from estkit.conformance.target import TargetError as TargetError

if not TYPE_CHECKING:  # Python reads the names from the imports above, lazily
    __getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
