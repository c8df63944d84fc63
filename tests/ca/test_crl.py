"""CRLs signed by the issuing CA: contents, reasons, and verification by openssl."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from estkit.ca import CertificateAuthority, Profile, RevokedEntry, normalize_reason
from estkit.protocol import PrivateKey, build_csr

from .conftest import OpenSSL


def _crl_pem(openssl: OpenSSL, der: bytes, tmp_path: Path) -> Path:
    der_path, pem_path = tmp_path / "crl.der", tmp_path / "crl.pem"
    der_path.write_bytes(der)
    openssl.run("crl", "-inform", "DER", "-in", der_path, "-out", pem_path)
    return pem_path


def test_crl_contents_and_signature(
    ca_p384: CertificateAuthority, subject_keys: dict[str, PrivateKey]
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    entries = [
        RevokedEntry(0x1A2B, now - timedelta(hours=1), "keyCompromise"),
        RevokedEntry("00:0A:BC", now - timedelta(minutes=5), "superseded"),
        RevokedEntry(0x77, now, "unspecified"),
        RevokedEntry("1a2b", now, "cessationOfOperation"),  # duplicate serial: listed once
    ]
    crl = x509.load_der_x509_crl(ca_p384.build_crl(entries, now=now, next_update_seconds=3600))
    assert crl.issuer == ca_p384.issuer_certificate.subject
    assert crl.is_signature_valid(ca_p384.issuer_certificate.public_key())
    assert crl.last_update_utc == now
    assert crl.next_update_utc == now + timedelta(hours=1)
    assert len(crl) == 3
    first = crl.get_revoked_certificate_by_serial_number(0x1A2B)
    assert first is not None
    assert first.revocation_date_utc == now - timedelta(hours=1)
    assert first.extensions.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.key_compromise
    )
    second = crl.get_revoked_certificate_by_serial_number(0xABC)
    assert second is not None
    assert second.extensions.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.superseded
    )
    unspecified = crl.get_revoked_certificate_by_serial_number(0x77)
    assert unspecified is not None
    # RFC 5280 §5.3.1: reason "unspecified" SHOULD be absent.
    with pytest.raises(x509.ExtensionNotFound):
        unspecified.extensions.get_extension_for_class(x509.CRLReason)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number > 0
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca_p384.issuer_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert aki.key_identifier == ski.value.digest


def test_crl_numbers_increase(ca_p384: CertificateAuthority) -> None:
    now = datetime.now(UTC)
    first = x509.load_der_x509_crl(ca_p384.build_crl([], now=now))
    later = x509.load_der_x509_crl(ca_p384.build_crl([], now=now + timedelta(seconds=1)))
    numbers = [
        crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        for crl in (first, later)
    ]
    assert numbers[0] < numbers[1]
    assert len(first) == 0


def test_openssl_verifies_the_crl_and_sees_the_revocation(
    ca_p384: CertificateAuthority,
    subject_keys: dict[str, PrivateKey],
    openssl: OpenSSL,
    tmp_path: Path,
) -> None:
    revoked = ca_p384.issue(
        build_csr(subject_keys["p256"], common_name="gone.nmos.test"), Profile()
    )
    kept = ca_p384.issue(build_csr(subject_keys["p384"], common_name="kept.nmos.test"), Profile())
    crl = ca_p384.build_crl(
        [RevokedEntry(revoked.serial_number, datetime.now(UTC), "key_compromise")]
    )
    crl_pem = _crl_pem(openssl, crl, tmp_path)
    chain_file = openssl.write_pem([ca_p384.issuer_certificate, ca_p384.root_certificate])
    checked = openssl.run("crl", "-in", crl_pem, "-CAfile", chain_file, "-noout")
    assert "verify OK" in checked.stderr + checked.stdout
    listing = openssl.run("crl", "-in", crl_pem, "-noout", "-text").stdout
    serial_hex = f"{revoked.serial_number:X}"
    # openssl prints whole bytes: an odd number of hex digits gets a leading zero.
    serial_hex = serial_hex.zfill(len(serial_hex) + len(serial_hex) % 2)
    assert f"SERIAL NUMBER: {serial_hex}" in listing.upper()
    assert "Key Compromise" in listing

    common = {
        "roots": [ca_p384.root_certificate],
        "untrusted": [ca_p384.issuer_certificate],
        "extra": ["-crl_check", "-CRLfile", str(crl_pem)],
    }
    refused = openssl.verify(revoked, **common)
    assert refused.returncode != 0
    assert "certificate revoked" in refused.stdout + refused.stderr
    accepted = openssl.verify(kept, **common)
    assert accepted.returncode == 0, accepted.stderr


def test_a_crl_signed_by_another_ca_does_not_verify(
    ca_p384: CertificateAuthority, ca_rsa: CertificateAuthority, openssl: OpenSSL, tmp_path: Path
) -> None:
    crl_pem = _crl_pem(openssl, ca_rsa.build_crl([]), tmp_path)
    wrong = openssl.run(
        "crl",
        "-in",
        crl_pem,
        "-CAfile",
        openssl.write_pem([ca_p384.issuer_certificate]),
        "-noout",
        check=False,
    )
    assert "verify OK" not in wrong.stdout + wrong.stderr


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("keyCompromise", "keyCompromise"),
        ("key_compromise", "keyCompromise"),
        ("KEY-COMPROMISE", "keyCompromise"),
        ("superseded", "superseded"),
        ("cessation_of_operation", "cessationOfOperation"),
        ("unspecified", "unspecified"),
    ],
)
def test_reason_spellings(given: str, expected: str) -> None:
    assert normalize_reason(given) == expected


def test_bad_entries_are_refused_with_the_valid_choices() -> None:
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="unknown revocation reason 'stolen'; use one of"):
        RevokedEntry(1, now, "stolen")
    with pytest.raises(ValueError, match="not a certificate serial number"):
        RevokedEntry("xyz", now)
    with pytest.raises(ValueError, match="positive"):
        RevokedEntry(0, now)
    with pytest.raises(ValueError, match="timezone-aware"):
        RevokedEntry(1, datetime(2030, 1, 1))
    entry = RevokedEntry("0x00FF", now)
    assert entry.serial == 255 and entry.serial_hex == "ff"
