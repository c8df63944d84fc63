"""Fair verdicts against servers that are not estkit (issue 13), over real TLS.

Digest-only credentials, an early 413 that closes the connection while the suite is still
sending, and the rfc7030 profile's warnings for what RFC 7030 leaves to SHOULD/MAY/CA policy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from estkit.cli.main import cli
from estkit.conformance import CASE_IDS, Status, run_suite
from estkit.conformance.cases import est as est_cases

from .conftest import FakeFactory, fake_target, non_passing
from .fake_est import BASIC_PASSWORD, BASIC_USER, DIGEST_PASSWORD, DIGEST_USER, Faults
from .pki import FakePki

DIGEST = f"{DIGEST_USER}:{DIGEST_PASSWORD}"

# What a server whose only deviations are SHOULD/MAY/CA policy does (the C server of issue 13):
# ignores unknown labels, copies no SAN from the CSR, re-issues a changed subject, answers an
# oversized body with 413 from the headers and hangs up; certifies ECDSA keys only, and issues to
# clients without a certificate (its policy: HTTP auth or an open lab).
POLICY_FAULTS = Faults(
    refuse_rsa=True,
    issue_without_client_cert=True,
    unknown_label_status=200,
    drop_san=True,
    accept_changed_subject=True,
    early_413_close=True,
)
POLICY_CASES = {
    "unknown-label",
    "issued-matches-csr",
    "reenroll-changed-subject",
    "enroll-rsa",
    "no-cert-without-client-auth",
}


def _skips(statuses: dict[str, Status]) -> set[str]:
    return {case for case, status in statuses.items() if status is Status.SKIP}


def test_digest_only_server_is_tested_as_fully_as_basic(
    fake_pki: FakePki, fake_server: FakeFactory
) -> None:
    basic_server = fake_server(Faults(basic_challenge=True))
    digest_server = fake_server(Faults(digest_challenge=True))
    basic = run_suite(fake_target(fake_pki, basic_server, basic="user:secret", profile="rfc7030"))
    digest = run_suite(fake_target(fake_pki, digest_server, digest=DIGEST, profile="rfc7030"))
    assert digest.exit_status == 0, {r.id: r.message for r in digest.results if r.status == "fail"}
    assert non_passing(digest) == non_passing(basic)
    assert len(_skips(non_passing(digest)) - _skips(non_passing(basic))) <= 5
    # The Digest challenge was answered, the stale nonce answered again with the fresh one, and
    # the server (which verifies the response hash) issued: enroll-rsa is the first POST.
    exchanges = [
        x
        for x in digest.result("enroll-rsa").evidence["exchanges"]
        if x["request"].endswith("/simpleenroll")
    ]
    assert [x.get("status") for x in exchanges] == [401, 401, 200]
    assert "stale=true" in exchanges[1]["headers"]["www-authenticate"]
    assert 200 in digest_server.statuses("/simpleenroll")


def test_wrong_digest_password_is_refused_by_the_server(
    fake_pki: FakePki, fake_server: FakeFactory
) -> None:
    server = fake_server(Faults(digest_challenge=True))
    report = run_suite(
        fake_target(fake_pki, server, digest=f"{DIGEST_USER}:wrong", profile="rfc7030"),
        only=["enroll-ecdsa"],
    )
    result = report.result("enroll-ecdsa")
    assert result.status is Status.FAIL and "401" in result.message
    answered = [x for x in result.evidence["exchanges"] if x.get("status") == 401]
    # The challenge and the refusal of the (wrong) answer, no more (no loop), for the ECDSA
    # enrollment and the RSA one its rfc7030 verdict consults.
    assert len(answered) == 4
    assert [a.reason for a in server.answers if a.status == 401][-1] == "digest: wrong"


def test_digest_with_pop_rebuilds_the_csr_for_each_connection(
    fake_pki: FakePki, fake_server: FakeFactory
) -> None:
    server = fake_server(Faults(digest_challenge=True, require_pop=True))
    report = run_suite(
        fake_target(fake_pki, server, digest=DIGEST, profile="rfc7030"),
        only=["enroll-ecdsa", "pop-wrong-challenge"],
    )
    assert report.result("enroll-ecdsa").status is Status.PASS
    assert report.result("pop-wrong-challenge").status is Status.PASS
    # One PoP refusal, the deliberate one: every other answer carried a CSR linked to its own
    # connection, although each challenge and each answer had a connection of its own.
    refusals = [a for a in server.answers if "proof-of-possession" in a.reason]
    assert len(refusals) == 1


def test_early_413_and_close_gets_the_same_verdict_three_times(
    fake_pki: FakePki, fake_server: FakeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Loopback buffers swallow the case's 1 MiB before the server answers; 16 MiB is more than
    # Linux lets a socket buffer (4 MiB), so the suite is still sending when the 413 and the
    # close arrive, as over a real network.
    monkeypatch.setattr(est_cases, "OVERSIZED_REQUEST_BYTES", 16 * 1024 * 1024)
    server = fake_server(Faults(early_413_close=True))
    target = fake_target(fake_pki, server)
    verdicts = []
    for _run in range(3):
        result = run_suite(target, only=["oversized-body"]).result("oversized-body")
        posted = [x for x in result.evidence["exchanges"] if x.get("status") == 413]
        assert posted and "send_interrupted" in posted[-1], result.evidence
        verdicts.append((result.status, result.message))
    assert verdicts == [verdicts[0]] * 3
    assert verdicts[0][0] is Status.PASS
    assert server.statuses("/simpleenroll").count(413) == 3


@pytest.mark.parametrize("profile", ["rfc7030", "nmos"])
def test_policy_deviations_warn_under_rfc7030_and_fail_under_nmos(
    fake_pki: FakePki, fake_server: FakeFactory, profile: str
) -> None:
    server = fake_server(POLICY_FAULTS)
    only = [*POLICY_CASES, "oversized-body", "enroll-ecdsa", "reenroll-ecdsa"]
    report = run_suite(fake_target(fake_pki, server, profile=profile), only=only)
    statuses = {r.id: r.status for r in report.results}
    assert statuses["oversized-body"] is Status.PASS  # read the early 413 despite the close
    if profile == "rfc7030":
        assert report.exit_status == 0
        for case_id in POLICY_CASES:
            result = report.result(case_id)
            assert result.status is Status.WARN, (case_id, result.message)
            assert "RFC 7030 §" in result.message and "rfc7030 profile" in result.message
    else:
        assert {c for c, s in statuses.items() if s is Status.FAIL} == POLICY_CASES


def _cli_args(pki: FakePki, port: int) -> list[str]:
    return [
        "test-server",
        "--ip", "127.0.0.1",
        "--port", str(port),
        "--cacert", str(pki.cacert),
        "--cert", str(pki.device_cert),
        "--key", str(pki.device_key_path),
    ]  # fmt: skip


def test_cli_digest_option(fake_pki: FakePki, fake_server: FakeFactory) -> None:
    server = fake_server(Faults(digest_challenge=True))
    args = [*_cli_args(fake_pki, server.port), "--profile", "rfc7030", "--only", "enroll-ecdsa"]
    answered = CliRunner().invoke(cli, [*args, "--digest", DIGEST, "--json", "-"])
    assert answered.exit_code == 0, answered.output
    assert json.loads(answered.stdout)["results"][0]["status"] == "pass"
    # Without --digest the same server refuses: the pass above came from answering Digest.
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 1
    malformed = CliRunner().invoke(cli, [*args, "--digest", "no-colon"])
    assert (
        malformed.exit_code != 0 and "digest credentials must be USER:PASSWORD" in malformed.output
    )
    assert "--digest" in malformed.output  # the CLI names its flag for the digest parameter


def test_every_case_has_a_row_in_the_verdict_table() -> None:
    table = (Path(__file__).parents[2] / "docs" / "conformance-verdicts.md").read_text()
    named = {
        case.strip()
        for line in table.splitlines()
        if line.startswith("| ")
        for case in line.split("|")[1].split(",")
    }
    assert set(CASE_IDS) <= named, sorted(set(CASE_IDS) - named)


@pytest.mark.parametrize(
    ("faults", "case_id", "remark"),
    [
        (Faults(csrattrs_trailing_nul=True), "csrattrs", "NUL"),
        (Faults(serverkeygen_pkcs1=True), "serverkeygen-key", "PKCS#1"),
    ],
)
def test_tolerated_quirks_warn_and_say_what_was_seen(
    fake_pki: FakePki, fake_server: FakeFactory, faults: Faults, case_id: str, remark: str
) -> None:
    server = fake_server(faults)
    for profile in ("rfc7030", "nmos"):
        result = run_suite(fake_target(fake_pki, server, profile=profile), only=[case_id]).result(
            case_id
        )
        assert result.status is Status.WARN, result.message
        assert remark in result.message


def test_tls12_only_server_passes_rfc7030_and_warns_t1_under_nmos(
    fake_pki: FakePki, fake_server: FakeFactory
) -> None:
    server = fake_server(Faults(tls12_only=True))
    only = ["tls12", "tls13", "enroll-ecdsa", "pop-wrong-challenge"]
    plain = run_suite(fake_target(fake_pki, server, profile="rfc7030"), only=only)
    assert plain.exit_status == 0
    assert plain.result("tls13").status is Status.NA
    nmos = run_suite(fake_target(fake_pki, server), only=only)
    assert nmos.result("tls13").status is Status.WARN and "T1" in nmos.result("tls13").message
    assert nmos.result("enroll-ecdsa").status is Status.PASS


def test_preemptive_basic_for_a_server_that_never_challenges(
    fake_pki: FakePki, fake_server: FakeFactory
) -> None:
    server = fake_server(Faults(basic_upfront=True))
    credentials = f"{BASIC_USER}:{BASIC_PASSWORD}"
    only = ["enroll-ecdsa", "no-cert-without-client-auth"]
    silent = run_suite(fake_target(fake_pki, server, basic=credentials), only=only)
    assert silent.result("enroll-ecdsa").status is Status.FAIL  # 403: nothing to answer
    upfront = run_suite(
        fake_target(fake_pki, server, basic=credentials, basic_preemptive=True), only=only
    )
    assert upfront.result("enroll-ecdsa").status is Status.PASS
    # The probe of a client without credentials still sends none (and is refused).
    assert upfront.result("no-cert-without-client-auth").status is Status.PASS
    # run 1: ECDSA and RSA enrollments refused; run 2: both issued, then the anonymous probe
    # refused (it sent no credentials)
    assert server.statuses("/simpleenroll") == [403, 403, 200, 200, 403]
