"""The revocation cases (issue 17 item 5) against estkit's server, whose certificates name its
OCSP responder and CRL, and against foreign responders that answer wrongly: an impostor whose
"good" is signed by another CA, and a responder that signs "good" with the real key whatever the
store says. Each verdict is shown to come from an answer that was fetched (the impostor records
the asks; the revoked certificate is revoked in the server's store)."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.x509 import ocsp

from estkit.ca.authority import CertificateAuthority
from estkit.cli.main import cli
from estkit.conformance import Status, run_suite
from estkit.conformance.cases import revocation
from estkit.conformance.target import command_revoker
from estkit.server.config import load_config, save_config

from .conftest import REVOCATION_CASES as CASES
from .conftest import SERVER_HOSTNAME, ConformanceServer, start_conformance_server

try:
    from tests.ocsp_impostor import Responder, forged_answer, lookalike_ca
except ImportError:  # pragma: no cover - depends on how pytest put tests/ on sys.path
    from ocsp_impostor import Responder, forged_answer, lookalike_ca  # type: ignore[no-redef]

# A foreign responder that never says revoked fails after this long (the case's bound is 10 s).
SHORT_VISIBILITY_SECONDS = 1.5


def revoke_command(server: ConformanceServer) -> str:
    """`estkit server revoke DIR {serial}` as an operator would give it to the suite."""
    estkit = [sys.executable, "-m", "estkit.cli.main", "server", "revoke"]
    return shlex.join([*estkit, str(server.paths.data_dir)]) + " {serial}"


def statuses(report: Any) -> dict[str, Status]:
    return {result.id: result.status for result in report.results}


def test_estkit_server_answers_good_and_revoked(conformance_server: ConformanceServer) -> None:
    # Without a way to revoke: the fresh-certificate cases pass, the others are skipped, saying
    # why (an operator step).
    report = run_suite(conformance_server.target(), only=CASES)
    assert statuses(report) == {
        "revocation-pointers": Status.PASS,
        "ocsp-good": Status.PASS,
        "crl-good": Status.PASS,
        "ocsp-revoked": Status.SKIP,
        "crl-revoked": Status.SKIP,
    }, {r.id: r.message for r in report.results}
    port = conformance_server.port
    pointers = report.result("revocation-pointers")
    assert f"https://{SERVER_HOSTNAME}:{port}/ocsp" in pointers.message
    good = report.result("ocsp-good").evidence["answers"][0]
    assert (good["status"], good["method"]) == ("good", "ocsp")
    assert "operator step" in report.result("ocsp-revoked").message

    # With the operator's revoke command (through the CLI flag): a certificate enrolled for it
    # is revoked in the server's store, and both the responder and the CRL say so.
    target_args = [
        "test-server", "--ip", "127.0.0.1", "--port", str(port),
        "--cacert", str(conformance_server.paths.ca_certificates),
        "--cert", str(conformance_server.paths.device_certificate),
        "--key", str(conformance_server.paths.device_key),
        "--only", "ocsp-revoked,crl-revoked", "--json", "-",
        "--revoke-command", revoke_command(conformance_server),
    ]  # fmt: skip
    result = CliRunner().invoke(cli, target_args)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    by_id = {r["id"]: r for r in document["results"]}
    assert by_id["ocsp-revoked"]["status"] == "pass", by_id["ocsp-revoked"]["message"]
    assert by_id["crl-revoked"]["status"] == "pass", by_id["crl-revoked"]["message"]
    answer = by_id["ocsp-revoked"]["evidence"]["answers"][0]
    assert answer["status"] == "revoked" and answer["method"] == "ocsp"
    store = conformance_server.store()
    try:
        assert store.get_issued(answer["serial"]).status == "revoked"
    finally:
        store.close()


def test_a_failing_revoke_command_skips_with_its_reason(
    conformance_server: ConformanceServer,
) -> None:
    target = dataclasses.replace(
        conformance_server.target(),
        revoke=command_revoker(f"{shlex.quote(sys.executable)} -c 'exit(7)' {{serial}}"),
    )
    report = run_suite(target, only=["ocsp-revoked"])
    result = report.result("ocsp-revoked")
    assert result.status is Status.SKIP
    assert "the revoke command exited with status 7" in result.message


def test_without_pointers_the_cases_say_so(fake_pki: Any, fake_server: Any) -> None:
    """The purpose-built server issues certificates without AIA and CRL DP: informational."""
    from .conftest import fake_target

    report = run_suite(fake_target(fake_pki, fake_server()), only=CASES[:3])
    pointers = report.result("revocation-pointers")
    assert pointers.status is Status.NA
    assert "names no OCSP responder (AIA) and no CRL distribution point" in pointers.message
    for case in CASES[1:3]:
        assert report.result(case).status is Status.NA
        assert report.result(case).message == pointers.message


@pytest.fixture
def foreign(tmp_path: Path, ocsp_impostor: Responder) -> Any:
    """A fresh estkit server whose certificates name ``ocsp_impostor`` as their OCSP responder
    (its own /crl stays the CRL)."""
    server = start_conformance_server(tmp_path / "server")
    config = load_config(server.paths.config)
    save_config(
        dataclasses.replace(
            config,
            public_url=ocsp_impostor.url,
            crl_url=f"https://{SERVER_HOSTNAME}:{server.port}/crl",
        ),
        server.paths.config,
    )
    yield server
    server.running.stop()


def answer_about_the_asked_certificate(
    server: ConformanceServer, mallory: CertificateAuthority, forgery: str
) -> Any:
    """Answer each OCSP request "good" about the certificate it names (from the server's store),
    signed as ``forgery`` says (see tests/ocsp_impostor.py)."""
    authority = CertificateAuthority.load(server.paths.data_dir / "ca")

    def answer(request: bytes) -> bytes:
        serial = format(ocsp.load_der_ocsp_request(request).serial_number, "x")
        store = server.store()
        try:
            leaf = store.get_issued(serial).certificate
        finally:
            store.close()
        return forged_answer(
            leaf, authority.issuer_certificate, mallory, revoked=False, forgery=forgery
        )

    return answer


def test_an_answer_signed_by_another_ca_fails_ocsp_good(
    foreign: ConformanceServer, ocsp_impostor: Responder, tmp_path: Path
) -> None:
    issuer = CertificateAuthority.load(foreign.paths.data_dir / "ca").issuer_certificate
    mallory = lookalike_ca(issuer, tmp_path / "mallory")
    ocsp_impostor.answer = answer_about_the_asked_certificate(foreign, mallory, "another-ca")
    report = run_suite(foreign.target(), only=CASES[:3])
    result = report.result("ocsp-good")
    assert ocsp_impostor.asked == ["/ocsp"]
    assert result.status is Status.FAIL
    assert "C16: no believable OCSP answer for a certificate just issued" in result.message
    assert "not signed by the issuer or a responder it delegated to" in result.message
    assert report.result("crl-good").status is Status.PASS  # the CRL is the server's own
    # Under the rfc7030 profile the same finding only warns, saying why.
    lenient = run_suite(foreign.target(profile="rfc7030"), only=["ocsp-good"])
    assert lenient.result("ocsp-good").status is Status.WARN
    assert "RFC 7030 does not cover certificate status" in lenient.result("ocsp-good").message


def test_good_for_a_revoked_serial_fails_ocsp_revoked(
    foreign: ConformanceServer,
    ocsp_impostor: Responder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A responder with the real key that says good whatever the store says: ocsp-good passes
    (its answer is believable), ocsp-revoked fails, the CRL is right."""
    monkeypatch.setattr(revocation, "REVOCATION_VISIBLE_SECONDS", SHORT_VISIBILITY_SECONDS)
    real = CertificateAuthority.load(foreign.paths.data_dir / "ca")
    ocsp_impostor.answer = answer_about_the_asked_certificate(foreign, real, "genuine")
    target = dataclasses.replace(foreign.target(), revoke=command_revoker(revoke_command(foreign)))
    report = run_suite(target, only=CASES)
    assert report.result("ocsp-good").status is Status.PASS
    result = report.result("ocsp-revoked")
    assert result.status is Status.FAIL, result.message
    assert f"OCSP {ocsp_impostor.url}/ocsp still says good" in result.message
    assert "s after the certificate (serial" in result.message
    assert report.result("crl-revoked").status is Status.PASS
    assert len(ocsp_impostor.asked) >= 2  # asked again while waiting for the revocation
