"""The narrowing helpers the type checker relies on (issue 22 item 2) refuse what they must.

``cryptography`` loads and returns many key types; estkit works with RSA and EC keys. These
helpers turn the wide union into the narrow one and refuse the rest with a message a person can
act on, so a typed caller never has to ``cast`` or ``type: ignore``.
"""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.x509.oid import NameOID

from estkit.protocol import (
    EncodingError,
    PrivateKey,
    build_csr,
    issuer_public_key,
    public_keys_equal,
    supported_private_key,
    supported_public_key,
)

from .helpers import make_cert


def _certificate_for(public_key: x25519.X25519PublicKey) -> x509.Certificate:
    """A certificate for a key-agreement key, signed by a throwaway EC CA."""
    signer = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x25519 holder")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(signer, hashes.SHA256())
    )


def test_supported_private_key_keeps_rsa_and_ec_keys(
    p256_key: PrivateKey, rsa_key: PrivateKey
) -> None:
    assert supported_private_key(p256_key) is p256_key
    assert supported_private_key(rsa_key) is rsa_key


def test_supported_private_key_refuses_other_types_by_name() -> None:
    with pytest.raises(EncodingError, match=r"Ed25519PrivateKey"):
        supported_private_key(ed25519.Ed25519PrivateKey.generate())


def test_supported_public_key_keeps_ec_and_refuses_ed25519(p256_key: PrivateKey) -> None:
    public = p256_key.public_key()
    assert supported_public_key(public) is public
    with pytest.raises(EncodingError, match=r"Ed25519PublicKey"):
        supported_public_key(ed25519.Ed25519PrivateKey.generate().public_key())


def test_issuer_public_key_is_the_certificates_key(p256_key: PrivateKey) -> None:
    cert = make_cert(p256_key, "issuer")
    assert public_keys_equal(issuer_public_key(cert), p256_key)


def test_issuer_public_key_refuses_a_key_agreement_key_as_cryptography_does() -> None:
    """Callers (CRL checks) catch TypeError, which is what cryptography raises itself."""
    cert = _certificate_for(x25519.X25519PrivateKey.generate().public_key())
    with pytest.raises(TypeError, match=r"X25519PublicKey cannot verify signatures"):
        issuer_public_key(cert)


def test_public_keys_equal_is_false_for_what_is_not_a_key(p256_key: PrivateKey) -> None:
    """The typed SPKI helper answers False (not an exception) for a non-key, as before."""
    assert public_keys_equal(p256_key, p256_key)
    assert not public_keys_equal(p256_key, "not a key")
    assert not public_keys_equal(object(), object())


def test_build_csr_refuses_a_hash_cryptography_cannot_sign_with(p256_key: PrivateKey) -> None:
    """An instance outside the signing hashes fails as cryptography's own check failed."""
    with pytest.raises(UnsupportedAlgorithm, match=r"sha512-224"):
        build_csr(p256_key, common_name="device", hash_algorithm=hashes.SHA512_224())
    csr = build_csr(p256_key, common_name="device", hash_algorithm=hashes.SHA384())
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA384)
