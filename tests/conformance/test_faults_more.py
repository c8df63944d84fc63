"""More faults of the purpose-built server, each caught by the right case(s) and only those.

Like test_faulty_servers.py, every fault gets a full run: the statuses that are not ``pass`` must
be exactly the compliant server's (:func:`expected_statuses`) plus the fault's own, so a fault
that also tripped an unrelated case, or a case that stayed green, fails the test. A witness then
shows from the server's record (or the case's evidence) that the probe really met the fault.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from estkit.conformance import Status, SuiteReport, run_suite

from .conftest import expected_statuses, fake_target, non_passing
from .fake_est import FakeEstServer, Faults
from .pki import FakePki
from .test_faulty_servers import assert_fails_citing_requirement

Witness = Callable[[FakeEstServer, SuiteReport], bool]
FAIL, WARN, NA, SKIP = Status.FAIL, Status.WARN, Status.NA, Status.SKIP


def answered(server: FakeEstServer, suffix: str, status: int, method: str | None = None) -> bool:
    return any(
        a.path.endswith(suffix) and a.status == status and (method is None or a.method == method)
        for a in server.answers
    )


def _probe(report: SuiteReport, case_id: str) -> dict[str, object]:
    return report.result(case_id).evidence["probe"]  # type: ignore[no-any-return]


FAULTS = [
    pytest.param(
        Faults(unknown_label_status=200), {"unknown-label": FAIL},
        lambda s, r: any(a.status == 200 and "no-such-label" in a.path for a in s.answers),
        id="unknown-label-served",
    ),
    pytest.param(
        Faults(unknown_label_status=403), {"unknown-label": WARN},
        lambda s, r: any(a.status == 403 and "no-such-label" in a.path for a in s.answers),
        id="unknown-label-403",
    ),
    pytest.param(
        Faults(wrong_method_status=200), {"wrong-method": FAIL},
        lambda s, r: answered(s, "/simpleenroll", 200, "GET"),
        id="get-on-simpleenroll-accepted",
    ),
    pytest.param(
        Faults(accept_bad_signature=True), {"bad-csr-signature": FAIL},
        lambda s, r: not any("signature" in a.reason for a in s.answers)
        and "signature" in r.result("bad-csr-signature").message,
        id="bad-csr-signature-accepted",
    ),
    pytest.param(
        Faults(csrattrs_not_csrattrs=True), {"csrattrs": FAIL},
        lambda s, r: answered(s, "/csrattrs", 200),
        id="csrattrs-unparseable",
    ),
    pytest.param(
        Faults(serverkeygen_wrong_key=True), {"serverkeygen-key": FAIL},
        lambda s, r: answered(s, "/serverkeygen", 200),
        id="serverkeygen-key-mismatch",
    ),
    pytest.param(
        Faults(drop_san=True), {"issued-matches-csr": FAIL},
        lambda s, r: "SAN lacks" in r.result("issued-matches-csr").message,
        id="issued-without-requested-san",
    ),
    pytest.param(
        # reenroll-changed-subject cannot judge a refusal when re-enrollment always fails.
        Faults(refuse_reenroll=True),
        {"reenroll-rsa": FAIL, "reenroll-ecdsa": FAIL, "reenroll-changed-subject": SKIP},
        lambda s, r: answered(s, "/simplereenroll", 400)
        and not answered(s, "/simplereenroll", 200),
        id="reenroll-refused",
    ),
    pytest.param(
        Faults(intermediate_ca=True), {"cacerts-chain": FAIL},
        lambda s, r: answered(s, "/simplereenroll", 200)
        and "Fake EST Issuing CA" in r.result("cacerts-chain").message,
        id="issuing-ca-missing-from-cacerts",
    ),
    pytest.param(
        Faults(tls12_only=True),
        {"tls13": WARN, "tls13-mandatory-suite": NA, "tls13-listed-suites": NA},
        lambda s, r: _probe(r, "tls12")["version"] == "TLSv1.2"
        and _probe(r, "tls13")["outcome"] == "refused",
        id="no-tls13",
    ),
    pytest.param(
        Faults(server_key_types=("rsa",)),
        # Without an ECDSA certificate the ECDHE-ECDSA suites cannot be negotiated either.
        {"server-certificate-types": WARN, "tls12-listed-suites": WARN},
        lambda s, r: "ECDHE_ECDSA" in r.result("tls12-listed-suites").message
        and "ECDHE_RSA" not in r.result("tls12-listed-suites").message,
        id="rsa-certificate-only",
    ),
    pytest.param(
        Faults(drop_ciphers=("ECDHE-RSA-AES128-GCM-SHA256",)), {"tls12-mandatory-suite": FAIL},
        lambda s, r: _probe(r, "tls12-mandatory-suite")["outcome"] == "refused",
        id="mandatory-tls12-suite-missing",
    ),
    pytest.param(
        Faults(drop_ciphers=("ECDHE-ECDSA-AES256-GCM-SHA384",)), {"tls12-listed-suites": WARN},
        lambda s, r: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
        in r.result("tls12-listed-suites").message,
        id="recommended-tls12-suite-missing",
    ),
    pytest.param(
        # TLS on the port still reaches the EST server; plain HTTP gets a 200 of its own.
        Faults(plain_http=True), {"no-plain-http": FAIL},
        lambda s, r: any(a.reason == "plain http" and a.path.endswith("/cacerts")
                         for a in s.answers)
        and answered(s, "/simpleenroll", 200)
        and r.result("no-plain-http").evidence["answer_start"].startswith("HTTP/1.1 200"),
        id="plain-http-on-est-port",
    ),
    pytest.param(
        # Raw DER parts: serverkeygen-key still passes (a tolerant client copes), E15 does not.
        Faults(serverkeygen_parts="der"), {"response-encoding": FAIL},
        lambda s, r: answered(s, "/serverkeygen", 200)
        and "part 1 (application/pkcs8) is DER" in r.result("response-encoding").message
        and "part 2 (application/pkcs7-mime; smime-type=certs-only) is DER"
        in r.result("response-encoding").message,
        id="serverkeygen-der-parts",
    ),
    pytest.param(
        Faults(serverkeygen_parts="no-cte"), {"response-encoding": WARN},
        lambda s, r: r.result("response-encoding").message.count(
            "lacks Content-Transfer-Encoding: base64") == 2,
        id="serverkeygen-parts-without-transfer-encoding",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("faults", "expected", "witness"), FAULTS)
def test_fault_is_caught_by_the_right_case_only(
    fake_pki: FakePki,
    fake_server: Callable[..., FakeEstServer],
    faults: Faults,
    expected: dict[str, Status],
    witness: Witness,
) -> None:
    server = fake_server(faults)
    report = run_suite(fake_target(fake_pki, server))
    assert non_passing(report) == {**expected_statuses(), **expected}, {
        r.id: r.message for r in report.results if r.status is not Status.PASS
    }
    flagged = {i for i, s in expected.items() if s in (FAIL, WARN)}
    assert_fails_citing_requirement(report, flagged)
    assert report.exit_status == (1 if FAIL in expected.values() else 0)
    assert witness(server, report)


def test_pop_checked_for_presence_only_is_caught(
    fake_pki: FakePki, fake_server: Callable[..., FakeEstServer]
) -> None:
    server = fake_server(Faults(require_pop=True, pop_presence_only=True))
    report = run_suite(fake_target(fake_pki, server))
    expected = {**expected_statuses(), "pop-wrong-challenge": FAIL}
    assert non_passing(report) == expected, {r.id: r.message for r in report.results}
    assert_fails_citing_requirement(report, {"pop-wrong-challenge"})
    # The server listed challengePassword, and issued for the CSR carrying the wrong one.
    assert answered(server, "/csrattrs", 200)
    evidence = report.result("pop-wrong-challenge").evidence["exchanges"]
    assert any(e["tls"]["version"] == "TLSv1.2" and e.get("status") == 200 for e in evidence)
