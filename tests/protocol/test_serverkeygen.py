"""/serverkeygen: key-encryption attributes, multipart build/parse, CMS EnvelopedData (E5).

EnvelopedData for RSA recipients is covered here; the EC (key agreement) construction itself is
tested in ``test_cms_kari.py``, its use through :func:`encrypt_private_key_for` here."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from estkit.protocol import (
    ASYMMETRIC_DECRYPT_KEY_IDENTIFIER,
    DECRYPT_KEY_IDENTIFIER,
    PKCS7_CERTS_ONLY,
    PKCS8,
    SERVER_GENERATED_KEY,
    CsrError,
    EncodingError,
    KeyEncryptionRequest,
    MediaTypeError,
    MultipartError,
    Pkcs7Error,
    PrivateKey,
    build_certs_only,
    build_csr,
    build_serverkeygen_response,
    can_encrypt_to,
    certificates_to_pem,
    decrypt_private_key,
    encode_base64_body,
    encrypt_private_key_for,
    generate_private_key,
    key_encryption_attribute,
    key_encryption_request,
    parse_media_type,
    parse_serverkeygen_response,
    private_key_to_der,
    public_keys_equal,
    sha256_fingerprint,
)

from .helpers import make_cert, pem_key, run_openssl


def _fps(certs: list[x509.Certificate]) -> list[str]:
    return sorted(sha256_fingerprint(c) for c in certs)


def test_oids() -> None:
    assert DECRYPT_KEY_IDENTIFIER.dotted_string == "1.2.840.113549.1.9.16.2.37"
    assert ASYMMETRIC_DECRYPT_KEY_IDENTIFIER.dotted_string == "1.2.840.113549.1.9.16.2.54"


@pytest.mark.parametrize("kind", ["asymmetric", "symmetric"])
def test_key_encryption_request_round_trip(
    p256_key: PrivateKey, rsa_cert: x509.Certificate, kind: str
) -> None:
    ski = rsa_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    attribute = key_encryption_attribute(kind, ski)  # type: ignore[arg-type]
    csr = build_csr(p256_key, common_name="x", extra_attributes=[attribute])
    assert key_encryption_request(csr) == KeyEncryptionRequest(kind, ski)  # type: ignore[arg-type]


def test_no_key_encryption_request(p256_key: PrivateKey) -> None:
    assert key_encryption_request(build_csr(p256_key, common_name="x")) is None


def test_key_encryption_request_with_wrong_value_type(p256_key: PrivateKey) -> None:
    csr = build_csr(
        p256_key,
        common_name="x",
        extra_attributes=[(ASYMMETRIC_DECRYPT_KEY_IDENTIFIER, core.UTF8String("abc").dump())],
    )
    with pytest.raises(CsrError, match="is not an OCTET STRING"):
        key_encryption_request(csr)


def test_build_and_parse_unencrypted_reply(
    p256_key: PrivateKey, leaf_cert: x509.Certificate, ca_cert: x509.Certificate
) -> None:
    body, content_type = build_serverkeygen_response(
        private_key_to_der(p256_key), PKCS8, [leaf_cert, ca_cert]
    )
    media = parse_media_type(content_type)
    assert media.essence == "multipart/mixed"
    boundary = media.param("boundary")
    assert boundary and f"--{boundary}\r\n".encode() in body
    assert body.endswith(f"--{boundary}--\r\n".encode())
    assert body.count(b"Content-Transfer-Encoding: base64\r\n") == 2
    assert b"Content-Type: application/pkcs8\r\n" in body
    assert f"Content-Type: {PKCS7_CERTS_ONLY}\r\n".encode() in body
    result = parse_serverkeygen_response(body, content_type)
    assert result.private_key is not None and public_keys_equal(result.private_key, p256_key)
    assert result.key_der == private_key_to_der(p256_key)
    assert result.key_media_type == PKCS8
    assert not result.encrypted
    assert result.warnings == []
    assert _fps(result.certificates) == _fps([leaf_cert, ca_cert])


def test_boundaries_are_unique(p256_key: PrivateKey, leaf_cert: x509.Certificate) -> None:
    der = private_key_to_der(p256_key)
    assert (
        build_serverkeygen_response(der, PKCS8, [leaf_cert])[1]
        != build_serverkeygen_response(der, PKCS8, [leaf_cert])[1]
    )


def _handmade(
    parts: list[tuple[list[str], bytes]], boundary: str = "b0und", newline: bytes = b"\r\n"
) -> tuple[bytes, str]:
    chunks = [b"preamble to ignore" + newline]
    for headers, content in parts:
        chunks.append(f"--{boundary}".encode() + newline)
        for header in headers:
            chunks.append(header.encode() + newline)
        chunks.append(newline + content + newline)
    chunks.append(f"--{boundary}--".encode() + newline + b"epilogue")
    return b"".join(chunks), f'multipart/mixed; boundary="{boundary}"'


def test_parse_tolerates_lf_missing_cte_binary_parts_and_pkcs1(
    rsa_key: PrivateKey, leaf_cert: x509.Certificate
) -> None:
    pkcs1 = rsa_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    body, content_type = _handmade(
        [
            (["content-type: application/pkcs8"], pkcs1),  # binary, no CTE, PKCS#1 inside
            (
                [
                    "Content-Type: application/pkcs7-mime;",
                    "  smime-type=certs-only",  # folded header line
                    "Content-Transfer-Encoding: 7bit",  # wrong claim: ignored (E15)
                ],
                encode_base64_body(build_certs_only([leaf_cert])),
            ),
        ],
        newline=b"\n",
    )
    result = parse_serverkeygen_response(body, content_type)
    assert result.private_key is not None and public_keys_equal(result.private_key, rsa_key)
    assert result.certificates == [leaf_cert]
    assert len(result.warnings) == 1
    assert "labelled application/pkcs8 but holds a PKCS#1 RSAPrivateKey" in result.warnings[0]


def test_parse_sec1_key_and_parts_without_content_type(
    p256_key: PrivateKey, leaf_cert: x509.Certificate
) -> None:
    sec1 = p256_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    body, content_type = _handmade(
        [([], certificates_to_pem([leaf_cert])), (["X-Other: 1"], base64.b64encode(sec1))]
    )
    result = parse_serverkeygen_response(body, content_type)
    assert result.private_key is not None and public_keys_equal(result.private_key, p256_key)
    assert result.certificates == [leaf_cert]
    assert any("taken as the certificate" in w for w in result.warnings)
    assert any("taken as the private key" in w for w in result.warnings)


def test_encrypted_reply_round_trip(
    p256_key: PrivateKey,
    rsa_key: PrivateKey,
    rsa_cert: x509.Certificate,
    leaf_cert: x509.Certificate,
) -> None:
    envelope = encrypt_private_key_for(private_key_to_der(p256_key), rsa_cert)
    body, content_type = build_serverkeygen_response(envelope, SERVER_GENERATED_KEY, [leaf_cert])
    result = parse_serverkeygen_response(body.replace(b"\r\n", b"\n"), content_type)
    assert result.encrypted
    assert result.private_key is None
    assert result.key_der == envelope
    assert parse_media_type(result.key_media_type).matches(SERVER_GENERATED_KEY)
    assert result.certificates == [leaf_cert]
    decrypted = decrypt_private_key(result.key_der, rsa_cert, rsa_key)
    assert public_keys_equal(decrypted, p256_key)


def test_openssl_cms_decrypts_our_envelope(
    tmp_path: Path, p256_key: PrivateKey, rsa_key: PrivateKey, rsa_cert: x509.Certificate
) -> None:
    # The key DER happens to contain CR/LF-like bytes sometimes; compare byte for byte.
    key_der = private_key_to_der(p256_key) + b""
    envelope = encrypt_private_key_for(key_der, rsa_cert)
    (tmp_path / "env.der").write_bytes(envelope)
    (tmp_path / "rcpt.pem").write_bytes(certificates_to_pem([rsa_cert]))
    (tmp_path / "rcpt.key").write_bytes(pem_key(rsa_key))
    plain = run_openssl(
        "cms", "-decrypt", "-inform", "DER", "-in", str(tmp_path / "env.der"),
        "-recip", str(tmp_path / "rcpt.pem"), "-inkey", str(tmp_path / "rcpt.key"), "-binary",
    )  # fmt: skip
    assert plain == key_der
    info = run_openssl(
        "cms", "-cmsout", "-print", "-inform", "DER", "-in", str(tmp_path / "env.der")
    )
    assert b"envelopedData" in info


def test_openssl_made_envelope_decrypts(
    tmp_path: Path, p256_key: PrivateKey, rsa_key: PrivateKey, rsa_cert: x509.Certificate
) -> None:
    (tmp_path / "key.der").write_bytes(private_key_to_der(p256_key))
    (tmp_path / "rcpt.pem").write_bytes(certificates_to_pem([rsa_cert]))
    envelope = run_openssl(
        "cms", "-encrypt", "-binary", "-aes-256-cbc", "-outform", "DER",
        "-in", str(tmp_path / "key.der"), str(tmp_path / "rcpt.pem"),
    )  # fmt: skip
    assert public_keys_equal(decrypt_private_key(envelope, rsa_cert, rsa_key), p256_key)


def test_encrypted_reply_round_trip_to_an_ec_certificate(
    p384_key: PrivateKey, p256_key: PrivateKey, leaf_cert: x509.Certificate
) -> None:
    # The client's path: parse the reply, then decrypt the kari envelope with the EC key.
    generated = private_key_to_der(p384_key)
    envelope = encrypt_private_key_for(generated, leaf_cert)
    body, content_type = build_serverkeygen_response(envelope, SERVER_GENERATED_KEY, [leaf_cert])
    result = parse_serverkeygen_response(body, content_type)
    assert result.encrypted
    assert result.key_der == envelope
    decrypted = decrypt_private_key(result.key_der, leaf_cert, p256_key)
    assert private_key_to_der(decrypted) == generated


def test_encrypt_refuses_unsupported_recipient(ca_key: PrivateKey) -> None:
    edwards = make_cert(ed25519.Ed25519PrivateKey.generate(), "ed", issuer_key=ca_key, issuer="ca")
    assert not can_encrypt_to(edwards)
    with pytest.raises(ValueError, match="RSA key or an EC key on secp256r1, secp384r1"):
        encrypt_private_key_for(b"\x30\x00", edwards)


def test_decrypt_errors(
    p256_key: PrivateKey, rsa_key: PrivateKey, rsa_cert: x509.Certificate
) -> None:
    other_rsa = generate_private_key("rsa2048")
    other_cert = make_cert(other_rsa, "other", ca=False)
    envelope = encrypt_private_key_for(private_key_to_der(p256_key), rsa_cert)
    with pytest.raises(Pkcs7Error, match="cannot decrypt the server-generated key"):
        decrypt_private_key(envelope, other_cert, other_rsa)
    with pytest.raises(Pkcs7Error, match="cannot decrypt"):
        decrypt_private_key(b"\x30\x00", rsa_cert, rsa_key)
    not_a_key = encrypt_private_key_for(b"\x30\x03\x02\x01\x00", rsa_cert)
    with pytest.raises(Pkcs7Error, match="is not a private key"):
        decrypt_private_key(not_a_key, rsa_cert, rsa_key)
    with pytest.raises(Pkcs7Error, match="no key-agreement recipient"):
        decrypt_private_key(envelope, rsa_cert, p256_key)  # an EC key, an RSA (ktri) envelope
    with pytest.raises(ValueError, match="only an RSA or EC private key"):
        decrypt_private_key(envelope, rsa_cert, ed25519.Ed25519PrivateKey.generate())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("content_type", "error", "fragment"),
    [
        ("application/pkcs8", MultipartError, "must be multipart/mixed"),
        ("multipart/mixed", MultipartError, "no valid boundary parameter (got None)"),
        ("multipart/mixed; boundary=" + "a" * 71, MultipartError, "no valid boundary"),
        ("multipart/mixed; boundary=other", MultipartError, "contains no '--other' delimiter"),
        ("not a type", MediaTypeError, "not a media type"),
    ],
)
def test_parse_content_type_errors(
    p256_key: PrivateKey,
    leaf_cert: x509.Certificate,
    content_type: str,
    error: type[Exception],
    fragment: str,
) -> None:
    body, _ = build_serverkeygen_response(private_key_to_der(p256_key), PKCS8, [leaf_cert])
    with pytest.raises(error) as info:
        parse_serverkeygen_response(body, content_type)
    assert fragment in str(info.value)


def test_parse_structure_errors(p256_key: PrivateKey, leaf_cert: x509.Certificate) -> None:
    certs = encode_base64_body(build_certs_only([leaf_cert]))
    key = encode_base64_body(private_key_to_der(p256_key))
    only_cert, ct = _handmade([([f"Content-Type: {PKCS7_CERTS_ONLY}"], certs)])
    with pytest.raises(MultipartError, match="found 0 key part"):
        parse_serverkeygen_response(only_cert, ct)
    two_keys, ct = _handmade(
        [(["Content-Type: application/pkcs8"], key)] * 2
        + [([f"Content-Type: {PKCS7_CERTS_ONLY}"], certs)]
    )
    with pytest.raises(MultipartError, match="found 2 key part"):
        parse_serverkeygen_response(two_keys, ct)
    no_blank, ct = _handmade([(["Content-Type: application/pkcs8"], key)])
    no_blank = no_blank.replace(b"pkcs8\r\n\r\n", b"pkcs8\r\n")
    with pytest.raises(MultipartError, match="no blank line"):
        parse_serverkeygen_response(no_blank, ct)
    bad_header, ct = _handmade([(["this is not a header"], key)])
    with pytest.raises(MultipartError, match="malformed header line"):
        parse_serverkeygen_response(bad_header, ct)
    many, ct = _handmade([(["Content-Type: application/pkcs8"], key)] * 9)
    with pytest.raises(MultipartError, match="more than 8 parts"):
        parse_serverkeygen_response(many, ct)
    bad_key, ct = _handmade(
        [
            (["Content-Type: application/pkcs8"], encode_base64_body(b"\x30\x03\x02\x01\x00")),
            ([f"Content-Type: {PKCS7_CERTS_ONLY}"], certs),
        ]
    )
    with pytest.raises(EncodingError, match="cannot load the private key"):
        parse_serverkeygen_response(bad_key, ct)
    bad_cert, ct = _handmade(
        [
            (["Content-Type: application/pkcs8"], key),
            ([f"Content-Type: {PKCS7_CERTS_ONLY}"], encode_base64_body(b"\x30\x00")),
        ]
    )
    with pytest.raises(Pkcs7Error, match="cannot parse the PKCS#7"):
        parse_serverkeygen_response(bad_cert, ct)
