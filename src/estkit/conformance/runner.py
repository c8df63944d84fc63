"""Run the cases against a target and collect a :class:`SuiteReport`.

Why the runner owns evidence and timing: every exchange a case causes (including the shared
enrollments it triggers) is attached to that case's result, so a verdict always comes with the
HTTP statuses, headers and TLS parameters it was based on, whatever the case function returned.
"""

from __future__ import annotations

import re
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from estkit.conformance.cases import ALL_CASES
from estkit.conformance.model import Case, CaseResult, Outcome, Status, SuiteReport, failed
from estkit.conformance.session import Session
from estkit.conformance.target import Target
from estkit.errors import EstkitError

_REQUIREMENT_ID = re.compile(r"\b[ESTCD]\d+\b")


class UnknownCaseError(EstkitError, ValueError):
    """``only`` named a case id that does not exist."""


@dataclass(frozen=True)
class ProgressEvent:
    """Sent before (``result`` None) and after each case."""

    index: int
    total: int
    case: Case
    result: CaseResult | None


ProgressCallback = Callable[[ProgressEvent], None]


def select_cases(cases: Sequence[Case], only: Iterable[str] | None) -> list[Case]:
    """The cases to run, in catalogue order; unknown ids raise with the list of valid ones."""
    if only is None:
        return list(cases)
    wanted = [item.strip() for item in only if item.strip()]
    known = {case.id for case in cases}
    unknown = [item for item in wanted if item not in known]
    if unknown:
        raise UnknownCaseError(
            f"unknown case id(s): {', '.join(unknown)}; valid ids: {', '.join(c.id for c in cases)}"
        )
    return [case for case in cases if case.id in wanted]


def run_suite(
    target: Target,
    *,
    only: Iterable[str] | None = None,
    progress: ProgressCallback | None = None,
    cases: Sequence[Case] = ALL_CASES,
) -> SuiteReport:
    """Run ``cases`` (all, or the ids in ``only``) against ``target``; never raises for the
    server's behaviour, only for an unknown case id."""
    selected = select_cases(cases, only)
    started_at = datetime.now(UTC)
    start = time.perf_counter()
    session = Session(target)
    results: list[CaseResult] = []
    try:
        for index, case in enumerate(selected):
            if progress is not None:
                progress(ProgressEvent(index, len(selected), case, None))
            result = run_case(session, case)
            results.append(result)
            if progress is not None:
                progress(ProgressEvent(index, len(selected), case, result))
        server = session.server_info()
    finally:
        session.close()
    return SuiteReport(
        results=tuple(results),
        server=server,
        started_at=started_at,
        duration_ms=(time.perf_counter() - start) * 1000,
    )


def run_case(session: Session, case: Case) -> CaseResult:
    start = time.perf_counter()
    first_exchange = len(session.log)
    if case.profile == "nmos" and session.target.profile != "nmos":
        outcome = Outcome(
            Status.NA, "BCP-003-03/BCP-003-01 requirement; not applicable under the rfc7030 profile"
        )
    else:
        try:
            outcome = case.run(session)
        except Exception as exc:  # a bug in a case must not hide the other cases' results
            outcome = failed(
                f"the case could not complete ({type(exc).__name__}: {exc}); "
                f"{case.requirement} not verified",
                traceback=traceback.format_exc(limit=6),
            )
    evidence = dict(outcome.evidence)
    exchanges = session.log[first_exchange:]
    if exchanges:
        evidence["exchanges"] = [exchange.evidence() for exchange in exchanges]
    return CaseResult(
        id=case.id,
        name=case.name,
        requirement=case.requirement,
        status=outcome.status,
        message=_cite(outcome, case),
        evidence=evidence,
        duration_ms=(time.perf_counter() - start) * 1000,
    )


def _cite(outcome: Outcome, case: Case) -> str:
    """Failure and warning messages always name a requirement (the case's, if none given)."""
    if outcome.status in (Status.FAIL, Status.WARN) and not _REQUIREMENT_ID.search(outcome.message):
        return f"{case.requirement}: {outcome.message}"
    return outcome.message
