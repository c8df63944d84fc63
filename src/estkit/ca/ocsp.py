"""OCSP (RFC 6960, RFC 5019 profile): the delegated responder certificate, request parsing,
response signing.

Why a delegated responder instead of signing with the issuing CA key: every OCSP answer is a
signature, and the CA key should sign certificates and CRLs only (RFC 6960 §2.6, §4.2.2.2). The
responder key is a short-lived P-256 key per issuing-CA generation, certified by that generation
with id-kp-OCSPSigning and id-pkix-ocsp-nocheck (clients need not check the responder's own
status), and renewed well before it expires.

Nothing here does network I/O or knows about caching: the server's revocation cache
(``estkit.server.revocation_cache``) decides when to sign; this module only knows how.
"""

from __future__ import annotations

import fcntl
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from estkit.ca.builders import (
    DAY_SECONDS,
    authority_key_identifier,
    new_serial,
    subject_key_identifier,
    utc_now,
)
from estkit.ca.signer import Signer, sign_certificate
from estkit.errors import EstkitError
from estkit.fileio import write_file_atomic, write_private_file_atomic
from estkit.protocol.keys import (
    PrivateKey,
    generate_private_key,
    key_matches_certificate,
    load_private_key,
    private_key_to_pem,
    signature_hash_for,
)

OCSP_REQUEST_MEDIA_TYPE = "application/ocsp-request"
OCSP_RESPONSE_MEDIA_TYPE = "application/ocsp-response"
# A one-certificate request with a nonce is ~120 bytes; RFC 6960 allows signed requests with a
# certificate chain, which we do not need (we answer anyone): 8 KiB leaves room for a chain and
# bounds what a hostile client makes us parse.
MAX_OCSP_REQUEST_BYTES = 8 * 1024
# RFC 8954 §2.1: a nonce is 1..32 octets; a longer one is a malformed request.
MAX_NONCE_BYTES = 32
# The responder certificate lives 30 days and is renewed when 10 are left: short enough that a
# leaked responder key (it sits on the server, unlike an offline CA key) expires soon, long enough
# that a server stopped for a week comes back with a valid responder.
RESPONDER_VALIDITY_SECONDS = 30 * DAY_SECONDS
RESPONDER_RENEW_BEFORE_SECONDS = 10 * DAY_SECONDS
# Responder certificates are backdated like leaves, for clients with a slightly slow clock.
RESPONDER_BACKDATE_SECONDS = 300
# P-256: the fastest widely supported signature; every answer is one signature.
RESPONDER_KEY_TYPE = "p256"
RESPONDER_DIR = "ocsp"
# CertID hash algorithms we answer for: RFC 5019 clients use SHA-1 (it only names the issuer here,
# it signs nothing), newer ones SHA-256.
CERT_ID_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class OcspRequestError(EstkitError, ValueError):
    """The bytes are not an OCSP request we can answer (→ malformedRequest)."""


@dataclass(frozen=True)
class CertId:
    """RFC 6960 §4.1.1 CertID: which certificate a request (and a cached answer) is about."""

    hash_name: str
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial: int


@dataclass(frozen=True)
class ParsedRequest:
    cert_id: CertId
    nonce: bytes | None


@dataclass(frozen=True)
class Responder:
    """A delegated responder: its certificate (issued by ``issuer``) and key."""

    issuer: x509.Certificate
    certificate: x509.Certificate
    key: PrivateKey

    def due_for_renewal(self, now: datetime) -> bool:
        left = self.certificate.not_valid_after_utc - now
        return left.total_seconds() < RESPONDER_RENEW_BEFORE_SECONDS


def subject_public_key_bits(certificate: x509.Certificate) -> bytes:
    """The value of the subjectPublicKey BIT STRING (what CertID's issuerKeyHash hashes)."""
    key = certificate.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    if isinstance(key, rsa.RSAPublicKey):
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    raise ValueError(f"unsupported issuer key type {type(key).__name__}")


