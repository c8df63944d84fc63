"""Small certificate helpers shared by every part: PEM bundles, fingerprints, names.

Why here: the bootstrap flow (RFC 7030 §4.1.1, checklist E13) has a person compare a fingerprint
printed by the server with one printed by the client, so both must format and parse it the same way.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable
from typing import TypeGuard, get_args

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPublicKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import NameOID

from ._asn1 import read_x509
from .errors import EncodingError

FINGERPRINT_PREFIX = "sha256:"
_SHA256_HEX_LENGTH = 64
_HEX_RE = re.compile(r"[0-9a-f]+")
# Hostname shape (RFC 1123 labels; '_' tolerated as many lab networks use it). A leading '*.'
# is a wildcard, which policy decides about separately.
_HOSTNAME_RE = re.compile(
    r"(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)
# RFC 1035 §2.3.4: a name is at most 255 octets on the wire, 253 characters as text.
MAX_HOSTNAME_LENGTH = 253


def certificates_to_pem(certs: Iterable[x509.Certificate]) -> bytes:
    """Concatenated PEM blocks, in the given order."""
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def load_pem_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle; raises :class:`EncodingError` when there is none."""
    certs = read_x509(
        x509.load_pem_x509_certificates,
        data,
        EncodingError,
        "no readable PEM certificate found",
        "; expected one or more '-----BEGIN CERTIFICATE-----' blocks",
    )
    if not certs:
        raise EncodingError(
            "no PEM certificate found; expected '-----BEGIN CERTIFICATE-----' blocks"
        )
    return certs


def sha256_fingerprint(cert: x509.Certificate) -> str:
    """``"sha256:"`` + 64 lower-case hex digits of the DER certificate's SHA-256."""
    return FINGERPRINT_PREFIX + cert.fingerprint(hashes.SHA256()).hex()


def colon_hex(data: bytes) -> str:
    """``AB:CD:...``: bytes as upper-case hex pairs joined by colons (fingerprints, key ids)."""
    return ":".join(f"{byte:02X}" for byte in data)


def format_fingerprint(cert: x509.Certificate) -> str:
    """``AB:CD:...`` upper-case hex with colons, as ``openssl x509 -fingerprint`` prints it."""
    return colon_hex(cert.fingerprint(hashes.SHA256()))


def parse_fingerprint(text: str) -> bytes:
    """The 32 bytes of a SHA-256 fingerprint written as ``sha256:abcd...``, ``AB:CD:...`` or hex.

    Accepts upper or lower case, colons, spaces and an optional ``sha256:``/``SHA256=`` prefix.
    """
    cleaned = text.strip().lower()
    for prefix in ("sha256:", "sha256=", "sha256 fingerprint="):
        if cleaned.startswith(prefix):
            cleaned = cleaned[len(prefix) :]
            break
    cleaned = re.sub(r"[:\s]", "", cleaned)
    if not _HEX_RE.fullmatch(cleaned) or len(cleaned) != _SHA256_HEX_LENGTH:
        raise ValueError(
            f"not a SHA-256 fingerprint: {text!r}; expected 64 hexadecimal digits, optionally "
            "with colons and a 'sha256:' prefix"
        )
    return bytes.fromhex(cleaned)


def fingerprint_matches(cert: x509.Certificate, text: str) -> bool:
    """True when ``text`` is the SHA-256 fingerprint of ``cert`` (constant-time compare)."""
    return hmac.compare_digest(cert.fingerprint(hashes.SHA256()), parse_fingerprint(text))


def dns_names(cert: x509.Certificate | x509.CertificateSigningRequest) -> list[str]:
    """The DNS names of the subjectAltName extension (empty when it has none)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(san.value.get_values_for_type(x509.DNSName))


def common_name(cert: x509.Certificate | x509.CertificateSigningRequest) -> str | None:
    """The subject's first commonName, or None."""
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def key_identifier(cert: x509.Certificate) -> bytes:
    """The certificate's subject key identifier, computed from its public key (RFC 5280
    §4.2.1.2 method 1) when the extension is absent: how EST names the key to encrypt to."""
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


# The key classes that verify signatures, as this cryptography version defines them.
_SIGNATURE_KEY_CLASSES: tuple[type, ...] = get_args(CertificateIssuerPublicKeyTypes)


def _verifies_signatures(
    key: CertificatePublicKeyTypes,
) -> TypeGuard[CertificateIssuerPublicKeyTypes]:
    return isinstance(key, _SIGNATURE_KEY_CLASSES)


