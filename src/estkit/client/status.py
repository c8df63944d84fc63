"""Is this certificate revoked? Ask the OCSP responder its AIA names, the CRL as a fallback.

Why in the client library: a device (or ``estkit client status``, or the NMOS agent, BCP-003-03
C16) checks its own certificate; the answer is only believed when signed by the certificate's
issuer or by a responder the issuer delegated to (id-kp-OCSPSigning), so an on-path attacker can
neither take a device off the network with a forged "revoked" nor keep a revoked one on it with a
forged "good" (the judging is :mod:`estkit.protocol.revocation`'s, shared with the conformance
suite). Every fetch is bounded in time and size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from estkit.client.deadline import overall_deadline
from estkit.client.errors import EstConnectionError, EstError, EstHttpError
from estkit.errors import EstkitError
from estkit.protocol.revocation import (
    MAX_CRL_AGE,
    MAX_CRL_BYTES,
    MAX_OCSP_RESPONSE_AGE,
    MAX_OCSP_RESPONSE_BYTES,
    NONCE_BYTES,
    OCSP_REQUEST_MEDIA_TYPE,
    CertificateStatus,
    build_request,
    crl_urls,
    interpret_crl,
    interpret_ocsp_response,
    ocsp_urls,
)

# A status check must not hang a device's start-up: each fetch gets this long.
DEFAULT_FETCH_TIMEOUT_SECONDS = 10.0
# How much of a refusal's body is kept for the message: enough for a server's one-line reason.
MAX_ERROR_TEXT_BYTES = 500


class StatusError(EstkitError):
    """The status cannot be asked at all (no issuer, no URL): the message says what to give."""


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

    def route(self, url: str) -> tuple[str, dict[str, str], dict[str, Any]]:
        """Where ``url`` is asked: (URL, extra headers, httpx request extensions). Here as
        written; a subclass may reach a name at another address (``sni_hostname``)."""
        return url, {}, {}

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
        where, extra, extensions = self.route(url)
        request = self.http.build_request(
            method, where, content=body, headers={**(headers or {}), **extra}
        )
        request.extensions.update(extensions)
        try:
            with (
                overall_deadline(self.http, self.timeout),
                contextlib.closing(self.http.send(request, stream=True)) as reply,
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
    "NONCE_BYTES",
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
