"""Is this certificate revoked? Ask the OCSP responder its AIA names, the CRL as a fallback.

Why in the client library: a device (or ``estkit client status``, or the NMOS agent, BCP-003-03
C16) checks its own certificate; the answer is only believed when signed by the certificate's
issuer or by a responder the issuer delegated to (id-kp-OCSPSigning), so an on-path attacker can
neither take a device off the network with a forged "revoked" nor keep a revoked one on it with a
forged "good". Every fetch is bounded in time and size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, TypeVar

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from estkit.client.deadline import overall_deadline
from estkit.client.errors import EstConnectionError, EstError, EstHttpError
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
# How much of a refusal's body is kept for the message: enough for a server's one-line reason.
MAX_ERROR_TEXT_BYTES = 500
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


class StatusFetcher(Protocol):
    """How :func:`check_status` reaches the URLs a certificate names. Each method returns the
    body of a 200 answer of at most ``limit`` bytes, and raises :class:`EstError` (or
    ``OSError``/``ValueError``) otherwise: that becomes one of the problems and the next source
    is asked. The NMOS node passes its own (cancellable, simulated clock in tests)."""

    def get(self, url: str, limit: int) -> bytes: ...

    def post(self, url: str, body: bytes, content_type: str, limit: int) -> bytes: ...


# What a fetcher may raise for "this source gave nothing usable": anything else propagates
# (e.g. RequestCancelled when the caller is stopping).
FETCH_ERRORS = (EstError, OSError, ValueError)


class HttpFetcher:
    """:class:`StatusFetcher` over one ``httpx.Client``: each fetch bounded in size and by one
    overall deadline (a responder trickling bytes cannot hold the caller)."""

    def __init__(
        self, tls: ssl.SSLContext | bool, timeout: float = DEFAULT_FETCH_TIMEOUT_SECONDS
    ) -> None:
        self.timeout = timeout
        self.http = httpx.Client(verify=tls, timeout=timeout, trust_env=False)

    def close(self) -> None:
        self.http.close()

    def get(self, url: str, limit: int) -> bytes:
        return self._fetch("GET", url, limit)

    def post(self, url: str, body: bytes, content_type: str, limit: int) -> bytes:
        return self._fetch("POST", url, limit, body, {"Content-Type": content_type})

    def _fetch(
        self,
        method: str,
        url: str,
        limit: int,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        try:
            with (
                overall_deadline(self.http, self.timeout),
                self.http.stream(method, url, content=body, headers=headers) as reply,
            ):
                body = read_bounded(reply, limit)
                if reply.status_code != 200:
                    raise EstHttpError(
                        f"HTTP {reply.status_code}",
                        status=reply.status_code,
                        server_text=body[:MAX_ERROR_TEXT_BYTES].decode("utf-8", "replace"),
                        url=url,
                    )
                return body
        except httpx.HTTPError as exc:
            raise EstConnectionError(str(exc) or type(exc).__name__, url=url) from exc


def read_bounded(response: httpx.Response, limit: int) -> bytes:
    """The body of a streamed ``response``, refused (``ValueError``) past ``limit`` bytes, as
    declared or as read."""
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ValueError(f"an answer of {declared} bytes is over the limit of {limit}")
    chunks, total = [], 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if total > limit:
            raise ValueError(f"the answer is over the limit of {limit} bytes")
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


def ask_ocsp(
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    url: str,
    fetcher: StatusFetcher,
    *,
    now: datetime,
    use_nonce: bool = True,
) -> CertificateStatus:
    """POST one OCSP request (with a fresh nonce unless ``use_nonce`` is false) to ``url`` and
    judge the answer; a fetch that fails is ``unknown`` with the reason."""
    nonce = os.urandom(NONCE_BYTES) if use_nonce else None
    try:
        body = fetcher.post(
            url,
            build_request(certificate, issuer, nonce),
            OCSP_REQUEST_MEDIA_TYPE,
            MAX_OCSP_RESPONSE_BYTES,
        )
    except FETCH_ERRORS as exc:
        serial = format(certificate.serial_number, "x")
        return CertificateStatus("unknown", serial, "ocsp", url, problems=(f"OCSP {url}: {exc}",))
    return interpret_ocsp_response(certificate, issuer, body, nonce=nonce, now=now, source=url)


def ask_crl(
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    url: str,
    fetcher: StatusFetcher,
    *,
    now: datetime,
) -> CertificateStatus:
    """GET the CRL at ``url`` and look the certificate up in it."""
    try:
        body = fetcher.get(url, MAX_CRL_BYTES)
    except FETCH_ERRORS as exc:
        serial = format(certificate.serial_number, "x")
        return CertificateStatus("unknown", serial, "crl", url, problems=(f"CRL {url}: {exc}",))
    return interpret_crl(certificate, issuer, body, now=now, source=url)


def check_status(
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    *,
    tls: ssl.SSLContext | None = None,
    timeout: float = DEFAULT_FETCH_TIMEOUT_SECONDS,
    now: datetime | None = None,
    use_nonce: bool = True,
    fetcher: StatusFetcher | None = None,
) -> CertificateStatus:
    """The status of ``certificate``: each AIA OCSP responder (POST with a nonce), then each CRL
    distribution point; the first believable good/revoked wins. ``unknown`` (with every problem
    met) when none answers; :class:`StatusError` when the certificate names nowhere to ask.

    ``fetcher`` replaces the HTTP client (then ``tls`` and ``timeout`` are not used)."""
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
    with contextlib.ExitStack() as stack:
        if fetcher is None:
            fetcher = own = HttpFetcher(tls or default_trust(issuer), timeout)
            stack.callback(own.close)
        problems: list[str] = []
        sources = [("ocsp", url) for url in ocsp_list] + [("crl", url) for url in crl_list]
        for method, url in sources:
            if method == "ocsp":
                result = ask_ocsp(certificate, issuer, url, fetcher, now=now, use_nonce=use_nonce)
            else:
                result = ask_crl(certificate, issuer, url, fetcher, now=now)
            if result.status != "unknown":
                return dataclasses.replace(result, checked_at=now, problems=tuple(problems))
            problems.extend(result.problems)
    return CertificateStatus("unknown", serial, checked_at=now, problems=tuple(problems))


__all__ = [
    "FETCH_ERRORS",
    "MAX_CRL_AGE",
    "MAX_CRL_BYTES",
    "MAX_OCSP_RESPONSE_AGE",
    "MAX_OCSP_RESPONSE_BYTES",
    "CertificateStatus",
    "HttpFetcher",
    "StatusError",
    "StatusFetcher",
    "ask_crl",
    "ask_ocsp",
    "build_request",
    "check_status",
    "crl_urls",
    "default_trust",
    "interpret_crl",
    "interpret_ocsp_response",
    "ocsp_urls",
    "read_bounded",
]
