"""The decisions behind the node's revocation checks (C16), made by estkit.client.status (the one
home the node uses): CRLs from the estkit CA, OCSP answers made by OpenSSL's own responder
(`openssl ocsp -reqin/-respout`, no network needed). The node over the network:
test_nmos_revocation_status.py."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from estkit.ca.authority import CertificateAuthority
from estkit.ca.crl import RevokedEntry
from estkit.ca.profiles import Profile
from estkit.client.errors import EstConnectionError
from estkit.client.status import (
    build_request,
    check_status,
    interpret_crl,
    interpret_ocsp_response,
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
    assert interpret_crl(cert, issuer, clean, now=NOW, source=CRL_URL).status == "good"
    revoked = authority.build_crl([RevokedEntry(cert.serial_number, NOW)], now=NOW)
    result = interpret_crl(cert, issuer, revoked, now=NOW, source=CRL_URL)
    assert result.revoked and result.serial == format(cert.serial_number, "x")
    assert f"serial {result.serial} revoked at" in result.describe()


def test_a_crl_signed_by_someone_else_is_ignored(
    authority: CertificateAuthority, tmp_path: Path
) -> None:
    cert = leaf(authority)
    stranger = CertificateAuthority.create(tmp_path / "x", key_type="p256", now=NOW)
    forged = stranger.build_crl([RevokedEntry(cert.serial_number, NOW)], now=NOW)
    result = interpret_crl(cert, authority.issuer_certificate, forged, now=NOW, source=CRL_URL)
    assert result.status == "unknown"  # never "revoked" on a forged CRL
    assert "not signed by" in result.problems[0]


def test_stale_crl_is_unknown_not_good(authority: CertificateAuthority) -> None:
    cert = leaf(authority)
    old = authority.build_crl([], now=NOW - timedelta(hours=2), next_update_seconds=60)
    result = interpret_crl(cert, authority.issuer_certificate, old, now=NOW, source=CRL_URL)
    assert result.status == "unknown" and "stale" in result.problems[0]


def test_stale_crl_still_proves_a_revocation(authority: CertificateAuthority) -> None:
    """A revocation cannot be undone: a signed CRL listing the certificate counts even when
    stale (the node drops the certificate); only "not listed" needs a fresh CRL."""
    cert = leaf(authority)
    old = authority.build_crl(
        [RevokedEntry(cert.serial_number, NOW - timedelta(hours=3), "keyCompromise")],
        now=NOW - timedelta(hours=2),
        next_update_seconds=60,
    )
    result = interpret_crl(cert, authority.issuer_certificate, old, now=NOW, source=CRL_URL)
    assert result.revoked and result.reason == "keyCompromise"


class CannedFetcher:
    """A StatusFetcher answering GETs from a function (the decision, without a network)."""

    def __init__(self, answer: Callable[[str], bytes]) -> None:
        self.answer = answer
        self.fetched: list[str] = []

    def get(self, url: str, limit: int) -> bytes:
        self.fetched.append(url)
        return self.answer(url)

    def post(self, url: str, body: bytes, content_type: str, limit: int) -> bytes:
        raise AssertionError("this certificate names no OCSP responder")


def test_check_status_follows_the_distribution_point(authority: CertificateAuthority) -> None:
    cert = leaf(authority)
    fetcher = CannedFetcher(
        lambda url: authority.build_crl([RevokedEntry(cert.serial_number, NOW)], now=NOW)
    )
    result = check_status(cert, authority.issuer_certificate, now=NOW, fetcher=fetcher)
    assert fetcher.fetched == [CRL_URL] and result.revoked and result.method == "crl"


def test_unreachable_crl_is_unknown_and_says_why(authority: CertificateAuthority) -> None:
    def refuse(url: str) -> bytes:
        raise EstConnectionError("connection refused")

    result = check_status(
        leaf(authority), authority.issuer_certificate, now=NOW, fetcher=CannedFetcher(refuse)
    )
    assert result.status == "unknown"
    assert result.problems == (f"CRL {CRL_URL}: connection refused",)


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
    (tmp_path / "req.der").write_bytes(build_request(cert, authority.issuer_certificate, None))
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
    result = interpret_ocsp_response(
        cert, authority.issuer_certificate, answer, nonce=None, now=NOW, source="ocsp"
    )
    assert result.status == ("revoked" if revoked else "good"), result.problems


def test_ocsp_answer_for_another_issuer_is_not_trusted(
    authority: CertificateAuthority, tmp_path: Path
) -> None:
    cert = leaf(authority)
    answer = _openssl_ocsp(authority, cert, True, tmp_path)
    stranger = CertificateAuthority.create(tmp_path / "x", key_type="p256", now=NOW)
    result = interpret_ocsp_response(
        cert, stranger.issuer_certificate, answer, nonce=None, now=NOW, source="ocsp"
    )
    assert result.status == "unknown"
