"""Revocation checks of the node's own certificates (C16): CRLs from the estkit CA, OCSP answers
made by OpenSSL's own responder (`openssl ocsp -reqin/-respout`, no network needed)."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from estkit.ca.authority import CertificateAuthority
from estkit.ca.crl import RevokedEntry
from estkit.ca.profiles import Profile
from estkit.nmos.revocation import (
    Revocation,
    build_ocsp_request,
    check_crl,
    check_ocsp_response,
    check_revocation,
)
from estkit.protocol.csr import build_csr
from estkit.protocol.keys import generate_private_key

NOW = datetime.now(UTC).replace(microsecond=0)
CRL_URL = "http://crl.nmos.test/issuing.crl"


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(
        tmp_path_factory.mktemp("ca"), key_type="p256", now=NOW - timedelta(days=1)
    )


def leaf(authority: CertificateAuthority) -> x509.Certificate:
    csr = build_csr(
        generate_private_key("p256"), common_name="n.nmos.test", dns_names=["n.nmos.test"]
    )
    return authority.issue(csr, Profile(), now=NOW, crl_url=CRL_URL)


def test_crl_good_and_revoked(authority: CertificateAuthority) -> None:
    cert = leaf(authority)
    issuer = authority.issuer_certificate
    clean = authority.build_crl([], now=NOW)
    assert check_crl(cert, issuer, clean, NOW, CRL_URL).status is Revocation.GOOD
    revoked = authority.build_crl([RevokedEntry(cert.serial_number, NOW)], now=NOW)
    result = check_crl(cert, issuer, revoked, NOW, CRL_URL)
    assert result.revoked and format(cert.serial_number, "x") in result.detail


def test_a_crl_signed_by_someone_else_is_ignored(
    authority: CertificateAuthority, tmp_path: Path
) -> None:
    cert = leaf(authority)
    stranger = CertificateAuthority.create(tmp_path / "x", key_type="p256", now=NOW)
    forged = stranger.build_crl([RevokedEntry(cert.serial_number, NOW)], now=NOW)
    result = check_crl(cert, authority.issuer_certificate, forged, NOW, CRL_URL)
    assert result.status is Revocation.UNKNOWN  # never "revoked" on a forged CRL


def test_stale_crl_is_unknown_not_good(authority: CertificateAuthority) -> None:
    cert = leaf(authority)
    old = authority.build_crl([], now=NOW - timedelta(hours=2), next_update_seconds=60)
    result = check_crl(cert, authority.issuer_certificate, old, NOW, CRL_URL)
    assert result.status is Revocation.UNKNOWN and "stale" in result.detail


def test_check_revocation_follows_the_distribution_point(authority: CertificateAuthority) -> None:
    cert = leaf(authority)
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return authority.build_crl([RevokedEntry(cert.serial_number, NOW)], now=NOW)

    result = check_revocation(cert, authority.issuer_certificate, now=NOW, fetch=fetch)
    assert fetched == [CRL_URL] and result.revoked


def test_unreachable_crl_is_unknown_and_says_why(authority: CertificateAuthority) -> None:
    def fetch(url: str) -> bytes:
        raise OSError("connection refused")

    result = check_revocation(leaf(authority), authority.issuer_certificate, now=NOW, fetch=fetch)
    assert result.status is Revocation.UNKNOWN and "connection refused" in result.detail


def _openssl_ocsp(
    authority: CertificateAuthority, cert: x509.Certificate, revoked: bool, tmp_path: Path
) -> bytes:
    """Answer our OCSP request with OpenSSL's responder, offline (-reqin/-respout)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    generation = authority.directory / "generations" / authority.generation
    expiry = cert.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
    serial = format(cert.serial_number, "X")
    if len(serial) % 2:
        serial = "0" + serial
    subject = "/CN=n.nmos.test"
    if revoked:
        line = f"R\t{expiry}\t{NOW:%y%m%d%H%M%SZ}\t{serial}\tunknown\t{subject}\n"
    else:
        line = f"V\t{expiry}\t\t{serial}\tunknown\t{subject}\n"
    (tmp_path / "index.txt").write_text(line)
    (tmp_path / "req.der").write_bytes(build_ocsp_request(cert, authority.issuer_certificate))
    completed = subprocess.run(
        [
            openssl, "ocsp", "-index", str(tmp_path / "index.txt"),
            "-CA", str(generation / "issuing.pem"),
            "-rsigner", str(generation / "issuing.pem"), "-rkey", str(generation / "issuing.key"),
            "-reqin", str(tmp_path / "req.der"), "-respout", str(tmp_path / "resp.der"),
            "-ndays", "1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    return (tmp_path / "resp.der").read_bytes()


@pytest.mark.parametrize("revoked", [False, True])
def test_ocsp_answers_from_openssl_are_understood(
    authority: CertificateAuthority, tmp_path: Path, revoked: bool
) -> None:
    cert = leaf(authority)
    answer = _openssl_ocsp(authority, cert, revoked, tmp_path)
    result = check_ocsp_response(cert, authority.issuer_certificate, answer, NOW, "ocsp")
    assert result.status is (Revocation.REVOKED if revoked else Revocation.GOOD), result.detail


def test_ocsp_answer_for_another_issuer_is_not_trusted(
    authority: CertificateAuthority, tmp_path: Path
) -> None:
    cert = leaf(authority)
    answer = _openssl_ocsp(authority, cert, True, tmp_path)
    stranger = CertificateAuthority.create(tmp_path / "x", key_type="p256", now=NOW)
    result = check_ocsp_response(cert, stranger.issuer_certificate, answer, NOW, "ocsp")
    assert result.status is Revocation.UNKNOWN
