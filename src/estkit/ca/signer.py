"""Who signs for the CA: a private key in this process, or a key that never leaves a token.

Why a protocol rather than cryptography private keys everywhere: cryptography's builders sign only
with its own key objects, and an HSM key cannot be one. :class:`Signer` is what the CA needs of a
key — its public half, a signed certificate from a builder, a signed CRL from a builder — and
:func:`sign_certificate` / :func:`sign_crl` accept either a cryptography key or a Signer, so the
callers change by one line.

:class:`ExternalSigner` does the work for any key reachable only through "sign these bytes"
(PKCS#11): it builds the certificate with a throwaway key of the same algorithm and size (so the
TBS carries the right signatureAlgorithm), signs ``tbs_certificate_bytes`` (``tbs_certlist_bytes``
for a CRL) through the token, reassembles the DER with asn1crypto, and verifies the result with
the real public key before returning it: a token that signed wrongly (wrong key, wrong hash)
raises instead of handing out a broken certificate.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from estkit.ca.errors import CaError
from estkit.protocol.keys import PrivateKey, PublicKey, SignatureHash, signature_hash_for

# 1024 is the smallest RSA size cryptography generates; the key only ever signs throwaway drafts,
# and the AlgorithmIdentifier it leaves in the TBS does not depend on the modulus size.
THROWAWAY_RSA_BITS = 1024


class SignerError(CaError, ValueError):
    """The signing key cannot sign (token gone, wrong key, a signature that does not verify)."""


_Signed = TypeVar("_Signed", x509.Certificate, x509.CertificateRevocationList)


@runtime_checkable
class Signer(Protocol):
    """A CA signing key: its public key, and signing of certificate and CRL builders."""

    def public_key(self) -> PublicKey: ...

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate: ...

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList: ...


def hash_for_public_key(public_key: PublicKey) -> SignatureHash:
    """The signature hash estkit uses with this key (same rule as :func:`signature_hash_for`)."""
    return signature_hash_for(public_key)


def sign_certificate(
    builder: x509.CertificateBuilder, key: PrivateKey | Signer
) -> x509.Certificate:
    """Sign ``builder`` with an in-process key or a :class:`Signer`."""
    return _sign(builder, key, lambda signer: signer.sign_certificate(builder))


def sign_crl(
    builder: x509.CertificateRevocationListBuilder, key: PrivateKey | Signer
) -> x509.CertificateRevocationList:
    """Sign a CRL ``builder`` with an in-process key or a :class:`Signer`."""
    return _sign(builder, key, lambda signer: signer.sign_crl(builder))


def _sign(builder: Any, key: PrivateKey | Signer, through: Callable[[Signer], _Signed]) -> _Signed:
    """``builder`` signed by cryptography with an in-process ``key``, or ``through`` a Signer."""
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return cast(_Signed, builder.sign(key, signature_hash_for(key)))
    return through(key)


def _throwaway_key_like(public_key: PublicKey) -> PrivateKey:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return ec.generate_private_key(public_key.curve)
    if isinstance(public_key, rsa.RSAPublicKey):
        return rsa.generate_private_key(65537, THROWAWAY_RSA_BITS)
    raise SignerError(f"unsupported CA key type {type(public_key).__name__}")


def verify_signature(
    public_key: PublicKey, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm
) -> None:
    """Raise :class:`SignerError` unless ``signature`` over ``data`` verifies."""
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(algorithm))
        else:
            public_key.verify(signature, data, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise SignerError(
            "the signing key produced a signature that does not verify with the CA's public key; "
            "the token holds a different key than the CA certificate names"
        ) from None


class ExternalSigner:
    """A :class:`Signer` over ``sign_tbs(data, hash) -> DER signature`` (PKCS#1 v1.5 or ECDSA).

    Calls to ``sign_tbs`` are serialised: a PKCS#11 session runs one operation at a time.
    """

    def __init__(
        self,
        public_key: PublicKey,
        sign_tbs: Callable[[bytes, hashes.HashAlgorithm], bytes],
    ) -> None:
        self._public_key = public_key
        self._sign_tbs = sign_tbs
        self._lock = threading.Lock()
        self._throwaway: PrivateKey | None = None

    def public_key(self) -> PublicKey:
        return self._public_key

    def _signature(self, tbs: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        with self._lock:
            return self._sign_tbs(tbs, algorithm)

    def _throwaway_key(self) -> PrivateKey:
        if self._throwaway is None:
            self._throwaway = _throwaway_key_like(self._public_key)
        return self._throwaway

    def _token_signed(
        self, builder: Any, structure: Any, fields: tuple[str, str]
    ) -> tuple[bytes, hashes.HashAlgorithm]:
        """``builder`` signed through the token, as DER, and the hash it used. cryptography signs
        only with a key it holds, so it signs a draft with a throwaway key of the same type; the
        token's signature over the draft's to-be-signed part then replaces the draft's, and
        asn1crypto reassembles ``structure`` (whose to-be-signed and signature fields are named
        ``fields``) around it."""
        tbs_field, signature_field = fields
        algorithm = hash_for_public_key(self._public_key)
        draft = builder.sign(self._throwaway_key(), algorithm)
        parsed = structure.load(draft.public_bytes(Encoding.DER))
        tbs = parsed[tbs_field]
        der = structure(
            {
                tbs_field: tbs,
                "signature_algorithm": parsed["signature_algorithm"],
                signature_field: self._signature(tbs.dump(), algorithm),
            }
        ).dump(force=True)
        return bytes(der), algorithm

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        der, algorithm = self._token_signed(
            builder, asn1_x509.Certificate, ("tbs_certificate", "signature_value")
        )
        certificate = x509.load_der_x509_certificate(der)
        verify_signature(
            self._public_key,
            certificate.signature,
            certificate.tbs_certificate_bytes,
            algorithm,
        )
        return certificate

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList:
        der, _ = self._token_signed(
            builder, asn1_crl.CertificateList, ("tbs_cert_list", "signature")
        )
        crl = x509.load_der_x509_crl(der)
        if not crl.is_signature_valid(self._public_key):
            raise SignerError("the CRL signed through the token does not verify")
        return crl


__all__ = [
    "ExternalSigner",
    "Signer",
    "SignerError",
    "sign_certificate",
    "sign_crl",
    "verify_signature",
]
