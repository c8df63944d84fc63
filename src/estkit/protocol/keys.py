"""Key generation, description and (de)serialisation for the key types EST peers use.

Why a thin layer over ``cryptography``: the rest of estkit speaks in short key-type names
(``"p256"``) and human descriptions (``"ECDSA P-256"``) in configs, logs and the CLI, and needs
one place deciding which hash goes with which key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from .errors import EncodingError

if TYPE_CHECKING:
    # Only for annotations: cryptography.x509 takes ~25 ms to import, and the NMOS workflow
    # starts making its keys (this module) before anything else needs it (issue 23).
    from cryptography import x509

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
# The hashes :func:`signature_hash_for` picks: the precise type cryptography's ``sign`` accepts.
SignatureHash: TypeAlias = hashes.SHA256 | hashes.SHA384 | hashes.SHA512

KEY_TYPES = ("rsa2048", "rsa3072", "rsa4096", "p256", "p384", "p521")

# 65537 is the only public exponent anyone should use (NIST SP 800-56B, cryptography docs).
RSA_PUBLIC_EXPONENT = 65537

_CURVES: dict[str, ec.EllipticCurve] = {
    "p256": ec.SECP256R1(),
    "p384": ec.SECP384R1(),
    "p521": ec.SECP521R1(),
}
_CURVE_LABELS = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_KEY_TYPE_FOR_CURVE = {curve.name: key_type for key_type, curve in _CURVES.items()}
_PEM_MARKER = b"-----BEGIN"


@dataclass(frozen=True)
class KeyInfo:
    """What a public key is, for policy checks and for people."""

    family: Literal["rsa", "ec"]
    size: int
    curve: str | None
    description: str

    @property
    def key_type(self) -> str | None:
        """This key's name in :data:`KEY_TYPES` (``"rsa3072"``, ``"p256"``); None if it has none
        (an RSA size or a curve estkit does not generate)."""
        name = f"rsa{self.size}" if self.family == "rsa" else key_type_for_curve(self.curve)
        return name if name in KEY_TYPES else None


def key_type_for_curve(curve: str | None) -> str | None:
    """The :data:`KEY_TYPES` name of an EC curve (``"secp384r1"`` -> ``"p384"``), else None."""
    return _KEY_TYPE_FOR_CURVE.get(curve or "")


def generate_private_key(key_type: str) -> PrivateKey:
    """A fresh private key of one of :data:`KEY_TYPES`."""
    normalised = key_type.strip().lower().replace("-", "")
    if normalised in _CURVES:
        return ec.generate_private_key(_CURVES[normalised])
    if normalised.startswith("rsa") and normalised in KEY_TYPES:
        return rsa.generate_private_key(RSA_PUBLIC_EXPONENT, int(normalised[3:]))
    raise ValueError(f"unknown key type {key_type!r}; valid types are: {', '.join(KEY_TYPES)}")


def describe_public_key(public_key: object) -> KeyInfo:
    """Describe an RSA or EC public key (``KeyInfo("ec", 256, "secp256r1", "ECDSA P-256")``)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        bits = public_key.key_size
        return KeyInfo("rsa", bits, None, f"RSA {bits}")
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curve = public_key.curve.name
        label = _CURVE_LABELS.get(curve, curve)
        return KeyInfo("ec", public_key.curve.key_size, curve, f"ECDSA {label}")
    raise EncodingError(
        f"unsupported public key type {type(public_key).__name__}; EST peers here use RSA or "
        "ECDSA (P-256, P-384, P-521) keys"
    )


def private_key_to_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (files holding it must be written 0600 by the caller)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def private_key_to_der(key: PrivateKey) -> bytes:
    """PKCS#8 DER, unencrypted: the ``application/pkcs8`` part of a /serverkeygen reply."""
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(data: bytes) -> PrivateKey:
    """Load an unencrypted RSA or EC key from PEM or DER, PKCS#8 or PKCS#1/SEC1."""
    data = bytes(data)
    try:
        if data.lstrip().startswith(_PEM_MARKER):
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except TypeError:
        raise EncodingError(
            "the private key is encrypted with a password; supply an unencrypted key"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise EncodingError(
            f"cannot load the private key ({exc}); expected an unencrypted RSA or EC key in "
            "PKCS#8, PKCS#1 or SEC1 form, PEM or DER"
        ) from None
    return supported_private_key(key)


def supported_private_key(key: PrivateKeyTypes) -> PrivateKey:
    """``key`` as the RSA or EC key estkit works with; any other type (Ed25519, DSA, ...) is
    refused with :class:`EncodingError`."""
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise EncodingError(
            f"unsupported private key type {type(key).__name__}; use an RSA or ECDSA key"
        )
    return key


def supported_public_key(key: PublicKeyTypes) -> PublicKey:
    """``key`` as an RSA or EC public key; any other type is refused with :class:`EncodingError`
    (the message :func:`describe_public_key` gives)."""
    if isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        return key
    describe_public_key(key)  # raises EncodingError, naming the unsupported type
    raise AssertionError("unreachable: describe_public_key accepts only RSA and EC keys")


def _spki(public_key: object) -> bytes:
    # getattr, not isinstance with a runtime-checkable Protocol: that check walks the
    # protocol's attributes on every call, and the CA compares keys on every issuance.
    public_bytes = getattr(public_key, "public_bytes", None)
    if not callable(public_bytes):
        raise TypeError(f"{type(public_key).__name__} is not a public key")
    spki = public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if not isinstance(spki, bytes):
        raise TypeError(f"{type(public_key).__name__} is not a public key")
    return spki


def _public_part(value: object) -> object:
    from cryptography import x509  # loaded by then: whoever holds a certificate imported it

    if isinstance(value, (x509.Certificate, x509.CertificateSigningRequest)):
        return value.public_key()
    if hasattr(value, "public_key") and not hasattr(value, "public_bytes"):
        return value.public_key()  # a private key
    return value


def public_keys_equal(a: object, b: object) -> bool:
    """True when two keys have the same public part.

    Each side may be a public key, a private key, a certificate or a CSR.
    """
    try:
        return _spki(_public_part(a)) == _spki(_public_part(b))
    except (AttributeError, TypeError, ValueError):
        return False


def key_matches_certificate(key: PrivateKey, cert: x509.Certificate) -> bool:
    """True when ``key`` is the private key for ``cert``'s public key."""
    return public_keys_equal(key.public_key(), cert.public_key())


def signature_hash_for(key: object) -> SignatureHash:
    """The hash matching the key's strength: SHA-256 for RSA and P-256, SHA-384 for P-384,
    SHA-512 for P-521 (NIST SP 800-57 Part 1 Table 3 security strengths)."""
    curve = getattr(key, "curve", None)
    if curve is not None:
        if curve.key_size >= 521:
            return hashes.SHA512()
        if curve.key_size >= 384:
            return hashes.SHA384()
    return hashes.SHA256()


__all__ = [
    "KEY_TYPES",
    "KeyInfo",
    "PrivateKey",
    "PublicKey",
    "SignatureHash",
    "describe_public_key",
    "generate_private_key",
    "key_matches_certificate",
    "key_type_for_curve",
    "load_private_key",
    "private_key_to_der",
    "private_key_to_pem",
    "public_keys_equal",
    "signature_hash_for",
    "supported_private_key",
    "supported_public_key",
]
