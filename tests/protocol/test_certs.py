"""PEM bundles, fingerprints and name helpers."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from estkit.protocol import (
    EncodingError,
    PrivateKey,
    certificates_to_pem,
    common_name,
    dns_names,
    fingerprint_matches,
    format_fingerprint,
    is_self_signed,
    load_pem_certificates,
    parse_fingerprint,
    sha256_fingerprint,
)
from estkit.protocol.certs import is_ca_certificate, is_signed_by, order_certificates

from .helpers import make_cert, run_openssl


def test_pem_round_trip_keeps_order(ca_cert: x509.Certificate, leaf_cert: x509.Certificate) -> None:
    pem = certificates_to_pem([leaf_cert, ca_cert])
    assert pem.count(b"-----BEGIN CERTIFICATE-----") == 2
    assert load_pem_certificates(pem) == [leaf_cert, ca_cert]


@pytest.mark.parametrize("data", [b"", b"no pem here", b"-----BEGIN CERTIFICATE-----\nAAAA\n"])
def test_load_pem_certificates_refuses_bundles_without_certificates(data: bytes) -> None:
    with pytest.raises(EncodingError, match="PEM certificate"):
        load_pem_certificates(data)


def test_fingerprint_forms_agree_with_openssl(tmp_path: Path, leaf_cert: x509.Certificate) -> None:
    digest = leaf_cert.fingerprint(hashes.SHA256())
    assert sha256_fingerprint(leaf_cert) == "sha256:" + digest.hex()
    assert len(sha256_fingerprint(leaf_cert)) == len("sha256:") + 64
    assert format_fingerprint(leaf_cert) == ":".join(f"{b:02X}" for b in digest)
    pem_path = tmp_path / "leaf.pem"
    pem_path.write_bytes(certificates_to_pem([leaf_cert]))
    out = run_openssl("x509", "-in", str(pem_path), "-noout", "-fingerprint", "-sha256").decode()
    assert out.strip().split("=", 1)[1] == format_fingerprint(leaf_cert)
    assert fingerprint_matches(leaf_cert, out.strip())


def test_parse_fingerprint_accepts_common_spellings(leaf_cert: x509.Certificate) -> None:
    digest = leaf_cert.fingerprint(hashes.SHA256())
    for text in (
        sha256_fingerprint(leaf_cert),
        sha256_fingerprint(leaf_cert).upper(),
        format_fingerprint(leaf_cert),
        digest.hex(),
        "  " + format_fingerprint(leaf_cert).lower() + "\n",
        "SHA256 Fingerprint=" + format_fingerprint(leaf_cert),
    ):
        assert parse_fingerprint(text) == digest
        assert fingerprint_matches(leaf_cert, text)


def test_fingerprint_mismatch(ca_cert: x509.Certificate, leaf_cert: x509.Certificate) -> None:
    assert not fingerprint_matches(leaf_cert, sha256_fingerprint(ca_cert))


@pytest.mark.parametrize("text", ["", "sha256:", "abcd", "g" * 64, "ab" * 33, "sha1:" + "ab" * 32])
def test_parse_fingerprint_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValueError, match="not a SHA-256 fingerprint"):
        parse_fingerprint(text)


def test_names(leaf_cert: x509.Certificate, ca_cert: x509.Certificate) -> None:
    assert dns_names(leaf_cert) == ["device.example", "alt.example"]
    assert dns_names(ca_cert) == []
    assert common_name(leaf_cert) == "device.example"
    assert common_name(ca_cert) == "estkit Test Root"


def test_common_name_absent(p256_key: PrivateKey) -> None:
    subject = x509.Name([x509.NameAttribute(x509.NameOID.SERIAL_NUMBER, "1234")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(p256_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(p256_key, hashes.SHA256())
    )
    assert common_name(cert) is None


def test_self_signed_checks_name_and_signature(
    ca_cert: x509.Certificate, leaf_cert: x509.Certificate, p256_key: PrivateKey
) -> None:
    assert is_self_signed(ca_cert)
    assert not is_self_signed(leaf_cert)  # issued by the CA
    # Same subject and issuer names but signed by another key: self-issued, not self-signed.
    other_key_signed = make_cert(p256_key, "Same", issuer_key=_other_key(), issuer="Same")
    assert not is_self_signed(other_key_signed)
    assert is_signed_by(leaf_cert, ca_cert)
    assert not is_signed_by(ca_cert, leaf_cert)
    assert is_ca_certificate(ca_cert)
    assert not is_ca_certificate(leaf_cert)


def _other_key() -> PrivateKey:
    from estkit.protocol import generate_private_key

    return generate_private_key("p256")


def test_order_certificates_three_levels_and_strays(
    ca_key: PrivateKey, ca_cert: x509.Certificate, p256_key: PrivateKey
) -> None:
    issuing_key = _other_key()
    issuing = make_cert(issuing_key, "Issuing", issuer_key=ca_key, issuer="estkit Test Root")
    leaf = make_cert(p256_key, "leaf", issuer_key=issuing_key, issuer="Issuing", ca=False)
    stray = make_cert(_other_key(), "Stray")
    assert order_certificates([ca_cert, leaf, issuing]) == [leaf, issuing, ca_cert]
    assert order_certificates([issuing, ca_cert, leaf]) == [leaf, issuing, ca_cert]
    assert order_certificates([ca_cert]) == [ca_cert]
    assert order_certificates([]) == []
    assert order_certificates([stray, ca_cert, leaf, issuing]) == [leaf, issuing, ca_cert, stray]
