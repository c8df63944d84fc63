"""What an OCSP answer or a CRL says about one certificate, and whether to believe it.

Why in protocol/ (no I/O): the device's check (:mod:`estkit.client.status`, which the NMOS node
and ``estkit client status`` use) and the conformance suite, which must not import the client,
judge the same answers the same way. An answer is believed only when signed by the certificate's
issuer or by a responder the issuer delegated to (id-kp-OCSPSigning, RFC 6960 §4.2.2.2), about
this very certificate, fresh, and echoing our nonce if it echoes one; anything else is
``unknown`` with the reason, so neither a forged "revoked" nor a forged "good" counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from estkit.protocol.certs import issuer_public_key

OCSP_REQUEST_MEDIA_TYPE = "application/ocsp-request"
# An OCSP answer with a responder certificate is ~1 kB; 64 KiB bounds a hostile responder.
MAX_OCSP_RESPONSE_BYTES = 64 * 1024
# CRLs of a device CA are tens of kB; 4 MiB (~100k entries) bounds a hostile URL.
MAX_CRL_BYTES = 4 * 1024 * 1024
# Clock skew tolerated on thisUpdate in the future (RFC 5019 §4: clients allow some skew).
CLOCK_SKEW_SECONDS = 300
# Nonce length (RFC 8954 §2.1 recommends 32 octets).
NONCE_BYTES = 32
# An OCSP answer without nextUpdate would otherwise be "fresh" forever: anyone who recorded a
# "good" could replay it after a revocation. One day is the longest an RFC 5019 responder's
# pre-produced answers are normally kept.
MAX_OCSP_RESPONSE_AGE = timedelta(days=1)
# A CRL without nextUpdate: CRLs are commonly reissued weekly; older than that is not trusted.
MAX_CRL_AGE = timedelta(days=7)

Status = Literal["good", "revoked", "unknown"]
_ExtensionT = TypeVar("_ExtensionT", bound=x509.ExtensionType)


@dataclass(frozen=True)
class CertificateStatus:
    """The answer for one certificate, where it came from, and what failed on the way."""

    status: Status
    serial: str
    method: Literal["ocsp", "crl"] | None = None
    source: str | None = None
    revoked_at: datetime | None = None
    reason: str | None = None
    this_update: datetime | None = None
    next_update: datetime | None = None
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    problems: tuple[str, ...] = ()

    @property
    def revoked(self) -> bool:
        return self.status == "revoked"

    def describe(self) -> str:
        """One line for a log or an event: the verdict, where it came from, or why unknown."""
        where = f" ({self.method.upper()} {self.source})" if self.method and self.source else ""
        if self.status == "revoked":
            when = self.revoked_at.isoformat() if self.revoked_at else "an unknown time"
            return f"serial {self.serial} revoked at {when}, reason {self.reason}{where}"
        if self.status == "good":
            return f"serial {self.serial} good{where}"
        return f"serial {self.serial} unknown: " + ("; ".join(self.problems) or "no answer")

    def to_json(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "status": self.status,
            "serial": self.serial,
            "method": self.method,
            "source": self.source,
            "revoked_at": iso(self.revoked_at),
            "reason": self.reason,
            "this_update": iso(self.this_update),
            "next_update": iso(self.next_update),
            "checked_at": iso(self.checked_at),
            "problems": list(self.problems),
        }


def _http_urls(values: list[str]) -> list[str]:
    return [value for value in values if value.lower().startswith(("http://", "https://"))]


def _extension_value(
    holder: x509.Certificate | x509.RevokedCertificate, kind: type[_ExtensionT]
) -> _ExtensionT | None:
    try:
        return holder.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def ocsp_urls(certificate: x509.Certificate) -> list[str]:
    """HTTP(S) OCSP responder URLs of the certificate's AIA extension."""
    aia = _extension_value(certificate, x509.AuthorityInformationAccess)
    return _http_urls(
        [
            str(d.access_location.value)
            for d in aia or ()
            if d.access_method == AuthorityInformationAccessOID.OCSP
            and isinstance(d.access_location, x509.UniformResourceIdentifier)
        ]
    )


