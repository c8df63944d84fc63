"""Issuing end-entity certificates: every extension, names policy, validity, witnessed by openssl.

Requirement IDs: S6 (RSA and ECDSA), S7 (EKU serverAuth + clientAuth), T4 (v3, SAN holds the CN,
no wildcards, no IP addresses), E2 (what /simpleenroll returns is issued here).
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from estkit.ca import CaError, CertificateAuthority, Profile
from estkit.protocol import (
    CsrError,
    CsrPolicyError,
    PrivateKey,
    build_csr,
    describe_public_key,
    private_key_to_pem,
)

from .conftest import SUBJECT_KEY_TYPES, OpenSSL

NMOS = Profile()


def _ext(cert: x509.Certificate, kind: type) -> x509.Extension:
    return cert.extensions.get_extension_for_class(kind)


def assert_leaf_extensions(
    cert: x509.Certificate, issuer: x509.Certificate, key: PrivateKey, dns: list[str]
) -> None:
    """Every extension estkit promises for a leaf (S7, T4, RFC 5280)."""
    assert cert.version is x509.Version.v3
    assert cert.serial_number > 0
    assert cert.serial_number.bit_length() >= 64
    assert cert.issuer == issuer.subject
    basic = _ext(cert, x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert usage.value.key_encipherment is isinstance(key, rsa.RSAPrivateKey)
    assert not usage.value.key_cert_sign and not usage.value.crl_sign
    eku = _ext(cert, x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    ski = _ext(cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    issuer_ski = _ext(issuer, x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == issuer_ski.digest
    san = _ext(cert, x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == dns
    assert not san.value.get_values_for_type(x509.IPAddress)
    assert describe_public_key(cert.public_key()) == describe_public_key(key.public_key())
    cert.verify_directly_issued_by(issuer)


@pytest.mark.parametrize("key_type", SUBJECT_KEY_TYPES)
def test_issue_for_every_subject_key_type(
    key_type: str,
    subject_keys: dict[str, PrivateKey],
    ca_p384: CertificateAuthority,
    openssl: OpenSSL,
) -> None:
    key = subject_keys[key_type]
    csr = build_csr(key, common_name=f"{key_type}.nmos.test", dns_names=[f"{key_type}.nmos.test"])
    cert = ca_p384.issue(csr, NMOS)
    assert_leaf_extensions(cert, ca_p384.issuer_certificate, key, [f"{key_type}.nmos.test"])
    # P-384 issuer → ecdsa-with-SHA384
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA384)

    text = openssl.text(cert)
    assert "Version: 3 (0x2)" in text
    assert "CA:FALSE" in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert f"DNS:{key_type}.nmos.test" in text
    assert "X509v3 Subject Key Identifier" in text
    assert "X509v3 Authority Key Identifier" in text
    assert "ecdsa-with-SHA384" in text
    for purpose in ("sslserver", "sslclient"):
        result = openssl.verify(
            cert,
            roots=[ca_p384.root_certificate],
            untrusted=[ca_p384.issuer_certificate],
            extra=["-purpose", purpose],
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith(": OK")


@pytest.mark.parametrize("key_type", ["rsa2048", "p256"])
def test_rsa_issuer_signs_with_sha256(
    key_type: str,
    subject_keys: dict[str, PrivateKey],
    ca_rsa: CertificateAuthority,
    openssl: OpenSSL,
) -> None:
    key = subject_keys[key_type]
    cert = ca_rsa.issue(build_csr(key, common_name="rsa-signed.nmos.test"), NMOS)
    assert_leaf_extensions(cert, ca_rsa.issuer_certificate, key, ["rsa-signed.nmos.test"])
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert "sha256WithRSAEncryption" in openssl.text(cert)
    result = openssl.verify(
        cert, roots=[ca_rsa.root_certificate], untrusted=[ca_rsa.issuer_certificate]
    )
    assert result.returncode == 0, result.stderr


def test_common_name_becomes_the_dns_san_when_the_csr_has_none(
    subject_keys: dict[str, PrivateKey], ca_p384: CertificateAuthority, openssl: OpenSSL
) -> None:
    csr = build_csr(subject_keys["p256"], common_name="node-7.studio.nmos.test")
    cert = ca_p384.issue(csr, NMOS)
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node-7.studio.nmos.test"]
    check = openssl.run(
        "x509", "-noout", "-checkhost", "node-7.studio.nmos.test", "-in", openssl.write_pem([cert])
    )
    assert "does match certificate" in check.stdout


def test_csr_san_is_copied_and_led_by_the_cn_when_it_lacks_it(
    subject_keys: dict[str, PrivateKey], ca_p384: CertificateAuthority
) -> None:
    csr = build_csr(
        subject_keys["p256"], common_name="node", dns_names=["a.nmos.test", "b.nmos.test"]
    )
    cert = ca_p384.issue(csr, NMOS)
    san = _ext(cert, x509.SubjectAlternativeName)
    # BCP-003-01 T4: the SAN contains the CN.
    assert san.value.get_values_for_type(x509.DNSName) == ["node", "a.nmos.test", "b.nmos.test"]
    assert san.critical is False
    assert cert.subject == csr.subject
    # A CN already in the SAN (in any letter case) is not repeated.
    same = build_csr(
        subject_keys["p256"], common_name="A.nmos.test", dns_names=["a.nmos.test", "b.nmos.test"]
    )
    names = _ext(ca_p384.issue(same, NMOS), x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["a.nmos.test", "b.nmos.test"]


def test_csr_with_only_an_email_san_still_gets_the_cn_as_dns_name(
    subject_keys: dict[str, PrivateKey], ca_p384: CertificateAuthority
) -> None:
    csr = _csr_with_san(subject_keys["p256"], [x509.RFC822Name("ops@nmos.test")], cn="m.nmos.test")
    san = _ext(ca_p384.issue(csr, NMOS), x509.SubjectAlternativeName).value
    assert list(san) == [x509.DNSName("m.nmos.test")]  # the e-mail name is not copied


def test_empty_subject_gets_the_first_dns_name_under_nmos(
    subject_keys: dict[str, PrivateKey], ca_p384: CertificateAuthority
) -> None:
    """Issue 24: under an NMOS label the CA builds the subject: CN = the first vetted DNS name."""
    csr = build_csr(subject_keys["p256"], common_name=None, dns_names=["only-san.nmos.test"])
    cert = ca_p384.issue(csr, NMOS)
    assert cert.subject.rfc4514_string() == "CN=only-san.nmos.test"
    assert _ext(cert, x509.SubjectAlternativeName).critical is False


def test_empty_subject_gets_a_critical_san_under_rfc7030(
    subject_keys: dict[str, PrivateKey], ca_p384: CertificateAuthority
) -> None:
    csr = build_csr(subject_keys["p256"], common_name=None, dns_names=["only-san.nmos.test"])
    cert = ca_p384.issue(csr, Profile(auth_mode="rfc7030"))
    assert len(cert.subject) == 0
    assert _ext(cert, x509.SubjectAlternativeName).critical is True


def _csr_with_san(key: PrivateKey, names: list[x509.GeneralName], cn: str = "n.nmos.test"):
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )


def test_ip_address_san_is_refused_under_the_nmos_profile(
    subject_keys: dict[str, PrivateKey], ca_p384: CertificateAuthority
) -> None:
    csr = _csr_with_san(subject_keys["p256"], [x509.IPAddress(ipaddress.ip_address("192.0.2.7"))])
    with pytest.raises(CsrPolicyError, match=r"IP address 192\.0\.2\.7"):
        ca_p384.issue(csr, NMOS)


def test_ip_address_common_name_is_refused_under_the_nmos_profile(
    subject_keys: dict[str, PrivateKey], ca_p384: CertificateAuthority
) -> None:
    csr = build_csr(subject_keys["p256"], common_name="192.0.2.8")
    with pytest.raises(CsrPolicyError, match=r"192\.0\.2\.8 as common name is not allowed"):
        ca_p384.issue(csr, NMOS)


def test_wildcard_is_refused_under_the_nmos_profile(
    subject_keys: dict[str, PrivateKey], ca_p384: CertificateAuthority
) -> None:
    csr = build_csr(subject_keys["p256"], common_name="x.nmos.test", dns_names=["*.nmos.test"])
    with pytest.raises(CsrPolicyError, match=r"wildcard name '\*\.nmos\.test' is not allowed"):
        ca_p384.issue(csr, NMOS)


def test_ip_and_wildcard_are_issued_when_an_rfc7030_profile_allows_them(
    subject_keys: dict[str, PrivateKey], ca_p384: CertificateAuthority
) -> None:
    profile = Profile(auth_mode="rfc7030", allow_ip_addresses=True, allow_wildcards=True)
    address = ipaddress.ip_address("192.0.2.9")
    csr = _csr_with_san(subject_keys["p256"], [x509.DNSName("*.lab.test"), x509.IPAddress(address)])
    cert = ca_p384.issue(csr, profile)
    san = _ext(cert, x509.SubjectAlternativeName).value
    # The CN (a host name the SAN lacks) leads, then the requested names (T4).
    assert san.get_values_for_type(x509.DNSName) == ["n.nmos.test", "*.lab.test"]
    assert san.get_values_for_type(x509.IPAddress) == [address]


def test_other_san_forms_are_not_copied(
    subject_keys: dict[str, PrivateKey], ca_p384: CertificateAuthority
) -> None:
    csr = _csr_with_san(
        subject_keys["p256"],
        [x509.DNSName("ok.nmos.test"), x509.RFC822Name("ops@example.com")],
        cn="ok.nmos.test",
    )
    cert = ca_p384.issue(csr, NMOS)
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert list(san) == [x509.DNSName("ok.nmos.test")]


def test_validity_is_backdated_and_sized_by_the_profile(
    subject_keys: dict[str, PrivateKey], ca_p384: CertificateAuthority
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    profile = Profile(validity_seconds=3600, backdate_seconds=120)
    cert = ca_p384.issue(
        build_csr(subject_keys["p256"], common_name="v.nmos.test"), profile, now=now
    )
    assert cert.not_valid_before_utc == now - timedelta(seconds=120)
    assert cert.not_valid_after_utc == now + timedelta(seconds=3600)


def test_validity_is_clamped_to_the_issuer(
    subject_keys: dict[str, PrivateKey], ca_p384: CertificateAuthority, openssl: OpenSSL
) -> None:
    issuer_end = ca_p384.issuer_certificate.not_valid_after_utc
    now = issuer_end - timedelta(days=10)
    cert = ca_p384.issue(
        build_csr(subject_keys["p256"], common_name="late.nmos.test"), NMOS, now=now
    )
    assert cert.not_valid_after_utc == issuer_end
    assert cert.not_valid_after_utc - cert.not_valid_before_utc < timedelta(days=11)
    at_time = str(int((now + timedelta(days=1)).timestamp()))
    result = openssl.verify(
        cert,
        roots=[ca_p384.root_certificate],
        untrusted=[ca_p384.issuer_certificate],
        extra=["-attime", at_time],
    )
    assert result.returncode == 0, result.stderr


def test_an_expired_issuer_refuses_to_issue(
    subject_keys: dict[str, PrivateKey], ca_p384: CertificateAuthority
) -> None:
    after = ca_p384.issuer_certificate.not_valid_after_utc + timedelta(seconds=1)
    with pytest.raises(CaError, match="expired on"):
        ca_p384.issue(build_csr(subject_keys["p256"], common_name="x.nmos.test"), NMOS, now=after)


def test_given_serial_and_crl_url(
    subject_keys: dict[str, PrivateKey], ca_p384: CertificateAuthority, openssl: OpenSSL
) -> None:
    cert = ca_p384.issue(
        build_csr(subject_keys["p256"], common_name="asked.nmos.test"),
        NMOS,
        serial=0x1234_5678_9ABC_DEF0_1122,
        crl_url="https://est.nmos.test:8443/crl",
    )
    assert cert.serial_number == 0x1234_5678_9ABC_DEF0_1122
    assert cert.subject.rfc4514_string() == "CN=asked.nmos.test"
    assert _ext(cert, x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == [
        "asked.nmos.test"
    ]
    points = _ext(cert, x509.CRLDistributionPoints).value
    assert points[0].full_name == [x509.UniformResourceIdentifier("https://est.nmos.test:8443/crl")]
    assert "URI:https://est.nmos.test:8443/crl" in openssl.text(cert)


@pytest.mark.parametrize("serial", [0, -5, 1 << 160])
def test_out_of_range_serials_are_refused(
    serial: int, subject_keys: dict[str, PrivateKey], ca_p384: CertificateAuthority
) -> None:
    with pytest.raises(ValueError, match="serial"):
        ca_p384.issue(
            build_csr(subject_keys["p256"], common_name="s.nmos.test"), NMOS, serial=serial
        )


def test_weak_rsa_key_is_refused(ca_p384: CertificateAuthority) -> None:
    weak = rsa.generate_private_key(65537, 1024)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak.nmos.test")]))
        .sign(weak, hashes.SHA256())
    )
    with pytest.raises(CsrPolicyError, match="RSA key of 1024 bits is too small"):
        ca_p384.issue(csr, NMOS)


def test_sha1_signed_csr_is_refused_by_hash_name(
    subject_keys: dict[str, PrivateKey], ca_p384: CertificateAuthority, openssl: OpenSSL
) -> None:
    # cryptography refuses to create SHA-1 signatures, so openssl makes the legacy request.
    key_path = openssl.workdir / "legacy.key"
    key_path.write_bytes(private_key_to_pem(subject_keys["rsa2048"]))
    csr_path = openssl.workdir / "legacy.csr"
    openssl.run(
        "req",
        "-new",
        "-key",
        key_path,
        "-subj",
        "/CN=old.nmos.test",
        "-sha1",
        "-outform",
        "DER",
        "-out",
        csr_path,
    )
    csr = x509.load_der_x509_csr(csr_path.read_bytes())
    with pytest.raises(CsrPolicyError, match="sha1 is not accepted"):
        ca_p384.issue(csr, NMOS)


def test_csr_with_a_broken_signature_is_refused(
    subject_keys: dict[str, PrivateKey], ca_p384: CertificateAuthority
) -> None:
    good = build_csr(subject_keys["p256"], common_name="tampered.nmos.test")
    der = good.public_bytes(serialization.Encoding.DER)
    # The DER ends with the last byte of the signature's s value: flipping a bit keeps the
    # structure valid and breaks the signature.
    tampered = x509.load_der_x509_csr(der[:-1] + bytes([der[-1] ^ 0x01]))
    with pytest.raises(CsrError, match="signature does not verify"):
        ca_p384.issue(tampered, NMOS)


def test_profile_key_families_are_enforced(
    subject_keys: dict[str, PrivateKey], ca_p384: CertificateAuthority
) -> None:
    ec_only = Profile(key_families=frozenset({"ec"}))
    with pytest.raises(CsrPolicyError, match="RSA keys are not accepted here"):
        ca_p384.issue(build_csr(subject_keys["rsa2048"], common_name="r.nmos.test"), ec_only)
    cert = ca_p384.issue(build_csr(subject_keys["p256"], common_name="e.nmos.test"), ec_only)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_the_cas_own_key_is_never_certified(tmp_path) -> None:
    authority = CertificateAuthority.create(tmp_path / "own", key_type="p256")
    issuing_key = authority._issuer_key  # the test needs the real key to forge the request
    csr = build_csr(issuing_key, common_name="sneaky.nmos.test")
    with pytest.raises(CsrPolicyError, match="CA's own public key"):
        authority.issue(csr, NMOS)


def test_custom_ekus_from_the_profile(
    subject_keys: dict[str, PrivateKey], ca_p384: CertificateAuthority
) -> None:
    cert = ca_p384.issue(
        build_csr(subject_keys["p256"], common_name="c.nmos.test"), Profile(ekus=("clientAuth",))
    )
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
