"""Key generation, description, (de)serialisation and hash choice."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from estkit.protocol import (
    KEY_TYPES,
    EncodingError,
    KeyInfo,
    PrivateKey,
    describe_public_key,
    generate_private_key,
    key_matches_certificate,
    load_private_key,
    private_key_to_der,
    private_key_to_pem,
    public_keys_equal,
    signature_hash_for,
)

from .helpers import make_cert


@pytest.mark.parametrize(
    ("key_type", "info"),
    [
        ("p256", KeyInfo("ec", 256, "secp256r1", "ECDSA P-256")),
        ("p384", KeyInfo("ec", 384, "secp384r1", "ECDSA P-384")),
        ("p521", KeyInfo("ec", 521, "secp521r1", "ECDSA P-521")),
        ("rsa2048", KeyInfo("rsa", 2048, None, "RSA 2048")),
    ],
)
def test_generate_and_describe(key_type: str, info: KeyInfo) -> None:
    key = generate_private_key(key_type)
    assert describe_public_key(key.public_key()) == info


def test_key_types_constant() -> None:
    assert KEY_TYPES == ("rsa2048", "rsa3072", "rsa4096", "p256", "p384", "p521")


def test_generate_accepts_spelling_variants(p256_key: PrivateKey) -> None:
    assert describe_public_key(generate_private_key(" P-256 ").public_key()).curve == "secp256r1"


@pytest.mark.parametrize("bad", ["rsa1024", "ed25519", "", "p192", "rsa"])
def test_generate_unknown_type_names_valid_types(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown key type") as info:
        generate_private_key(bad)
    assert "rsa2048, rsa3072, rsa4096, p256, p384, p521" in str(info.value)


def test_describe_rejects_other_key_types() -> None:
    with pytest.raises(EncodingError, match="unsupported public key type Ed25519PublicKey"):
        describe_public_key(ed25519.Ed25519PrivateKey.generate().public_key())


@pytest.mark.parametrize("fixture", ["p256_key", "rsa_key"])
def test_pem_der_round_trips(fixture: str, request: pytest.FixtureRequest) -> None:
    key: PrivateKey = request.getfixturevalue(fixture)
    pem = private_key_to_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert public_keys_equal(load_private_key(pem), key)
    der = private_key_to_der(key)
    assert public_keys_equal(load_private_key(der), key)
    traditional = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert public_keys_equal(load_private_key(traditional), key)
    traditional_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert b"EC PRIVATE KEY" in traditional_pem or b"RSA PRIVATE KEY" in traditional_pem
    assert public_keys_equal(load_private_key(b"\n" + traditional_pem), key)


def test_load_rejects_encrypted_key(p256_key: PrivateKey) -> None:
    encrypted = p256_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(EncodingError, match="encrypted with a password"):
        load_private_key(encrypted)


def test_load_rejects_garbage_and_other_types() -> None:
    with pytest.raises(EncodingError, match="cannot load the private key"):
        load_private_key(b"\x30\x03\x02\x01\x00")
    ed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(EncodingError, match="unsupported private key type"):
        load_private_key(ed)


def test_public_keys_equal_and_certificate_match(
    p256_key: PrivateKey, p384_key: PrivateKey, leaf_cert: object
) -> None:
    assert public_keys_equal(p256_key, p256_key.public_key())
    assert not public_keys_equal(p256_key, p384_key)
    assert not public_keys_equal(p256_key, object())
    assert key_matches_certificate(p256_key, leaf_cert)  # type: ignore[arg-type]
    assert not key_matches_certificate(p384_key, leaf_cert)  # type: ignore[arg-type]
    assert key_matches_certificate(p384_key, make_cert(p384_key, "x"))
    assert public_keys_equal(leaf_cert, p256_key)
    assert not public_keys_equal(leaf_cert, p384_key.public_key())


def test_signature_hash_for(
    p256_key: PrivateKey, p384_key: PrivateKey, p521_key: PrivateKey, rsa_key: PrivateKey
) -> None:
    assert isinstance(signature_hash_for(p256_key), hashes.SHA256)
    assert isinstance(signature_hash_for(p384_key), hashes.SHA384)
    assert isinstance(signature_hash_for(p521_key), hashes.SHA512)
    assert isinstance(signature_hash_for(rsa_key), hashes.SHA256)
    assert isinstance(rsa_key, rsa.RSAPrivateKey)