def crl_urls(certificate: x509.Certificate) -> list[str]:
    """HTTP(S) URLs of the certificate's CRL distribution points."""
    points = _extension_value(certificate, x509.CRLDistributionPoints)
    return _http_urls(
        [
            str(name.value)
            for point in points or ()
            for name in point.full_name or []
            if isinstance(name, x509.UniformResourceIdentifier)
        ]
    )


def _verify(signer: x509.Certificate, signature: bytes, data: bytes, algorithm: Any) -> bool:
    key = signer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _delegated_signer(
    response: ocsp.OCSPResponse, issuer: x509.Certificate, now: datetime
) -> x509.Certificate | None:
    """The issuer itself, or a certificate in the response that the issuer signed with
    id-kp-OCSPSigning and that is valid now (RFC 6960 §4.2.2.2)."""
    issuer_key_hash = x509.SubjectKeyIdentifier.from_public_key(issuer.public_key()).digest
    if response.responder_name == issuer.subject or response.responder_key_hash == issuer_key_hash:
        return issuer
    for candidate in response.certificates:
        try:
            candidate.verify_directly_issued_by(issuer)
            ekus = candidate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING not in ekus:
            continue
        if not candidate.not_valid_before_utc <= now <= candidate.not_valid_after_utc:
            continue
        candidate_hash = x509.SubjectKeyIdentifier.from_public_key(candidate.public_key()).digest
        if (
            response.responder_name == candidate.subject
            or response.responder_key_hash == candidate_hash
        ):
            return candidate
    return None