def issuer_cert_ids(issuer: x509.Certificate) -> dict[tuple[str, bytes, bytes], x509.Certificate]:
    """``(hash, nameHash, keyHash) → issuer`` for every CertID hash we accept."""
    name_der = issuer.subject.public_bytes()
    key_bits = subject_public_key_bits(issuer)
    return {
        (name, hashlib.new(name, name_der).digest(), hashlib.new(name, key_bits).digest()): issuer
        for name in CERT_ID_HASHES
    }


def parse_ocsp_request(der: bytes) -> ParsedRequest:
    """Parse a DER OCSPRequest for one certificate (RFC 5019 §2.1.1), with its nonce if any."""
    if not der:
        raise OcspRequestError("empty OCSP request")
    if len(der) > MAX_OCSP_REQUEST_BYTES:
        raise OcspRequestError(f"OCSP request over {MAX_OCSP_REQUEST_BYTES} bytes")
    try:
        request = ocsp.load_der_ocsp_request(der)
        hash_name = request.hash_algorithm.name
        cert_id = CertId(
            hash_name=hash_name,
            issuer_name_hash=request.issuer_name_hash,
            issuer_key_hash=request.issuer_key_hash,
            serial=request.serial_number,
        )
        extensions = request.extensions
    except ValueError as exc:
        # cryptography refuses garbage, trailing data and multi-certificate requests alike.
        raise OcspRequestError(f"not a DER OCSP request for one certificate: {exc}") from None
    except Exception as exc:  # an unsupported hash OID surfaces as UnsupportedAlgorithm
        raise OcspRequestError(f"unreadable OCSP request: {exc}") from None
    if hash_name not in CERT_ID_HASHES:
        raise OcspRequestError(f"CertID hash {hash_name} is not accepted")
    nonce: bytes | None = None
    for extension in extensions:
        if isinstance(extension.value, x509.OCSPNonce):
            nonce = extension.value.nonce
            if not 1 <= len(nonce) <= MAX_NONCE_BYTES:
                raise OcspRequestError(
                    f"nonce of {len(nonce)} bytes; RFC 8954 allows 1..{MAX_NONCE_BYTES}"
                )
        elif extension.critical:
            raise OcspRequestError(f"unsupported critical extension {extension.oid.dotted_string}")
    return ParsedRequest(cert_id=cert_id, nonce=nonce)


@dataclass(frozen=True)
class CertStatus:
    """What the store says about one serial: good, revoked (with time and reason) or unknown."""

    status: ocsp.OCSPCertStatus
    revoked_at: datetime | None = None
    reason: x509.ReasonFlags | None = None


GOOD = CertStatus(ocsp.OCSPCertStatus.GOOD)
UNKNOWN = CertStatus(ocsp.OCSPCertStatus.UNKNOWN)


def sign_ocsp_response(
    responder: Responder,
    cert_id: CertId,
    status: CertStatus,
    *,
    this_update: datetime,
    next_update: datetime,
    nonce: bytes | None = None,
) -> bytes:
    """A successful BasicOCSPResponse (DER) for one CertID, signed by the delegated responder."""
    reason = status.reason
    if reason is x509.ReasonFlags.unspecified:
        reason = None  # RFC 5280 §5.3.1: absent rather than "unspecified"
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=cert_id.issuer_name_hash,
            issuer_key_hash=cert_id.issuer_key_hash,
            serial_number=cert_id.serial,
            algorithm=CERT_ID_HASHES[cert_id.hash_name](),
            cert_status=status.status,
            this_update=this_update,
            next_update=next_update,
            revocation_time=status.revoked_at
            if status.status is ocsp.OCSPCertStatus.REVOKED
            else None,
            revocation_reason=reason if status.status is ocsp.OCSPCertStatus.REVOKED else None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, responder.certificate)
        .certificates([responder.certificate])
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    response = builder.sign(responder.key, signature_hash_for(responder.key))
    return response.public_bytes(serialization.Encoding.DER)


