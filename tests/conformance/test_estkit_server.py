"""The suite against estkit's own server: all pass when configured correctly, and each fault made
with a real configuration option is caught by the right case only.

The server is set up with estkit.server helpers (init_data_dir, add_label, add_user,
add_trusted_client_root); the suite itself only talks to it over HTTPS and TLS.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from estkit.ca.authority import CertificateAuthority
from estkit.conformance import Status, SuiteReport, Target, make_rogue_identity, run_suite
from estkit.conformance.target import Identity
from estkit.fileio import write_file_atomic
from estkit.protocol import certificates_to_pem, load_pem_certificates, load_private_key
from estkit.server.config import add_trusted_client_root
from estkit.server.runner import start_server_thread

from .conftest import (
    ConformanceServer,
    expected_statuses,
    non_passing,
    start_conformance_server,
)

# Refusal cases → (HTTP status, words of the reason) the server must have logged for the probe.
REFUSALS = {
    "unknown-label": (404, "label"),
    "wrong-method": (405, "GET"),
    "wrong-content-type": (415, "Content-Type"),
    "malformed-base64": (400, "base64"),
    "bad-csr-signature": (400, "signature"),
    "oversized-body": (413, "limit"),
    "reenroll-changed-subject": (409, "subject"),
    "rogue-client-refused": (403, "does not verify"),
    "no-cert-without-client-auth": (403, "client certificate"),
}


def failing(report: SuiteReport) -> set[str]:
    return {r.id for r in report.results if r.status is Status.FAIL}


def test_full_run_against_a_correct_server_passes(
    conformance_server: ConformanceServer,
) -> None:
    first_event = conformance_server.last_event_id()
    started = time.perf_counter()
    report = run_suite(conformance_server.target())
    elapsed = time.perf_counter() - started
    print(f"\nfull conformance run against estkit: {elapsed:.2f} s, {len(report.results)} cases")
    assert len(report.results) >= 25
    assert non_passing(report) == expected_statuses(
        offers_tls_exporter=True, names_status_urls=True
    )
    assert report.exit_status == 0
    # Every refusal case reached the server and was refused there for the reason it probes.
    refusals = conformance_server.refusals_since(first_event)
    for case_id, (status, words) in REFUSALS.items():
        probe = report.result(case_id).evidence
        logged = [e for e in refusals if e.fields.get("status") == status and words in e.message]
        assert logged, f"{case_id}: no {status} refusal mentioning {words!r} in the server log"
        sent = [x.get("status") for x in probe["exchanges"]]
        assert status in sent, (case_id, sent)
    # Evidence records HTTP status, headers and the negotiated TLS parameters.
    enroll = report.result("enroll-rsa").evidence["exchanges"][-1]
    assert enroll["status"] == 200
    assert enroll["headers"]["content-type"].startswith("application/pkcs7-mime")
    assert enroll["tls"]["version"] in ("TLSv1.2", "TLSv1.3") and enroll["tls"]["cipher"]


def test_rfc7030_label_with_http_challenge_fails_s5_only(
    conformance_server: ConformanceServer,
) -> None:
    report = run_suite(conformance_server.target("http", basic="alice:wonderland"))
    assert failing(report) == {"no-http-auth-challenge"}
    result = report.result("no-http-auth-challenge")
    assert "S5" in result.message and "Basic" in result.message
    assert any(x.get("status") == 401 for x in result.evidence["exchanges"])


def test_rfc7030_profile_accepts_the_http_label(conformance_server: ConformanceServer) -> None:
    report = run_suite(
        conformance_server.target("http", basic="alice:wonderland", profile="rfc7030")
    )
    assert report.exit_status == 0, {r.id: r.message for r in report.results if r.status == "fail"}
    assert report.result("no-http-auth-challenge").status is Status.NA
    assert report.result("enroll-rsa").status is Status.PASS


def test_profile_without_client_auth_eku_fails_s7_only(
    conformance_server: ConformanceServer,
) -> None:
    report = run_suite(conformance_server.target("noclient"))
    assert failing(report) == {"eku-server-client"}
    assert "S7" in report.result("eku-server-client").message
    assert "clientAuth" in report.result("eku-server-client").message
    # Re-enrolling needs clientAuth: those cases say they were blocked by S7, not that E3 failed.
    for case_id in ("reenroll-rsa", "reenroll-ecdsa"):
        result = report.result(case_id)
        assert result.status is Status.SKIP and "S7" in result.message


def test_pop_label_checks_the_challenge_password(conformance_server: ConformanceServer) -> None:
    first_event = conformance_server.last_event_id()
    report = run_suite(
        conformance_server.target("pop"),
        only=["csrattrs", "enroll-ecdsa", "enroll-rsa", "pop-wrong-challenge"],
    )
    assert {r.id: r.status for r in report.results} == dict.fromkeys(
        ["csrattrs", "enroll-ecdsa", "enroll-rsa", "pop-wrong-challenge"], Status.PASS
    )
    refused = conformance_server.refusals_since(first_event)
    assert any("challengePassword" in e.message or "tls-unique" in e.message for e in refused)


def test_manual_approval_is_reported_as_deferred(conformance_server: ConformanceServer) -> None:
    report = run_suite(conformance_server.target("manual"), only=["enroll-ecdsa", "retry-after"])
    assert report.result("enroll-ecdsa").status is Status.WARN
    assert "deferred" in report.result("enroll-ecdsa").message
    assert report.result("retry-after").status is Status.PASS
    assert report.exit_status == 0


def test_trust_list_with_the_rogue_ca_fails_the_rogue_case_only(tmp_path: Path) -> None:
    server = start_conformance_server(tmp_path / "data")
    try:
        paths = server.paths
        manufacturer = Identity(
            "manufacturer",
            tuple(load_pem_certificates(paths.device_certificate.read_bytes())),
            load_private_key(paths.device_key.read_bytes()),  # type: ignore[arg-type]
        )
        rogue, rogue_cas = make_rogue_identity(manufacturer)
        rogue_ca_pem = tmp_path / "rogue-ca.pem"
        write_file_atomic(rogue_ca_pem, certificates_to_pem(rogue_cas))
        server.running.stop()
        add_trusted_client_root(paths.config, rogue_ca_pem)
        server.running = start_server_thread(paths.data_dir)
        report = run_suite(replace(server.target(), rogue=rogue))
        assert failing(report) == {"rogue-client-refused"}
        result = report.result("rogue-client-refused")
        assert "S3" in result.message and "given as the rogue certificate" in result.message
    finally:
        server.running.stop()


def test_a_server_in_root_rollover_still_passes_everything(tmp_path: Path) -> None:
    """After `estkit server rollover` the server's TLS certificate still comes from the previous
    issuing CA: /cacerts must carry it, or clients cannot anchor the server (cacerts-root)."""
    server = start_conformance_server(tmp_path / "data")
    try:
        CertificateAuthority.load(server.paths.data_dir / "ca").rollover()
        report = run_suite(server.target())
        assert non_passing(report) == expected_statuses(
            offers_tls_exporter=True, names_status_urls=True
        ), [(r.id, r.message) for r in report.results if r.status is Status.FAIL]
        served = report.result("cacerts-root")
        assert served.status is Status.PASS
    finally:
        server.running.stop()


@pytest.mark.parametrize("only", [["tls12", "tls13", "cacerts-root"]])
def test_only_runs_the_named_cases(conformance_server: ConformanceServer, only: list[str]) -> None:
    report = run_suite(conformance_server.target(), only=only)
    assert [r.id for r in report.results] == ["cacerts-root", "tls12", "tls13"]
    assert all(r.status is Status.PASS for r in report.results)


def test_shared_session_server(estkit_server: Any) -> None:
    """The project-wide fixture server, made with the default "localhost" data directory, passes
    the whole suite: its TLS certificates name DNS names only (BCP-003-01 T4)."""
    paths = estkit_server.paths
    target = Target.from_files(
        host="127.0.0.1",
        port=estkit_server.port,
        cacert=paths.ca_certificates,
        cert=paths.device_certificate,
        key=paths.device_key,
    )
    report = run_suite(target)
    server_certs = [
        x509.load_pem_x509_certificates(Path(p).read_bytes())[0] for p in paths.server_certificates
    ]
    for cert in server_certs:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.IPAddress) == []
        assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert failing(report) == set()
    assert report.result("server-certificate-names").status is Status.PASS