def build_request(
    certificate: x509.Certificate, issuer: x509.Certificate, nonce: bytes | None
) -> bytes:
    """A DER OCSP request for one certificate (SHA-1 CertID, as RFC 5019 §2.1.1 asks)."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def interpret_ocsp_response(
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    data: bytes,
    *,
    nonce: bytes | None,
    now: datetime,
    source: str,
) -> CertificateStatus:
    """Check an OCSP answer (signature, CertID, nonce, freshness) and say what it means;
    anything that cannot be believed gives ``unknown`` with the reason in ``problems``."""
    serial = format(certificate.serial_number, "x")

    def unknown(problem: str) -> CertificateStatus:
        return CertificateStatus("unknown", serial, "ocsp", source, problems=(problem,))

    try:
        response = ocsp.load_der_ocsp_response(data)
    except ValueError as exc:
        return unknown(f"OCSP {source}: unreadable answer ({exc})")
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        return unknown(f"OCSP {source}: responder said {response.response_status.name}")
    try:
        ours = ocsp.load_der_ocsp_request(build_request(certificate, issuer, None))
        same_id = (
            response.serial_number == certificate.serial_number
            and response.issuer_key_hash == ours.issuer_key_hash
            and response.issuer_name_hash == ours.issuer_name_hash
        )
        signer = _delegated_signer(response, issuer, now)
        signed = signer is not None and _verify(
            signer,
            response.signature,
            response.tbs_response_bytes,
            response.signature_hash_algorithm,
        )
    except (ValueError, UnsupportedAlgorithm) as exc:
        return unknown(f"OCSP {source}: answer cannot be checked ({exc})")
    if not same_id:
        return unknown(f"OCSP {source}: the answer is about another certificate")
    if not signed:
        return unknown(f"OCSP {source}: not signed by the issuer or a responder it delegated to")
    if nonce is not None:
        try:
            echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            echoed = None
        if echoed is not None and echoed != nonce:
            return unknown(f"OCSP {source}: the nonce in the answer is not ours (replay?)")
    this_update, next_update = response.this_update_utc, response.next_update_utc
    stale = _staleness(this_update, next_update, now, MAX_OCSP_RESPONSE_AGE)
    if stale is not None:
        return unknown(f"OCSP {source}: the answer {stale}")
    common: dict[str, Any] = {
        "serial": serial,
        "method": "ocsp",
        "source": source,
        "this_update": this_update,
        "next_update": next_update,
    }
    if response.certificate_status is ocsp.OCSPCertStatus.REVOKED:
        reason = response.revocation_reason
        return CertificateStatus(
            "revoked",
            revoked_at=response.revocation_time_utc,
            reason=reason.value if reason is not None else "unspecified",
            **common,
        )
    if response.certificate_status is ocsp.OCSPCertStatus.GOOD:
        return CertificateStatus("good", **common)
    return CertificateStatus(
        "unknown", problems=(f"OCSP {source}: unknown to the responder",), **common
    )


def interpret_crl(
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    data: bytes,
    *,
    now: datetime,
    source: str,
) -> CertificateStatus:
    """Look the certificate up in a CRL (DER or PEM) that must be signed by ``issuer``."""
    serial = format(certificate.serial_number, "x")

    def unknown(problem: str) -> CertificateStatus:
        return CertificateStatus("unknown", serial, "crl", source, problems=(problem,))

    try:
        crl = (
            x509.load_pem_x509_crl(data)
            if data.lstrip().startswith(b"-----BEGIN")
            else x509.load_der_x509_crl(data)
        )
        signed = crl.issuer == issuer.subject and crl.is_signature_valid(issuer_public_key(issuer))
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return unknown(f"CRL {source}: unreadable ({exc})")
    if not signed:
        return unknown(f"CRL {source}: not signed by {issuer.subject.rfc4514_string()}")
    next_update = crl.next_update_utc
    stale = _staleness(crl.last_update_utc, next_update, now, MAX_CRL_AGE)
    entry = crl.get_revoked_certificate_by_serial_number(certificate.serial_number)
    # A revocation cannot be undone (estkit never puts a certificate on hold), so a signed CRL
    # that lists the certificate proves it revoked even when stale; only "not listed" needs a
    # fresh CRL.
    if stale is not None and (entry is None or _reason_of(entry) == "certificateHold"):
        return unknown(f"CRL {source}: the CRL {stale}")
    common: dict[str, Any] = {
        "serial": serial,
        "method": "crl",
        "source": source,
        "this_update": crl.last_update_utc,
        "next_update": next_update,
    }
    if entry is None:
        return CertificateStatus("good", **common)
    return CertificateStatus(
        "revoked", revoked_at=entry.revocation_date_utc, reason=_reason_of(entry), **common
    )


def _reason_of(entry: x509.RevokedCertificate) -> str:
    reason = _extension_value(entry, x509.CRLReason)
    return reason.reason.value if reason is not None else "unspecified"


def _staleness(
    this_update: datetime, next_update: datetime | None, now: datetime, max_age: timedelta
) -> str | None:
    """Why an answer issued at ``this_update`` cannot be relied on at ``now``, or None."""
    if this_update > now + timedelta(seconds=CLOCK_SKEW_SECONDS):
        return f"claims to be issued in the future (thisUpdate {this_update.isoformat()})"
    if next_update is not None:
        return f"is stale (nextUpdate {next_update.isoformat()})" if next_update < now else None
    if now - this_update > max_age:
        return (
            f"has no nextUpdate and is older than {max_age.total_seconds() / 3600:g} h "
            f"(thisUpdate {this_update.isoformat()})"
        )
    return None


__all__ = [
    "CLOCK_SKEW_SECONDS",
    "MAX_CRL_AGE",
    "MAX_CRL_BYTES",
    "MAX_OCSP_RESPONSE_AGE",
    "MAX_OCSP_RESPONSE_BYTES",
    "NONCE_BYTES",
    "OCSP_REQUEST_MEDIA_TYPE",
    "CertificateStatus",
    "Status",
    "build_request",
    "crl_urls",
    "interpret_crl",
    "interpret_ocsp_response",
    "ocsp_urls",
]
