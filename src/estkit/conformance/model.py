"""Result objects of the conformance suite: what a case is, what it found, what a run produced.

Why plain frozen dataclasses: a case is data (id, name, requirement, profile) plus one small
function, and its result must serialise unchanged to JSON, JUnit XML and HTML, so nothing here
knows about any output format or about the network.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from estkit.conformance.session import Session

Profile = Literal["all", "nmos"]
"""``nmos``: a BCP-003-03/BCP-003-01 rule, not applicable to a plain RFC 7030 server."""


class Status(enum.StrEnum):
    """Outcome of one case. Only ``fail`` makes the run (and the exit status) fail."""

    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"
    NA = "n/a"


@dataclass(frozen=True)
class Outcome:
    """What a case function returns: its verdict, a sentence for people, and evidence."""

    status: Status
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)


def passed(message: str, **evidence: Any) -> Outcome:
    return Outcome(Status.PASS, message, evidence)


def failed(message: str, **evidence: Any) -> Outcome:
    return Outcome(Status.FAIL, message, evidence)


def warned(message: str, **evidence: Any) -> Outcome:
    return Outcome(Status.WARN, message, evidence)


def skipped(message: str, **evidence: Any) -> Outcome:
    return Outcome(Status.SKIP, message, evidence)


def not_applicable(message: str, **evidence: Any) -> Outcome:
    return Outcome(Status.NA, message, evidence)


@dataclass(frozen=True)
class Case:
    """One conformance check.

    ``requirement`` cites IDs of docs/requirements.md (E…, S…, T…, C…, D…) so every verdict can be
    traced to a sentence of a specification; failure messages repeat the ID.
    """

    id: str
    name: str
    requirement: str
    profile: Profile
    run: Callable[[Session], Outcome]


@dataclass(frozen=True)
class CaseResult:
    id: str
    name: str
    requirement: str
    status: Status
    message: str
    evidence: Mapping[str, Any]
    duration_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "requirement": self.requirement,
            "status": str(self.status),
            "message": self.message,
            "evidence": dict(self.evidence),
            "duration_ms": round(self.duration_ms, 1),
        }


@dataclass(frozen=True)
class SuiteReport:
    """Everything one run produced; the reporters only format this."""

    results: tuple[CaseResult, ...]
    server: Mapping[str, Any]
    started_at: datetime
    duration_ms: float

    def count(self, status: Status) -> int:
        return sum(1 for result in self.results if result.status is status)

    @property
    def failed(self) -> bool:
        return self.count(Status.FAIL) > 0

    @property
    def exit_status(self) -> int:
        """0 iff nothing failed (warn, skip and n/a do not fail a run)."""
        return 1 if self.failed else 0

    def summary(self) -> dict[str, Any]:
        return {
            "total": len(self.results),
            **{str(status): self.count(status) for status in Status},
            "passed": not self.failed,
            "started_at": self.started_at.isoformat(),
            "duration_ms": round(self.duration_ms, 1),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": [result.to_dict() for result in self.results],
            "summary": self.summary(),
            "server": dict(self.server),
        }

    def result(self, case_id: str) -> CaseResult:
        for result in self.results:
            if result.id == case_id:
                return result
        raise KeyError(f"no result for case {case_id!r}")
