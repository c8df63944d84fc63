"""The suite judges proof-of-possession under both TLS versions: ``pop-wrong-challenge``
(tls-unique, TLS 1.2) and ``pop-tls13-exporter`` (tls-exporter, TLS 1.3, the estkit extension of
docs/tls13-pop.md). A server offering the extension must take a CSR linked to its own connection
and refuse a replayed value; one that does not offer it is ``n/a``, never a failure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from estkit.conformance import Status, run_suite

from .conftest import ConformanceServer, fake_target
from .fake_est import FakeEstServer, Faults
from .pki import FakePki
from .test_faulty_servers import assert_fails_citing_requirement

POP_CASES = ["csrattrs", "enroll-ecdsa", "pop-wrong-challenge", "pop-tls13-exporter"]


def _exchanges(evidence: dict[str, Any]) -> list[dict[str, Any]]:
    return list(evidence["exchanges"])


@pytest.mark.parametrize("label", [None, "pop"])
def test_estkit_server_passes_pop_under_tls13(
    conformance_server: ConformanceServer, label: str | None
) -> None:
    first_event = conformance_server.last_event_id()
    report = run_suite(conformance_server.target(label), only=POP_CASES)
    statuses = {r.id: r.status for r in report.results}
    assert statuses["pop-tls13-exporter"] is Status.PASS, report.result("pop-tls13-exporter")
    # TLS 1.2 linking is judged too, where the label asks for linking at all.
    assert statuses["pop-wrong-challenge"] is (Status.PASS if label else Status.NA)
    sent = _exchanges(report.result("pop-tls13-exporter").evidence)
    assert [(e["tls"]["version"], e["status"]) for e in sent[-2:]] == [
        ("TLSv1.3", 200),
        ("TLSv1.3", 400),
    ]
    refused = conformance_server.refusals_since(first_event)
    assert any("does not match this TLS session's tls-exporter value" in e.message for e in refused)


def test_fake_server_that_checks_tls_exporter_passes_both_versions(
    fake_pki: FakePki, fake_server: Callable[..., FakeEstServer]
) -> None:
    server = fake_server(Faults(require_pop=True, tls_exporter_pop=True))
    report = run_suite(fake_target(fake_pki, server), only=POP_CASES)
    assert {r.id: r.status for r in report.results} == dict.fromkeys(POP_CASES, Status.PASS)
    wrong12 = _exchanges(report.result("pop-wrong-challenge").evidence)
    assert any(e["tls"]["version"] == "TLSv1.2" and e.get("status") == 400 for e in wrong12)
    # The replay reached the server and was refused there as a mismatch.
    assert any(a.status == 400 and "mismatch" in a.reason for a in server.answers)


@pytest.mark.parametrize("require_pop", [False, True])
def test_a_server_that_does_not_check_the_exporter_is_caught(
    fake_pki: FakePki, fake_server: Callable[..., FakeEstServer], require_pop: bool
) -> None:
    """The mutant: offers tls-exporter linking in /csrattrs, issues whatever value comes."""
    server = fake_server(
        Faults(require_pop=require_pop, tls_exporter_pop=True, exporter_unchecked=True)
    )
    for profile in ("nmos", "rfc7030"):
        report = run_suite(fake_target(fake_pki, server, profile=profile), only=POP_CASES)
        result = report.result("pop-tls13-exporter")
        assert result.status is Status.FAIL, (profile, result.message)
        assert "replay" in result.message and "accepted (200)" in result.message
        assert_fails_citing_requirement(report, {"pop-tls13-exporter"})
        # Only this case: the server still checks tls-unique under TLS 1.2.
        expected12 = Status.PASS if require_pop else Status.NA
        assert report.result("pop-wrong-challenge").status is expected12
        replay = _exchanges(result.evidence)[-1]
        assert (replay["tls"]["version"], replay["status"]) == ("TLSv1.3", 200)


@pytest.mark.parametrize("profile", ["nmos", "rfc7030"])
def test_a_server_without_tls13_pop_is_not_applicable(
    fake_pki: FakePki, fake_server: Callable[..., FakeEstServer], profile: str
) -> None:
    """No tls-exporter OID in /csrattrs: n/a (an extension), and TLS 1.2 PoP is still judged."""
    server = fake_server(Faults(require_pop=True))
    report = run_suite(fake_target(fake_pki, server, profile=profile), only=POP_CASES)
    result = report.result("pop-tls13-exporter")
    assert result.status is Status.NA
    assert "does not offer proof-of-possession linking under TLS 1.3" in result.message
    assert report.result("pop-wrong-challenge").status is Status.PASS
    assert report.exit_status == 0
