"""Issue 24: the one path from a CSR to a certificate, in the CA alone (no server).

``vet_request`` decides on the one reading of the CSR and returns :class:`IssuedNames`;
``sign_leaf`` takes nothing else. These tests kill: a policy that reads only the first CN, a
signer that copies the CSR subject (or accepts an ``x509.Name``), CA names not reserved across a
rollover, and profile options that a typo could turn off silently.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from estkit.ca import CertificateAuthority, Profile
from estkit.ca.issuance import IssuedNames, certificate_name_set, sign_leaf, vet_request
from estkit.ca.profiles import ProfileError, profile_from_mapping, profile_to_mapping
from estkit.protocol import CsrError, CsrPolicyError, PrivateKey, build_csr, describe_csr

NMOS = Profile()
RFC7030 = Profile(auth_mode="rfc7030", allow_ip_addresses=True)
CN = NameOID.COMMON_NAME


def _csr(key: PrivateKey, *attributes: tuple[x509.ObjectIdentifier, str], sans=()):
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(oid, value, _validate=False) for oid, value in attributes])
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(key, hashes.SHA256())  # type: ignore[arg-type]


def test_describe_csr_reads_every_name(subject_keys: dict[str, PrivateKey]) -> None:
    csr = _csr(
        subject_keys["p256"],
        (CN, "a.example"),
        (NameOID.ORGANIZATION_NAME, "Org"),
        (CN, "b.example"),
        sans=[x509.DNSName("c.example"), x509.RFC822Name("ops@example.com")],
    )
    info = describe_csr(csr)
    assert info.common_names == ("a.example", "b.example")
    assert info.common_name == "a.example"
    assert info.subject_attributes == (
        ("commonName", "a.example"),
        ("organizationName", "Org"),
        ("commonName", "b.example"),
    )
    assert info.dns_names == ("c.example",)
    assert info.other_names == ("RFC822Name:ops@example.com",)
    assert info.extensions == ("2.5.29.17",)
    assert info.signature_valid is True
    assert info.public_key is not None


@pytest.mark.parametrize("second", ["*.evil.example", "10.0.0.1", "b.example"])
def test_a_second_common_name_is_refused_whatever_it_holds(
    subject_keys: dict[str, PrivateKey], second: str
) -> None:
    info = describe_csr(_csr(subject_keys["p256"], (CN, "a.example"), (CN, second)))
    for profile in (NMOS, Profile(auth_mode="rfc7030", allow_wildcards=True)):
        with pytest.raises(CsrPolicyError, match="the CSR subject has 2 common names"):
            vet_request(info, profile)


def test_nmos_subject_is_the_first_dns_name_and_nothing_of_the_csr(
    subject_keys: dict[str, PrivateKey],
) -> None:
    csr = _csr(
        subject_keys["p256"],
        (CN, "B.example"),
        (NameOID.ORGANIZATION_NAME, "estkit"),
        (NameOID.SERIAL_NUMBER, "SPOOF123"),
        sans=[x509.DNSName("a.example"), x509.DNSName("b.example")],
    )
    names = vet_request(describe_csr(csr), NMOS)
    # The CN leads the SAN in the SAN's spelling; O and serialNumber of the CSR are gone.
    assert names == IssuedNames("b.example", ("b.example", "a.example"), (), ())
    assert names.subject() == x509.Name([x509.NameAttribute(CN, "b.example")])


def test_extra_attributes_come_only_from_the_client_certificate(
    subject_keys: dict[str, PrivateKey],
) -> None:
    csr = _csr(subject_keys["p256"], (CN, "d.example"), (NameOID.SERIAL_NUMBER, "SPOOF"))
    client = x509.Name(
        [x509.NameAttribute(CN, "device"), x509.NameAttribute(NameOID.SERIAL_NUMBER, "REAL-7")]
    )
    info = describe_csr(csr)
    assert vet_request(info, NMOS).extra_attributes == ()  # no authenticated certificate
    assert vet_request(info, NMOS, client_subject=client).extra_attributes == (
        ("serialNumber", "REAL-7"),
    )
    rfc = Profile(auth_mode="rfc7030")
    assert vet_request(info, rfc, client_subject=client).extra_attributes == ()
    hostile = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, "BAD\x00SERIAL")])
    with pytest.raises(CsrPolicyError, match="serialNumber 'BAD\\\\x00SERIAL' cannot be copied"):
        vet_request(info, NMOS, client_subject=hostile)


def test_rfc7030_keeps_a_free_text_cn_and_turns_an_ip_cn_into_an_ip_san(
    subject_keys: dict[str, PrivateKey],
) -> None:
    text = vet_request(describe_csr(_csr(subject_keys["p256"], (CN, "Line Camera 3"))), RFC7030)
    assert text == IssuedNames("Line Camera 3", (), (), ())
    address = vet_request(describe_csr(_csr(subject_keys["p256"], (CN, "192.0.2.1"))), RFC7030)
    assert address == IssuedNames("192.0.2.1", (), ("192.0.2.1",), ())
    assert address.general_names() == [x509.IPAddress(ipaddress.ip_address("192.0.2.1"))]
    with pytest.raises(CsrPolicyError, match="under an NMOS label the CN must be"):
        vet_request(describe_csr(_csr(subject_keys["p256"], (CN, "Line Camera 3"))), NMOS)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a" * 63 + ".example", True),
        ("a" * 64 + ".example", False),
        (".".join(["b" * 63] * 3) + "." + "c" * 61, True),  # 253 characters
        (".".join(["b" * 63] * 3) + "." + "c" * 62, False),  # 254 characters
        ("under_score.lab", True),
        ("-leading.example", False),
        ("bad name.example", False),
    ],
)
def test_dns_name_shape(subject_keys: dict[str, PrivateKey], name: str, ok: bool) -> None:
    info = describe_csr(_csr(subject_keys["p256"], (CN, "n.example"), sans=[x509.DNSName(name)]))
    if ok:
        assert name in vet_request(info, NMOS).dns_names
    else:
        with pytest.raises(CsrPolicyError, match="is not a valid DNS host name"):
            vet_request(info, NMOS)


def test_ca_names_stay_reserved_across_a_rollover(
    tmp_path: Path, subject_keys: dict[str, PrivateKey]
) -> None:
    authority = CertificateAuthority.create(tmp_path / "ca", key_type="p256")
    first = {
        str(cert.subject.get_attributes_for_oid(CN)[0].value)
        for cert in (authority.root_certificate, authority.issuer_certificate)
    }
    authority.rollover()
    second_issuer = str(authority.issuer_certificate.subject.get_attributes_for_oid(CN)[0].value)
    assert second_issuer not in first  # "… G2"
    for name in (*first, second_issuer, second_issuer.upper()):
        assert name.lower() in authority.reserved_names
        with pytest.raises(CsrPolicyError, match="is the name of a CA certificate"):
            authority.issue(_csr(subject_keys["p256"], (CN, name)), RFC7030)


def test_sign_leaf_takes_only_vetted_names(
    ca_p384: CertificateAuthority, subject_keys: dict[str, PrivateKey]
) -> None:
    csr = _csr(subject_keys["p256"], (CN, "x.example"), (NameOID.ORGANIZATION_NAME, "Evil"))
    with pytest.raises(TypeError, match="IssuedNames"):
        sign_leaf(
            names=csr.subject,  # type: ignore[arg-type]
            public_key=subject_keys["p256"].public_key(),
            ekus=NMOS.eku_oids,
            issuer_certificate=ca_p384.issuer_certificate,
            issuer_key=ca_p384._issuer_key,
            validity=ca_p384._leaf_validity(ca_p384.issuer_certificate.not_valid_before_utc, 60, 0),
        )
    certificate = ca_p384.issue(csr, NMOS)
    assert certificate.subject == x509.Name([x509.NameAttribute(CN, "x.example")])
    assert certificate_name_set(certificate) == {"CN:x.example", "DNS:x.example"}


def test_serverkeygen_key_replaces_the_csr_key(
    ca_p384: CertificateAuthority, subject_keys: dict[str, PrivateKey]
) -> None:
    info = describe_csr(build_csr(subject_keys["p256"], common_name="g.example"))
    names = ca_p384.vet(info, NMOS)
    generated = subject_keys["p384"].public_key()
    certificate = ca_p384.issue(info, NMOS, names=names, public_key=generated)
    assert certificate.public_key() == generated


def test_a_csr_with_a_broken_signature_is_refused_from_the_info(
    ca_p384: CertificateAuthority, subject_keys: dict[str, PrivateKey]
) -> None:
    import dataclasses

    info = describe_csr(build_csr(subject_keys["p256"], common_name="s.example"))
    with pytest.raises(CsrError, match="signature does not verify"):
        ca_p384.vet(dataclasses.replace(info, signature_valid=False), NMOS)


def test_profile_name_options_are_validated_and_round_trip() -> None:
    assert Profile().subject_from_client_certificate == ("serialNumber",)
    assert Profile(auth_mode="rfc7030").subject_from_client_certificate == ()
    assert Profile().bind_names_to_client_certificate is True
    custom = profile_from_mapping(
        {"bind_names_to_client_certificate": False, "subject_from_client_certificate": ["O"]}
    )
    assert profile_from_mapping(profile_to_mapping(custom)) == custom
    with pytest.raises(
        ProfileError, match="bind_names_to_client_certificate must be true or false"
    ):
        Profile(bind_names_to_client_certificate="yes")  # type: ignore[arg-type]
    with pytest.raises(ProfileError, match="unknown attribute 'CN'"):
        Profile(subject_from_client_certificate=("CN",))
    with pytest.raises(ProfileError, match="must be a list of strings"):
        profile_from_mapping({"subject_from_client_certificate": "serialNumber"})
