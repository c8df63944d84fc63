"""Each fault of a purpose-built server is caught by the right case(s), and only those.

Why a full run per fault: "only those" can only be shown by running every case; a fault that
also tripped an unrelated case would mean the suite blames the wrong requirement. Each test also
shows, from the server's own record of what it answered, that the probe reached it and what it
did, and third-party curl confirms the TLS faults independently of the suite.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable

import pytest

from estkit.conformance import Status, SuiteReport, run_suite

from .conftest import expected_statuses, fake_target
from .fake_est import Answer, FakeEstServer, Faults
from .pki import FakePki

try:
    from tests.system_packages import ensure_program
except ImportError:  # pragma: no cover
    from system_packages import ensure_program  # type: ignore[no-redef]

Witness = Callable[[list[Answer], SuiteReport], bool]


def failing(report: SuiteReport) -> set[str]:
    return {r.id for r in report.results if r.status is Status.FAIL}


def assert_fails_citing_requirement(report: SuiteReport, case_ids: set[str]) -> None:
    for case_id in case_ids:
        result = report.result(case_id)
        cited = re.findall(r"[ESTCD]\d+", result.requirement)
        assert any(req in result.message for req in cited), (case_id, result.message)


def curl_status(server: FakeEstServer, *args: str) -> tuple[int, str]:
    curl = ensure_program("curl", "curl")
    done = subprocess.run(
        [curl, "-sk", "-o", "/dev/null", "-w", "%{http_code}", *args,
         f"https://127.0.0.1:{server.port}/.well-known/est/cacerts"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return done.returncode, done.stdout


def test_compliant_fake_server_passes_everything(
    fake_pki: FakePki, fake_server: Callable[..., FakeEstServer]
) -> None:
    server = fake_server()
    report = run_suite(fake_target(fake_pki, server))
    statuses = {r.id: r.status for r in report.results}
    expected = expected_statuses()
    assert {i: s for i, s in statuses.items() if s is not Status.PASS} == expected
    assert report.exit_status == 0
    # The refusal cases were really refused by the server, for the reason they probe.
    answered = {(a.method, a.status) for a in server.answers}
    assert ("GET", 405) in answered and ("POST", 415) in answered and ("POST", 413) in answered
    assert any(a.status == 400 and "base64" in a.reason for a in server.answers)
    assert any(a.status == 400 and "signature" in a.reason for a in server.answers)
    assert any(a.status == 400 and "subject differs" in a.reason for a in server.answers)
    assert any(a.status == 403 and "client certificate" in a.reason for a in server.answers)
    # curl, offering only an RSA-key-exchange suite, is refused too (the suite's pass is right).
    code, _ = curl_status(server, "--tlsv1.2", "--tls-max", "1.2", "--ciphers", "AES128-GCM-SHA256")
    assert code != 0


FAULTS = [
    pytest.param(
        Faults(wrong_media_type=True), {"response-encoding"},
        lambda answers, _: any(a.status == 200 and a.path.endswith("/simpleenroll")
                               for a in answers),
        id="wrong-media-type",
    ),
    pytest.param(
        Faults(der_bodies=True), {"response-encoding"},
        lambda answers, _: any(a.status == 200 and a.path.endswith("cacerts") for a in answers),
        id="der-bodies",
    ),
    pytest.param(
        Faults(accept_wrong_content_type=True), {"wrong-content-type"},
        lambda answers, _: any(a.status == 200 and a.content_type == "text/plain" for a in answers),
        id="accepts-wrong-content-type",
    ),
    pytest.param(
        Faults(crash_on_bad_base64=True), {"malformed-base64"},
        lambda answers, _: any(a.status == 500 for a in answers),
        id="500-on-bad-base64",
    ),
    pytest.param(
        Faults(no_size_limit=True), {"oversized-body"},
        lambda answers, _: not any(a.status == 413 for a in answers)
        and any(a.status == 400 and "base64" not in a.reason for a in answers),
        id="no-413",
    ),
    pytest.param(
        Faults(issue_without_client_cert=True), {"no-cert-without-client-auth"},
        lambda answers, _: any(a.status == 200 for a in answers),
        id="issues-without-client-cert",
    ),
    pytest.param(
        Faults(accept_changed_subject=True), {"reenroll-changed-subject"},
        lambda answers, _: sum(a.status == 200 and a.path.endswith("simplereenroll")
                            for a in answers) >= 3,
        id="accepts-changed-subject",
    ),
    pytest.param(
        Faults(refuse_rsa=True), {"enroll-rsa", "rsa-and-ecdsa"},
        lambda answers, _: any(a.status == 400 and "RSA" in a.reason for a in answers),
        id="ecdsa-only",
    ),
    pytest.param(
        Faults(defer_without_retry_after=True), {"retry-after"},
        lambda answers, _: any(a.status == 202 for a in answers),
        id="202-without-retry-after",
    ),
    pytest.param(
        Faults(self_signed_tls=True), {"server-certificate-valid", "cacerts-root"},
        lambda answers, _: any(a.status == 200 and a.path.endswith("/simpleenroll")
                               for a in answers),
        id="tls-certificate-not-from-cacerts",
    ),
    pytest.param(
        Faults(server_names=("*.fake.test",)), {"server-certificate-names"},
        # Both certificates (RSA and ECDSA) were seen and named, yet EST over TLS still worked.
        lambda answers, report: any(a.status == 200 and a.path.endswith("simpleenroll")
                                    for a in answers)
        and [c["subject"] for c in report.result("server-certificate-names")
             .evidence["certificates"]] == ["CN=*.fake.test", "CN=*.fake.test"]
        and "wildcard name *.fake.test" in report.result("server-certificate-names").message,
        id="wildcard-server-certificate",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("faults", "expected", "witness"), FAULTS)
def test_fault_is_caught_by_the_right_case_only(
    fake_pki: FakePki,
    fake_server: Callable[..., FakeEstServer],
    faults: Faults,
    expected: set[str],
    witness: Witness,
) -> None:
    server = fake_server(faults)
    report = run_suite(fake_target(fake_pki, server))
    assert failing(report) == expected, {
        r.id: r.message for r in report.results if r.status is Status.FAIL
    }
    assert_fails_citing_requirement(report, expected)
    assert report.exit_status == 1
    assert witness(server.answers, report)


def test_basic_challenge_fails_s5_only(
    fake_pki: FakePki, fake_server: Callable[..., FakeEstServer]
) -> None:
    server = fake_server(Faults(basic_challenge=True))
    report = run_suite(fake_target(fake_pki, server, basic="user:secret"))
    # C8 fails with S5: this server challenges a node presenting its manufacturer certificate.
    assert failing(report) == {"no-http-auth-challenge", "enroll-manufacturer-only"}
    assert "S5" in report.result("enroll-manufacturer-only").message
    result = report.result("no-http-auth-challenge")
    assert "S5" in result.message and "Basic" in result.message
    assert any(a.status == 401 for a in server.answers)


@pytest.mark.parametrize(
    ("suite", "case_id"),
    [
        ("AES128-GCM-SHA256", "tls12-rsa-kex-refused"),
        ("ECDHE-RSA-AES128-SHA", "tls12-cbc-sha1-refused"),
        ("ECDHE-RSA-CHACHA20-POLY1305", "tls12-other-suites-refused"),
    ],
)
def test_non_listed_suite_accepted_is_caught(
    fake_pki: FakePki, fake_server: Callable[..., FakeEstServer], suite: str, case_id: str
) -> None:
    server = fake_server(Faults(extra_ciphers=suite))
    # curl, an independent TLS client, confirms the server really accepts the suite.
    code, status = curl_status(server, "--tlsv1.2", "--tls-max", "1.2", "--ciphers", suite)
    assert (code, status) == (0, "200")
    report = run_suite(fake_target(fake_pki, server))
    assert failing(report) == {case_id}
    result = report.result(case_id)
    assert "T3" in result.message and suite in result.message
    accepted = [h for h in result.evidence["handshakes"] if h["outcome"] == "accepted"]
    assert [h["cipher"] for h in accepted] == [suite]


def test_deferral_with_retry_after_is_waited_out(
    fake_pki: FakePki, fake_server: Callable[..., FakeEstServer]
) -> None:
    server = fake_server(Faults(defer_first=1))
    report = run_suite(fake_target(fake_pki, server), only=["enroll-ecdsa", "retry-after"])
    assert report.result("enroll-ecdsa").status is Status.PASS
    assert report.result("retry-after").status is Status.PASS
    enrolls = [a.status for a in server.answers if a.path.endswith("/simpleenroll")]
    assert enrolls[:2] == [202, 200]


def test_pop_linking_checked_when_required(
    fake_pki: FakePki, fake_server: Callable[..., FakeEstServer]
) -> None:
    server = fake_server(Faults(require_pop=True))
    report = run_suite(
        fake_target(fake_pki, server), only=["csrattrs", "enroll-ecdsa", "pop-wrong-challenge"]
    )
    assert {r.id: r.status for r in report.results} == {
        "csrattrs": Status.PASS,
        "enroll-ecdsa": Status.PASS,
        "pop-wrong-challenge": Status.PASS,
    }
    assert any(a.status == 400 and "mismatch" in a.reason for a in server.answers)
    evidence = report.result("pop-wrong-challenge").evidence["exchanges"]
    assert any(e["tls"]["version"] == "TLSv1.2" and e.get("status") == 400 for e in evidence)


def test_serverkeygen_absent_is_a_warning_not_a_failure(
    fake_pki: FakePki, fake_server: Callable[..., FakeEstServer]
) -> None:
    server = fake_server(Faults(no_serverkeygen=True))
    report = run_suite(
        fake_target(fake_pki, server), only=["serverkeygen-offered", "serverkeygen-key"]
    )
    assert report.result("serverkeygen-offered").status is Status.WARN
    assert "S1" in report.result("serverkeygen-offered").message
    assert report.result("serverkeygen-key").status is Status.NA
    assert report.exit_status == 0
    assert server.statuses("/serverkeygen") == [404]
