"""CMS EnvelopedData with KeyAgreeRecipientInfo for EC recipients (RFC 5652 §6.2.2, RFC 5753).

``openssl cms`` is the independent witness both ways: it must open what we build, and we must
open what it builds (its defaults differ from ours: sha1kdf, AES-128, cofactor mode on request).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from estkit.protocol import (
    Pkcs7Error,
    PrivateKey,
    certificates_to_pem,
    encrypt_private_key_for,
    generate_private_key,
    private_key_to_der,
)
from estkit.protocol.cms_kari import (
    EccCmsSharedInfo,
    envelope_for_ec_recipient,
    is_ec_recipient,
    open_ec_envelope,
)

from .helpers import make_cert, pem_key, run_openssl

# Per recipient curve: the key-agreement scheme we must choose, as `openssl cms -print` names it.
SCHEMES = {
    "p256": "dhSinglePass-stdDH-sha256kdf-scheme",
    "p384": "dhSinglePass-stdDH-sha384kdf-scheme",
    "p521": "dhSinglePass-stdDH-sha512kdf-scheme",
}


@pytest.fixture(scope="module", params=["p256", "p384", "p521"])
def recipient(request: pytest.FixtureRequest) -> tuple[str, PrivateKey, x509.Certificate]:
    key: PrivateKey = request.getfixturevalue(f"{request.param}_key")
    return request.param, key, make_cert(key, f"{request.param}-client.example", ca=False, ski=True)


def _files(tmp_path: Path, key: PrivateKey, cert: x509.Certificate) -> tuple[str, str]:
    cert_file, key_file = tmp_path / "rcpt.pem", tmp_path / "rcpt.key"
    cert_file.write_bytes(certificates_to_pem([cert]))
    key_file.write_bytes(pem_key(key))
    return str(cert_file), str(key_file)


def _openssl_decrypt(
    tmp_path: Path, envelope: bytes, key: PrivateKey, cert: x509.Certificate
) -> bytes:
    (tmp_path / "env.der").write_bytes(envelope)
    cert_file, key_file = _files(tmp_path, key, cert)
    return run_openssl(
        "cms", "-decrypt", "-inform", "DER", "-in", str(tmp_path / "env.der"),
        "-recip", cert_file, "-inkey", key_file, "-binary",
    )  # fmt: skip


@pytest.mark.parametrize("identify_by", ["issuer_and_serial", "subject_key_identifier"])
def test_openssl_and_we_open_our_envelope(
    tmp_path: Path,
    recipient: tuple[str, PrivateKey, x509.Certificate],
    identify_by: str,
) -> None:
    curve, key, cert = recipient
    generated = private_key_to_der(generate_private_key("p256"))  # the PKCS#8 payload
    envelope = envelope_for_ec_recipient(generated, cert, identify_by=identify_by)  # type: ignore[arg-type]
    assert open_ec_envelope(envelope, cert, key) == generated  # type: ignore[arg-type]
    assert _openssl_decrypt(tmp_path, envelope, key, cert) == generated
    printed = run_openssl(
        "cms", "-cmsout", "-print", "-inform", "DER", "-in", str(tmp_path / "env.der")
    )
    assert b"d.kari" in printed
    assert SCHEMES[curve].encode() in printed
    assert b"id-aes256-wrap" in printed
    assert b"aes-256-cbc" in printed
    assert (b"d.rKeyId" in printed) == (identify_by == "subject_key_identifier")


def test_each_envelope_uses_a_fresh_ephemeral_key_and_iv(
    recipient: tuple[str, PrivateKey, x509.Certificate],
) -> None:
    _curve, key, cert = recipient
    first = envelope_for_ec_recipient(b"same content", cert)
    second = envelope_for_ec_recipient(b"same content", cert)
    assert first != second
    one, two = (cms.ContentInfo.load(e)["content"] for e in (first, second))
    originator = [e["recipient_infos"][0].chosen["originator"].chosen.dump() for e in (one, two)]
    assert originator[0] != originator[1]
    assert open_ec_envelope(first, cert, key) == open_ec_envelope(second, cert, key)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        ["-aes-256-cbc"],  # OpenSSL's default KDF: dhSinglePass-stdDH-sha1kdf-scheme
        ["-aes-128-cbc", "-keyopt", "ecdh_kdf_md:sha256"],
        ["-aes-192-cbc", "-keyopt", "ecdh_kdf_md:sha384"],
        ["-aes-256-cbc", "-keyopt", "ecdh_cofactor_mode:1"],
        ["-aes-256-cbc", "-keyid"],  # recipient named by subject key identifier
    ],
)
def test_we_open_openssl_envelopes(
    tmp_path: Path, recipient: tuple[str, PrivateKey, x509.Certificate], options: list[str]
) -> None:
    _curve, key, cert = recipient
    content = private_key_to_der(generate_private_key("p256"))
    (tmp_path / "content.der").write_bytes(content)
    cert_file, _key_file = _files(tmp_path, key, cert)
    cipher, *keyopts = options
    envelope = run_openssl(
        "cms", "-encrypt", "-binary", cipher, "-outform", "DER",
        "-in", str(tmp_path / "content.der"), "-recip", cert_file, *keyopts,
    )  # fmt: skip
    assert open_ec_envelope(envelope, cert, key) == content  # type: ignore[arg-type]


def test_shared_info_is_the_rfc_5753_der() -> None:
    # keyInfo = id-aes256-wrap with absent parameters; suppPubInfo = [2] { OCTET STRING 256 }.
    shared_info = EccCmsSharedInfo(
        {"key_info": {"algorithm": "aes256_wrap"}, "supp_pub_info": (256).to_bytes(4, "big")}
    )
    expected = bytes.fromhex(
        "30 15"  # ECC-CMS-SharedInfo
        " 30 0b 06 09 60 86 48 01 65 03 04 01 2d"  # keyInfo: id-aes256-wrap, no parameters
        " a2 06 04 04 00 00 01 00"  # suppPubInfo: 256 bits
    )
    assert shared_info.dump() == expected


def test_only_ec_certificates_on_the_nist_curves_are_recipients(
    rsa_cert: x509.Certificate, ca_key: PrivateKey
) -> None:
    k1 = make_cert(ec.generate_private_key(ec.SECP256K1()), "k1", issuer_key=ca_key, issuer="ca")
    edwards = make_cert(ed25519.Ed25519PrivateKey.generate(), "ed", issuer_key=ca_key, issuer="ca")
    assert not is_ec_recipient(rsa_cert)
    for unsupported in (rsa_cert, k1, edwards):
        with pytest.raises(ValueError, match="key agreement needs a certificate with an EC key"):
            envelope_for_ec_recipient(b"x", unsupported)
    for unsupported in (k1, edwards):
        with pytest.raises(ValueError, match="RSA key or an EC key on secp256r1"):
            encrypt_private_key_for(b"x", unsupported)


def test_open_errors(
    p256_key: PrivateKey,
    p384_key: PrivateKey,
    rsa_cert: x509.Certificate,
) -> None:
    cert = make_cert(p256_key, "p256-client.example", ca=False, ski=True)
    envelope = envelope_for_ec_recipient(b"secret", cert)
    other_key = generate_private_key("p256")
    other_cert = make_cert(other_key, "other.example", ca=False, ski=True)
    with pytest.raises(Pkcs7Error, match=r"no key-agreement recipient .* names the certificate"):
        open_ec_envelope(envelope, other_cert, other_key)  # type: ignore[arg-type]
    with pytest.raises(Pkcs7Error, match="does not unwrap with this private key"):
        open_ec_envelope(envelope, cert, other_key)  # type: ignore[arg-type]
    with pytest.raises(Pkcs7Error, match="not a point on secp384r1"):
        open_ec_envelope(envelope, cert, p384_key)  # type: ignore[arg-type]
    with pytest.raises(Pkcs7Error, match="not valid DER CMS"):
        open_ec_envelope(b"\x30\x03\x02\x01", cert, p256_key)  # type: ignore[arg-type]
    rsa_envelope = encrypt_private_key_for(b"secret", rsa_cert)
    with pytest.raises(Pkcs7Error, match=r"recipient kinds: ktri"):
        open_ec_envelope(rsa_envelope, cert, p256_key)  # type: ignore[arg-type]

    # An unknown key-agreement scheme is named, not mis-decrypted.
    info = cms.ContentInfo.load(envelope)
    kari = info["content"]["recipient_infos"][0].chosen
    kari["key_encryption_algorithm"]["algorithm"] = "1.3.132.1.11.9"
    with pytest.raises(Pkcs7Error, match=r"key-agreement algorithm 1\.3\.132\.1\.11\.9"):
        open_ec_envelope(info.dump(force=True), cert, p256_key)  # type: ignore[arg-type]
