"""Is this certificate revoked? Ask the OCSP responder its AIA names, the CRL as a fallback.

Why in the client library: a device (or ``estkit client status``, or the NMOS agent, BCP-003-03
C16) checks its own certificate; the answer is only believed when signed by the certificate's
issuer or by a responder the issuer delegated to (id-kp-OCSPSigning), so an on-path attacker can
neither take a device off the network with a forged "revoked" nor keep a revoked one on it with a
forged "good". Every fetch is bounded in time and size.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from estkit.errors import EstkitError
from estkit.protocol.certs import issuer_public_key

OCSP_REQUEST_MEDIA_TYPE = "application/ocsp-request"
# An OCSP answer with a responder certificate is ~1 kB; 64 KiB bounds a hostile responder.
MAX_OCSP_RESPONSE_BYTES = 64 * 1024
# CRLs of a device CA are tens of kB; 4 MiB (~100k entries) bounds a hostile URL.
MAX_CRL_BYTES = 4 * 1024 * 1024
# A status check must not hang a device's start-up: each fetch gets this long.
DEFAULT_FETCH_TIMEOUT_SECONDS = 10.0
# Clock skew tolerated on thisUpdate in the future (RFC 5019 §4: clients allow some skew).
CLOCK_SKEW_SECONDS = 300
# Nonce length (RFC 8954 §2.1 recommends 32 octets).
NONCE_BYTES = 32

Status = Literal["good", "revoked", "unknown"]


class StatusError(EstkitError):
    """The status cannot be asked at all (no issuer, no URL): the message says what to give."""


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


def ocsp_urls(certificate: x509.Certificate) -> list[str]:
    """HTTP(S) OCSP responder URLs of the certificate's AIA extension."""
    try:
        aia = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    except x509.ExtensionNotFound:
        return []
    return _http_urls(
        [
            str(d.access_location.value)
            for d in aia.value
            if d.access_method == AuthorityInformationAccessOID.OCSP
            and isinstance(d.access_location, x509.UniformResourceIdentifier)
        ]
    )


def crl_urls(certificate: x509.Certificate) -> list[str]:
    """HTTP(S) URLs of the certificate's CRL distribution points."""
    try:
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    except x509.ExtensionNotFound:
        return []
    return _http_urls(
        [
            str(name.value)
            for point in points.value
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
    if this_update > now + timedelta(seconds=CLOCK_SKEW_SECONDS):
        return unknown(f"OCSP {source}: thisUpdate {this_update.isoformat()} is in the future")
    if next_update is not None and next_update < now:
        return unknown(f"OCSP {source}: stale answer (nextUpdate {next_update.isoformat()})")
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
    if next_update is not None and next_update < now:
        return unknown(f"CRL {source}: stale (nextUpdate {next_update.isoformat()})")
    entry = crl.get_revoked_certificate_by_serial_number(certificate.serial_number)
    common: dict[str, Any] = {
        "serial": serial,
        "method": "crl",
        "source": source,
        "this_update": crl.last_update_utc,
        "next_update": next_update,
    }
    if entry is None:
        return CertificateStatus("good", **common)
    try:
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
    except x509.ExtensionNotFound:
        reason = "unspecified"
    return CertificateStatus(
        "revoked", revoked_at=entry.revocation_date_utc, reason=reason, **common
    )


def _read_bounded(response: httpx.Response, limit: int, what: str) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ValueError(f"{what} of {declared} bytes is over the limit of {limit}")
    chunks, total = [], 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if total > limit:
            raise ValueError(f"{what} is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def default_trust(
    issuer: x509.Certificate, extra: Sequence[x509.Certificate] = ()
) -> ssl.SSLContext:
    """TLS trust for https status URLs: the issuer (and ``extra`` chain certificates) as anchors,
    partial chains allowed — the server of an estkit CA has a certificate from that CA. The
    answers are verified on their own; TLS here keeps the question private."""
    context = ssl.create_default_context()
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [issuer, *extra])
    context.load_verify_locations(cadata=pem.decode("ascii"))
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def check_status(
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    *,
    tls: ssl.SSLContext | None = None,
    timeout: float = DEFAULT_FETCH_TIMEOUT_SECONDS,
    now: datetime | None = None,
    use_nonce: bool = True,
) -> CertificateStatus:
    """The status of ``certificate``: each AIA OCSP responder (POST with a nonce), then each CRL
    distribution point; the first believable good/revoked wins. ``unknown`` (with every problem
    met) when none answers; :class:`StatusError` when the certificate names nowhere to ask."""
    ocsp_list, crl_list = ocsp_urls(certificate), crl_urls(certificate)
    serial = format(certificate.serial_number, "x")
    if not ocsp_list and not crl_list:
        raise StatusError(
            f"certificate {serial} names no OCSP responder (AIA) and no CRL distribution point; "
            "its status cannot be asked"
        )
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise StatusError(
            f"{issuer.subject.rfc4514_string()} is not the issuer of certificate {serial} "
            f"({exc or 'signature does not verify'}); give the certificate that signed it"
        ) from None
    now = now or datetime.now(UTC)
    problems: list[str] = []
    with httpx.Client(verify=tls or default_trust(issuer), timeout=timeout) as client:
        for url in ocsp_list:
            nonce = os.urandom(NONCE_BYTES) if use_nonce else None
            try:
                with client.stream(
                    "POST",
                    url,
                    content=build_request(certificate, issuer, nonce),
                    headers={"Content-Type": OCSP_REQUEST_MEDIA_TYPE},
                ) as reply:
                    if reply.status_code != 200:
                        problems.append(f"OCSP {url}: HTTP {reply.status_code}")
                        continue
                    body = _read_bounded(reply, MAX_OCSP_RESPONSE_BYTES, "OCSP answer")
            except (httpx.HTTPError, ValueError) as exc:
                problems.append(f"OCSP {url}: {exc}")
                continue
            result = interpret_ocsp_response(
                certificate, issuer, body, nonce=nonce, now=now, source=url
            )
            if result.status != "unknown":
                return _with_problems(result, problems)
            problems.extend(result.problems)
        for url in crl_list:
            try:
                with client.stream("GET", url) as reply:
                    if reply.status_code != 200:
                        problems.append(f"CRL {url}: HTTP {reply.status_code}")
                        continue
                    body = _read_bounded(reply, MAX_CRL_BYTES, "CRL")
            except (httpx.HTTPError, ValueError) as exc:
                problems.append(f"CRL {url}: {exc}")
                continue
            result = interpret_crl(certificate, issuer, body, now=now, source=url)
            if result.status != "unknown":
                return _with_problems(result, problems)
            problems.extend(result.problems)
    return CertificateStatus("unknown", serial, problems=tuple(problems))


def _with_problems(result: CertificateStatus, problems: list[str]) -> CertificateStatus:
    if not problems:
        return result
    return dataclasses.replace(result, problems=tuple(problems))


__all__ = [
    "MAX_CRL_BYTES",
    "MAX_OCSP_RESPONSE_BYTES",
    "CertificateStatus",
    "StatusError",
    "build_request",
    "check_status",
    "crl_urls",
    "default_trust",
    "interpret_crl",
    "interpret_ocsp_response",
    "ocsp_urls",
]
