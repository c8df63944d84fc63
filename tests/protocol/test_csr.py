"""PKCS#10 build/parse/describe/policy, including CSRs made by ``openssl req`` (E2, E3, S7)."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from pathlib import Path

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import AttributeOID, NameOID, ObjectIdentifier

from estkit.protocol import (
    CsrError,
    CsrInfo,
    CsrPolicy,
    CsrPolicyError,
    EncodingError,
    KeyInfo,
    PrivateKey,
    build_csr,
    check_csr_policy,
    csr_attribute_values,
    decode_csr_body,
    describe_csr,
    encode_csr_body,
    generate_private_key,
    parse_csr,
)

from .helpers import pem_key, run_openssl

CUSTOM_OID = ObjectIdentifier("1.3.6.1.4.1.55555.1")


def _der(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.DER)


def test_build_and_describe_full_csr(p256_key: PrivateKey) -> None:
    csr = build_csr(
        p256_key,
        common_name="node-1.example",
        dns_names=["node-1.example", "node-1.local"],
        serial_number="SN-0042",
        challenge_password="dGxzLXVuaXF1ZQ==",
        extra_attributes=[(CUSTOM_OID, core.OctetString(b"\x01\x02").dump())],
        extensions=[x509.BasicConstraints(ca=False, path_length=None)],
    )
    assert csr.is_signature_valid
    info = describe_csr(parse_csr(_der(csr)))
    assert info.common_name == "node-1.example"
    assert info.dns_names == ("node-1.example", "node-1.local")
    assert info.ip_addresses == ()
    assert info.serial_number == "SN-0042"
    assert info.key == KeyInfo("ec", 256, "secp256r1", "ECDSA P-256")
    assert info.signature_hash == "sha256"
    assert info.challenge_password == "dGxzLXVuaXF1ZQ=="
    assert info.signature_algorithm is not None and "ecdsa-with-SHA256" in info.signature_algorithm
    spki = p256_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    assert info.public_key_sha256 == digest.finalize().hex()
    assert info.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "SN-0042"
    attributes = csr_attribute_values(csr)
    assert attributes[CUSTOM_OID.dotted_string] == [core.OctetString(b"\x01\x02").dump()]
    # challengePassword is a PrintableString when it fits (RFC 2985 preference).
    assert attributes[AttributeOID.CHALLENGE_PASSWORD.dotted_string][0][0] == 0x13
    basic = csr.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical


def test_non_printable_challenge_password_uses_utf8(p256_key: PrivateKey) -> None:
    csr = build_csr(p256_key, common_name="x", challenge_password="pässwörd")
    assert describe_csr(csr).challenge_password == "pässwörd"
    value = csr_attribute_values(csr)[AttributeOID.CHALLENGE_PASSWORD.dotted_string][0]
    assert value[0] == 0x0C  # UTF8String


def test_san_only_csr_has_critical_san_and_empty_subject(p256_key: PrivateKey) -> None:
    csr = build_csr(p256_key, common_name=None, dns_names=["only-san.example"])
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    info = describe_csr(csr)
    assert info.common_name is None
    assert info.dns_names == ("only-san.example",)
    check_csr_policy(info, CsrPolicy())  # a DNS name is enough


@pytest.mark.parametrize(
    ("fixture", "hash_name"),
    [("p256_key", "sha256"), ("p384_key", "sha384"), ("p521_key", "sha512"), ("rsa_key", "sha256")],
)
def test_default_hash_follows_key(
    fixture: str, hash_name: str, request: pytest.FixtureRequest
) -> None:
    key: PrivateKey = request.getfixturevalue(fixture)
    info = describe_csr(build_csr(key, common_name="x"))
    assert info.signature_hash == hash_name
    check_csr_policy(info, CsrPolicy())


def test_explicit_hash_by_name_or_object(p256_key: PrivateKey) -> None:
    assert (
        describe_csr(build_csr(p256_key, common_name="x", hash_algorithm="sha384")).signature_hash
        == "sha384"
    )
    assert (
        describe_csr(
            build_csr(p256_key, common_name="x", hash_algorithm=hashes.SHA512())
        ).signature_hash
        == "sha512"
    )
    with pytest.raises(ValueError, match="unknown hash 'whirlpool'"):
        build_csr(p256_key, common_name="x", hash_algorithm="whirlpool")


@pytest.mark.parametrize("weak", ["md5", "sha1", "SHA-1", hashes.SHA1(), hashes.MD5()])
def test_build_refuses_md5_and_sha1(p256_key: PrivateKey, weak: object) -> None:
    with pytest.raises(CsrPolicyError, match=r"refusing to sign a CSR with (MD5|SHA1)"):
        build_csr(p256_key, common_name="x", hash_algorithm=weak)  # type: ignore[arg-type]


def test_build_refuses_constructed_extra_attribute_and_double_san(p256_key: PrivateKey) -> None:
    with pytest.raises(ValueError, match="primitive string-like value"):
        build_csr(p256_key, common_name="x", extra_attributes=[(CUSTOM_OID, b"\x30\x00")])
    with pytest.raises(ValueError, match="not both"):
        build_csr(
            p256_key,
            common_name="x",
            dns_names=["a.example"],
            extensions=[x509.SubjectAlternativeName([x509.DNSName("b.example")])],
        )


def test_body_round_trip_in_every_form(p256_key: PrivateKey) -> None:
    csr = build_csr(p256_key, common_name="x")
    body = encode_csr_body(csr)
    assert body.endswith(b"\n") and max(len(line) for line in body.splitlines()) <= 64
    pem = csr.public_bytes(serialization.Encoding.PEM)
    for form in (body, body.replace(b"\n", b"\r\n"), pem, _der(csr), _der(csr) + b"\x00"):
        assert decode_csr_body(form) == csr


def test_a_remembered_verdict_is_not_reused_for_another_signature_or_algorithm(
    p256_key: PrivateKey,
) -> None:
    """The self-signature verdict is remembered per CSR (issue 16: checked once, not twice). A CSR
    with the same signed bytes but another signature, or another signature algorithm, was not
    the one checked: it is checked afresh and refused."""
    csr = build_csr(p256_key, common_name="remembered.example")
    der = _der(csr)
    assert describe_csr(parse_csr(der)).signature_valid  # verdict now remembered
    signature = csr.signature
    # The ECDSA signature is DER (r, s): change the last byte of s, keep the encoding valid.
    forged = der[:-1] + bytes([der[-1] ^ 0x01])
    assert forged.endswith(signature[:-1] + bytes([signature[-1] ^ 0x01]))
    with pytest.raises(CsrError, match="CSR signature does not verify with its own public key"):
        parse_csr(forged)
    # ecdsa-with-SHA256 (1.2.840.10045.4.3.2) relabelled ecdsa-with-SHA384 (...4.3.3).
    sha256_oid = bytes.fromhex("06082a8648ce3d040302")
    assert der.count(sha256_oid) == 1
    relabelled = der.replace(sha256_oid, bytes.fromhex("06082a8648ce3d040303"))
    with pytest.raises(CsrError, match="CSR signature does not verify with its own public key"):
        parse_csr(relabelled)
    assert parse_csr(der).subject == csr.subject  # the original still passes


def test_parse_rejects_non_csr_der() -> None:
    with pytest.raises(CsrError, match="not a valid PKCS#10 CSR"):
        parse_csr(b"\x30\x03\x02\x01\x00")
    with pytest.raises(EncodingError, match="not valid base64"):
        decode_csr_body(b"%%%")


def test_parse_rejects_tampered_signature(p256_key: PrivateKey) -> None:
    csr = build_csr(p256_key, common_name="honest.example")
    der = _der(csr)
    tampered = der.replace(b"honest.example", b"forged.example")
    assert tampered != der
    with pytest.raises(CsrError, match="CSR signature does not verify with its own public key"):
        parse_csr(tampered)


def test_ed25519_csr_parses_but_is_refused_by_describe() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ed")]))
        .sign(key, None)
    )
    parsed = parse_csr(_der(csr))
    with pytest.raises(CsrPolicyError, match="unsupported public key type Ed25519PublicKey"):
        describe_csr(parsed)


def test_ip_address_san_is_reported(p256_key: PrivateKey) -> None:
    san = x509.SubjectAlternativeName(
        [x509.DNSName("a.example"), x509.IPAddress(ipaddress.ip_address("192.0.2.7"))]
    )
    info = describe_csr(build_csr(p256_key, common_name="a.example", extensions=[san]))
    assert info.ip_addresses == ("192.0.2.7",)
    with pytest.raises(
        CsrPolicyError, match=r"IP address 192\.0\.2\.7 in subjectAltName is not allowed"
    ):
        check_csr_policy(info, CsrPolicy())
    check_csr_policy(info, CsrPolicy(allow_ip_addresses=True))


# ---- policy ---------------------------------------------------------------------------------


def _info(**changes: object) -> CsrInfo:
    base = CsrInfo(
        subject=x509.Name([]),
        common_name="dev.example",
        dns_names=("dev.example",),
        ip_addresses=(),
        serial_number=None,
        key=KeyInfo("ec", 256, "secp256r1", "ECDSA P-256"),
        signature_hash="sha256",
        challenge_password=None,
        public_key_sha256="00" * 32,
    )
    if "common_name" in changes and "common_names" not in changes:
        name = changes["common_name"]
        changes["common_names"] = (name,) if name is not None else ()
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_policy_accepts_default_info() -> None:
    check_csr_policy(_info(), CsrPolicy())
    check_csr_policy(_info(key=KeyInfo("rsa", 2048, None, "RSA 2048")), CsrPolicy())


@pytest.mark.parametrize(
    ("info", "policy", "message"),
    [
        (
            _info(key=KeyInfo("rsa", 1024, None, "RSA 1024")),
            CsrPolicy(),
            "RSA key of 1024 bits is too small: at least 2048 bits required",
        ),
        (
            _info(key=KeyInfo("ec", 192, "secp192r1", "ECDSA secp192r1")),
            CsrPolicy(),
            "elliptic curve secp192r1 is not accepted",
        ),
        (_info(), CsrPolicy(key_families=frozenset({"rsa"})), "ECDSA keys are not accepted here"),
        (_info(signature_hash="sha1"), CsrPolicy(), "CSR signature hash sha1 is not accepted"),
        (_info(signature_hash="md5"), CsrPolicy(), "CSR signature hash md5 is not accepted"),
        (
            _info(signature_hash=None, signature_algorithm="1.2.3.4"),
            CsrPolicy(),
            "CSR signature hash 1.2.3.4 is not accepted",
        ),
        (_info(dns_names=("*.example",)), CsrPolicy(), "wildcard name '*.example' is not allowed"),
        (_info(common_name="*.example"), CsrPolicy(), "wildcard name '*.example'"),
        (_info(common_name="10.0.0.1", dns_names=()), CsrPolicy(), "IP address 10.0.0.1 as common"),
        (
            _info(common_name=None, dns_names=()),
            CsrPolicy(),
            "the CSR has neither a common name nor a DNS subjectAltName",
        ),
        (
            _info(key=KeyInfo("rsa", 2048, None, "RSA 2048")),
            CsrPolicy(min_rsa_bits=3072),
            "RSA key of 2048 bits is too small: at least 3072 bits required",
        ),
    ],
)
def test_policy_refusals_name_the_reason(info: CsrInfo, policy: CsrPolicy, message: str) -> None:
    with pytest.raises(CsrPolicyError) as raised:
        check_csr_policy(info, policy)
    assert message in str(raised.value)


def test_policy_relaxations() -> None:
    check_csr_policy(_info(dns_names=("*.example",)), CsrPolicy(allow_wildcards=True))
    check_csr_policy(_info(common_name=None, dns_names=()), CsrPolicy(require_name=False))
    check_csr_policy(_info(signature_hash="sha1"), CsrPolicy(hashes=("sha1",)))


# ---- interop with openssl req -----------------------------------------------------------------


def _openssl_csr(tmp_path: Path, key: PrivateKey, *args: str) -> bytes:
    key_path = tmp_path / "key.pem"
    key_path.write_bytes(pem_key(key))
    return run_openssl("req", "-new", "-key", str(key_path), "-outform", "DER", *args)


def test_openssl_req_csr_parses_with_san_and_challenge(tmp_path: Path, rsa_key: PrivateKey) -> None:
    config = tmp_path / "req.cnf"
    config.write_text(
        "[req]\nprompt = no\ndistinguished_name = dn\nattributes = attrs\nreq_extensions = ext\n"
        "[dn]\nCN = openssl.example\nserialNumber = ABC123\n"
        "[attrs]\nchallengePassword = c2Vzc2lvbi1iaW5kaW5n\n"
        "[ext]\nsubjectAltName = DNS:openssl.example,DNS:www.openssl.example\n"
    )
    der = _openssl_csr(tmp_path, rsa_key, "-config", str(config), "-sha256")
    info = describe_csr(parse_csr(der))
    assert info.common_name == "openssl.example"
    assert info.serial_number == "ABC123"
    assert info.dns_names == ("openssl.example", "www.openssl.example")
    assert info.challenge_password == "c2Vzc2lvbi1iaW5kaW5n"
    assert info.key.description == "RSA 2048"
    check_csr_policy(info, CsrPolicy())


@pytest.mark.parametrize(("digest", "name"), [("-sha1", "sha1"), ("-md5", "md5")])
def test_openssl_weak_hash_csr_is_detected(
    tmp_path: Path, rsa_key: PrivateKey, p256_key: PrivateKey, digest: str, name: str
) -> None:
    der = _openssl_csr(tmp_path, rsa_key, "-subj", "/CN=weak.example", digest)
    info = describe_csr(parse_csr(der))  # the signature itself is genuine
    assert info.signature_hash == name
    with pytest.raises(CsrPolicyError, match=f"CSR signature hash {name} is not accepted"):
        check_csr_policy(info, CsrPolicy())
    if name == "sha1":  # ECDSA-with-SHA1 too
        ec_der = _openssl_csr(tmp_path, p256_key, "-subj", "/CN=weak.example", digest)
        assert describe_csr(parse_csr(ec_der)).signature_hash == "sha1"


def test_openssl_weak_hash_csr_with_bad_signature_is_still_refused(
    tmp_path: Path, rsa_key: PrivateKey
) -> None:
    der = bytearray(_openssl_csr(tmp_path, rsa_key, "-subj", "/CN=weak.example", "-sha1"))
    der[-5] ^= 0xFF  # corrupt the signature
    with pytest.raises(CsrError, match="does not verify"):
        parse_csr(bytes(der))


def test_openssl_small_rsa_key_is_refused_by_policy(tmp_path: Path) -> None:
    key_path = tmp_path / "small.pem"
    run_openssl("genrsa", "-out", str(key_path), "1024")
    der = run_openssl(
        "req", "-new", "-key", str(key_path), "-subj", "/CN=small.example", "-outform", "DER"
    )
    info = describe_csr(parse_csr(der))
    assert info.key.size == 1024
    with pytest.raises(CsrPolicyError, match="RSA key of 1024 bits is too small"):
        check_csr_policy(info, CsrPolicy())


@pytest.mark.parametrize("key_type", ["p384", "rsa2048"])
def test_openssl_verifies_our_csr(tmp_path: Path, key_type: str, rsa_key: PrivateKey) -> None:
    key = rsa_key if key_type == "rsa2048" else generate_private_key(key_type)
    csr = build_csr(key, common_name="ours.example", dns_names=["ours.example"], serial_number="7")
    path = tmp_path / "ours.csr"
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    result = run_openssl("req", "-in", str(path), "-verify", "-noout", "-text")
    text = result.decode()
    assert "ours.example" in text
    assert "DNS:ours.example" in text
    # And the base64 body form decodes in openssl too.
    der = run_openssl("base64", "-d", input_bytes=encode_csr_body(csr))
    assert der == _der(csr)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"common_names": ("a.example", "*.evil"), "common_name": "a.example"}, "2 common names"),
        (
            {"common_names": ("a.example", "b.example"), "common_name": "a.example"},
            "2 common names",
        ),
        ({"common_name": "x" * 65}, "is 65 characters long; at most 64"),
        ({"common_name": "a\x00b.example"}, "U+0000 at position 2"),
        ({"common_name": "a\u202eb.example"}, "U+202E"),
        ({"dns_names": ("ok.example", "bad\nname.example")}, "U+000A"),
        ({"dns_names": ("a\u2028b.example",)}, "U+2028"),
    ],
)
def test_policy_checks_every_name_not_just_the_first(changes: dict, message: str) -> None:
    """Issue 24: several CNs, over-long CNs and control or format characters in any name."""
    with pytest.raises(CsrPolicyError, match=re.escape(message)):
        check_csr_policy(_info(**changes), CsrPolicy(allow_wildcards=True))


def test_csr_info_keeps_common_name_and_common_names_consistent() -> None:
    with pytest.raises(ValueError, match="first of common_names"):
        _info(common_names=("a.example",), common_name="b.example")
    assert _info(common_name=None).common_names == ()