def unsuccessful_response(status: ocsp.OCSPResponseStatus) -> bytes:
    """An unsigned error answer (malformedRequest, unauthorized, tryLater, internalError)."""
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER
    )


def issue_responder_certificate(
    issuer: x509.Certificate, issuer_key: PrivateKey | Signer, now: datetime | None = None
) -> Responder:
    """A fresh delegated responder key and certificate under ``issuer`` (RFC 6960 §4.2.2.2)."""
    now = utc_now(now)
    key = generate_private_key(RESPONDER_KEY_TYPE)
    not_before = max(
        now - timedelta(seconds=RESPONDER_BACKDATE_SECONDS), issuer.not_valid_before_utc
    )
    not_after = min(now + timedelta(seconds=RESPONDER_VALIDITY_SECONDS), issuer.not_valid_after_utc)
    issuer_cn = issuer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    base = str(issuer_cn[0].value) if issuer_cn else "estkit"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{base[:48]} OCSP Responder")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(new_serial())
        .not_valid_before(not_before.replace(microsecond=0))
        .not_valid_after(not_after.replace(microsecond=0))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(subject_key_identifier(key.public_key()), critical=False)
        .add_extension(authority_key_identifier(issuer), critical=False)
    )
    # Through the signer: the CA key may live in a PKCS#11 token (estkit.ca.signer).
    certificate = sign_certificate(builder, issuer_key)
    return Responder(issuer=issuer, certificate=certificate, key=key)


def responder_paths(ca_directory: Path, generation: str) -> tuple[Path, Path]:
    """Where the responder of CA generation ``generation`` is kept (certificate, key)."""
    base = Path(ca_directory) / RESPONDER_DIR
    return base / f"{generation}-responder.pem", base / f"{generation}-responder.key"


def _stored_responder(
    cert_path: Path, key_path: Path, issuer: x509.Certificate
) -> Responder | None:
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = load_private_key(key_path.read_bytes())
        if not key_matches_certificate(key, certificate) or certificate.issuer != issuer.subject:
            return None
        certificate.verify_directly_issued_by(issuer)
    except Exception:  # missing, damaged or not ours (any parse/verify error): issue a new one
        return None
    return Responder(issuer=issuer, certificate=certificate, key=key)


def load_or_issue_responder(
    ca_directory: Path,
    generation: str,
    issuer: x509.Certificate,
    issuer_key: PrivateKey | Signer,
    now: datetime | None = None,
) -> Responder:
    """The stored responder of ``generation`` if it is ours and not due for renewal, else a new
    one, written atomically (key 0600). Worker processes starting together take a lock file, so
    one of them issues it and the others load that one (the key and certificate files always
    belong together)."""
    now = utc_now(now)
    cert_path, key_path = responder_paths(ca_directory, generation)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    with (cert_path.parent / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        existing = _stored_responder(cert_path, key_path, issuer)
        if existing is not None and not existing.due_for_renewal(now):
            return existing
        responder = issue_responder_certificate(issuer, issuer_key, now)
        write_private_file_atomic(key_path, private_key_to_pem(responder.key))
        write_file_atomic(cert_path, responder.certificate.public_bytes(serialization.Encoding.PEM))
        return responder


__all__ = [
    "CERT_ID_HASHES",
    "GOOD",
    "MAX_OCSP_REQUEST_BYTES",
    "OCSP_REQUEST_MEDIA_TYPE",
    "OCSP_RESPONSE_MEDIA_TYPE",
    "UNKNOWN",
    "CertId",
    "CertStatus",
    "OcspRequestError",
    "ParsedRequest",
    "Responder",
    "issue_responder_certificate",
    "issuer_cert_ids",
    "load_or_issue_responder",
    "parse_ocsp_request",
    "sign_ocsp_response",
    "subject_public_key_bits",
    "unsuccessful_response",
]