def issuer_public_key(cert: x509.Certificate) -> CertificateIssuerPublicKeyTypes:
    """``cert``'s public key as one that verifies signatures (for CRL and OCSP checks).

    A key-agreement key (X25519, X448) raises TypeError, as cryptography's own checks do.
    """
    public_key = cert.public_key()
    if not _verifies_signatures(public_key):
        raise TypeError(f"a {type(public_key).__name__} cannot verify signatures")
    return public_key


def is_self_signed(cert: x509.Certificate) -> bool:
    """True when subject equals issuer and the signature verifies with the certificate's own key."""
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def is_signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer`` names and signed ``cert`` (helper for chain and rollover checks)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def signed_with_key(cert: x509.Certificate, signer: x509.Certificate) -> bool:
    """True when ``signer``'s public key verifies ``cert``'s signature (RSA PKCS#1 v1.5 or PSS,
    ECDSA).

    Names are deliberately not compared (unlike :func:`is_signed_by`): a new root may carry a new
    name, and then the rollover cross certificates are not self-issued but still link the two
    keys.
    """
    public_key = signer.public_key()
    try:
        params = cert.signature_algorithm_parameters
        if isinstance(public_key, rsa.RSAPublicKey) and isinstance(
            params, (padding.PKCS1v15, padding.PSS)
        ):
            algorithm = cert.signature_hash_algorithm
            if algorithm is None:
                return False
            public_key.verify(cert.signature, cert.tbs_certificate_bytes, params, algorithm)
        elif isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(params, ec.ECDSA):
            public_key.verify(cert.signature, cert.tbs_certificate_bytes, params)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _chain_from(start: x509.Certificate, pool: list[x509.Certificate]) -> list[x509.Certificate]:
    chain = [start]
    current = start
    while not is_self_signed(current):
        issuer = next(
            (c for c in pool if all(c is not x for x in chain) and is_signed_by(current, c)), None
        )
        if issuer is None:
            break
        chain.append(issuer)
        current = issuer
    return chain


def order_certificates(certs: Iterable[x509.Certificate]) -> list[x509.Certificate]:
    """Order certificates leaf first, then each issuer up to the root.

    Why: a certs-only PKCS#7 holds a DER ``SET OF`` certificates, so their order on the wire is
    the sorted encoding, not issuance order (``cryptography`` sorts them when writing). Callers
    that want "the issued certificate, then its chain" call this. The longest chain wins;
    certificates not on it keep their relative order at the end.
    """
    pool = list(certs)
    if len(pool) < 2:
        return pool
    issuers_of_others = {
        id(issuer)
        for cert in pool
        for issuer in pool
        if issuer is not cert and is_signed_by(cert, issuer)
    }
    candidates = [cert for cert in pool if id(cert) not in issuers_of_others] or pool
    best: list[x509.Certificate] = []
    for candidate in candidates:
        chain = _chain_from(candidate, pool)
        if len(chain) > len(best):
            best = chain
    return best + [cert for cert in pool if all(cert is not c for c in best)]


def is_hostname(name: str) -> bool:
    """True for a DNS host name (optionally a ``*.`` wildcard), False for anything else."""
    return bool(_HOSTNAME_RE.fullmatch(name)) and len(name.rstrip(".")) <= MAX_HOSTNAME_LENGTH


def key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_agreement: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    """A keyUsage extension with the named bits set and every other bit clear.

    Why one helper: ``x509.KeyUsage`` takes all nine bits; every certificate estkit makes (CA,
    leaf, operator, the conformance suite's rogue identities) sets a few of the same five, and
    contentCommitment, dataEncipherment, encipherOnly and decipherOnly are never set.
    """
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=key_agreement,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def is_ca_certificate(cert: x509.Certificate) -> bool:
    """True when basicConstraints says CA:TRUE."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


__all__ = [
    "FINGERPRINT_PREFIX",
    "certificates_to_pem",
    "colon_hex",
    "common_name",
    "dns_names",
    "fingerprint_matches",
    "format_fingerprint",
    "is_ca_certificate",
    "is_hostname",
    "is_self_signed",
    "is_signed_by",
    "issuer_public_key",
    "key_identifier",
    "key_usage",
    "load_pem_certificates",
    "order_certificates",
    "parse_fingerprint",
    "sha256_fingerprint",
    "signed_with_key",
]
