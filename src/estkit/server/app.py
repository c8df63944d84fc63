"""The HTTP side of the EST server: routing, HTTP hygiene, authentication, responses.

Why one catch-all route instead of aiohttp's router: EST paths carry a label segment that must
be validated strictly (``estkit.protocol.parse_path``), methods differ per operation, and every
refusal has to look the same (text/plain reason, log line, audit event). One dispatcher makes the
order of checks explicit: path → label → method → Content-Type → size → body → authentication →
enrollment (see ``enroll.py``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import functools
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from asn1crypto import core
from cryptography import x509

from estkit import __version__
from estkit.ca.ocsp import MAX_OCSP_REQUEST_BYTES, OCSP_REQUEST_MEDIA_TYPE, OCSP_RESPONSE_MEDIA_TYPE
from estkit.ca.profiles import Profile
from estkit.ca.store import StoreError, StoreUnavailableError
from estkit.protocol.csr import decode_csr_body
from estkit.protocol.csrattrs import (
    CHALLENGE_PASSWORD_OID,
    EC_PUBLIC_KEY_OID,
    RSA_ENCRYPTION_OID,
    TLS_EXPORTER_POP_OID,
    CsrAttribute,
    CsrAttrs,
    encode_csrattrs,
)
from estkit.protocol.encoding import encode_base64_body
from estkit.protocol.errors import CsrError, EncodingError, MediaTypeError, PathError
from estkit.protocol.limits import MAX_REQUEST_BODY_BYTES
from estkit.protocol.media import (
    CSRATTRS,
    PKCS7_CERTS_ONLY,
    PKCS8,
    PKCS10,
    SERVER_GENERATED_KEY,
    TEXT_PLAIN,
    parse_media_type,
)
from estkit.protocol.paths import CRL_PATH, parse_path
from estkit.protocol.pkcs7 import encode_certs_only_body
from estkit.protocol.pop import tls_unique_for
from estkit.protocol.retry import format_retry_after
from estkit.protocol.serverkeygen import build_serverkeygen_response
from estkit.server.accesslog import refusals
from estkit.server.enroll import (
    EnrollmentRequest,
    Forward,
    Issued,
    Operation,
    Queued,
    enroll,
    is_operation,
    would_queue,
)
from estkit.server.httpauth import HttpAuthenticator
from estkit.server.limits import body_deadline
from estkit.server.ra import ra_identity
from estkit.server.ra_forward import forward_enrollment
from estkit.server.refusal import REFUSED_REQUEST_KEY, NeedsHttpAuthentication, Refusal
from estkit.server.revocation_cache import OCSP_HTTP_MAX_AGE_SECONDS, Artifact, RevocationCache
from estkit.server.state import ServerState
from estkit.server.upstream import UpstreamPending
from estkit.tlsbind import exporter_support, tls_exporter_for

logger = logging.getLogger("estkit.server")

STATE_KEY = web.AppKey("estkit_state", ServerState)
REVOCATION_KEY = web.AppKey("estkit_revocation", RevocationCache)
OCSP_PATH = "/ocsp"
# A GET path carries the request base64- and URL-encoded (RFC 6960 App. A.1). RFC 5019 §5 GET
# requests are under 255 bytes; 4096 characters leave room for percent-encoding and a nonce and
# stay under aiohttp's own 8190-byte request line, so the refusal is ours and says why.
MAX_OCSP_GET_PATH_CHARS = 4096
CRL_MEDIA_TYPE = "application/pkix-crl"
OCSP_METHODS = ("GET", "POST")
CRL_METHODS = ("GET", "HEAD")
# no-cache: caches keep the CRL but revalidate (a cheap 304) before each use, so a revocation is
# never hidden behind a cache's max-age.
CRL_CACHE_CONTROL = "no-cache"
OCSP_GET_CACHE_CONTROL = f"public, no-transform, max-age={OCSP_HTTP_MAX_AGE_SECONDS}"
SERVER_HEADER = f"estkit/{__version__}"
# How far apart in time two requests may be for the cached /cacerts body to be reused: the CA
# generation is part of the cache key, so this only bounds staleness after an in-place edit.
_READ_CHUNK_BYTES = 16 * 1024
# OIDs listed in /csrattrs (RFC 7030 §4.5.2): subject serialNumber (BCP-003-03 C7 SHOULD) and
# the signature algorithms matching the only key family a label allows.
SERIAL_NUMBER_OID = "2.5.4.5"
SECP256R1_OID = "1.2.840.10045.3.1.7"
ECDSA_WITH_SHA256_OID = "1.2.840.10045.4.3.2"
SHA256_WITH_RSA_OID = "1.2.840.113549.1.1.11"
DEFAULT_RSA_BITS_HINT = 2048
# Retry-After when the store is down (disk full, database restarting): long enough not to hammer
# a recovering database, short enough that devices come back within a minute.
STORE_RETRY_AFTER_SECONDS = 10

# Encoded /csrattrs bodies kept (one per label profile; more labels than this only re-encode).
MAX_CACHED_CSRATTRS = 64

_GET_OPERATIONS = ("cacerts", "csrattrs")
_POST_OPERATIONS = ("simpleenroll", "simplereenroll", "serverkeygen")


def _peer(request: web.Request) -> str:
    peername = request.transport.get_extra_info("peername") if request.transport else None
    if peername:
        host, port = peername[0], peername[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return request.remote or "unknown"


def _ssl_object(request: web.Request) -> ssl.SSLObject | None:
    if request.transport is None:
        return None
    ssl_object: ssl.SSLObject | None = request.transport.get_extra_info("ssl_object")
    return ssl_object


def text_response(status: int, text: str, headers: Any = ()) -> web.Response:
    response = web.Response(
        status=status, body=(text.rstrip("\n") + "\n").encode("utf-8"), content_type=None
    )
    response.headers["Content-Type"] = TEXT_PLAIN
    for name, value in headers:
        response.headers.add(name, value)
    return response


def _client_certificate(ssl_object: ssl.SSLObject | None) -> x509.Certificate | None:
    """The client's leaf certificate as presented (not yet judged; see clientauth.py)."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return None
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise Refusal(403, f"the TLS client certificate cannot be parsed: {exc}") from None


def _base64_response(body_der: bytes, content_type: str) -> web.Response:
    response = web.Response(status=200, body=encode_base64_body(body_der))
    response.headers["Content-Type"] = content_type
    # Harmless, and some older clients only decode base64 when they see it (RFC 8951 §3).
    response.headers["Content-Transfer-Encoding"] = "base64"
    return response


def _certs_response(certificates: list[x509.Certificate]) -> web.Response:
    response = web.Response(status=200, body=encode_certs_only_body(certificates))
    response.headers["Content-Type"] = PKCS7_CERTS_ONLY
    response.headers["Content-Transfer-Encoding"] = "base64"
    return response


def _challenge_headers(
    authenticator: HttpAuthenticator, *, stale: bool = False
) -> list[tuple[str, str]]:
    return [("WWW-Authenticate", value) for value in authenticator.challenges(stale=stale)]


def method_not_allowed(method: str, allowed: tuple[str, ...], operation: str) -> Refusal:
    return Refusal(
        405,
        f"{method} is not allowed on /{operation}; use {' or '.join(allowed)}",
        headers=[("Allow", ", ".join(allowed))],
    )


def csrattrs_for(profile: Profile) -> CsrAttrs:
    """What /csrattrs tells clients to put in their CSRs under ``profile``."""
    oids: list[x509.ObjectIdentifier] = []
    attributes: list[CsrAttribute] = []
    if profile.require_pop:
        oids.append(x509.ObjectIdentifier(CHALLENGE_PASSWORD_OID))
    if exporter_support().available:  # we verify tls-exporter PoP under TLS 1.3 (tls13-pop.md)
        oids.append(x509.ObjectIdentifier(TLS_EXPORTER_POP_OID))
    if profile.auth_mode == "nmos":
        oids.append(x509.ObjectIdentifier(SERIAL_NUMBER_OID))
    if profile.key_families == frozenset({"ec"}):
        attributes.append(
            CsrAttribute(
                x509.ObjectIdentifier(EC_PUBLIC_KEY_OID),
                (core.ObjectIdentifier(SECP256R1_OID).dump(),),
            )
        )
        oids.append(x509.ObjectIdentifier(ECDSA_WITH_SHA256_OID))
    elif profile.key_families == frozenset({"rsa"}):
        attributes.append(
            CsrAttribute(
                x509.ObjectIdentifier(RSA_ENCRYPTION_OID),
                (core.Integer(DEFAULT_RSA_BITS_HINT).dump(),),
            )
        )
        oids.append(x509.ObjectIdentifier(SHA256_WITH_RSA_OID))
    return CsrAttrs(oids=tuple(oids), attributes=tuple(attributes))


@functools.lru_cache(maxsize=MAX_CACHED_CSRATTRS)
def _csrattrs_der(profile: Profile) -> bytes:
    return encode_csrattrs(csrattrs_for(profile))


class EstHandler:
    """Request handling bound to one :class:`ServerState`."""

    def __init__(self, state: ServerState, revocation: RevocationCache) -> None:
        self.state = state
        self._cacerts_cache: tuple[str, bytes] | None = None
        self.revocation = revocation  # started and stopped with the app (create_app)

    # -- entry point ---------------------------------------------------------------------------

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        self.state.refresh()
        raw_path = request.rel_url.raw_path
        if self.state.config.upstream is not None and raw_path.startswith(CRL_PATH):
            raise Refusal(
                404, "this server is a registration authority: the upstream CA publishes the CRL"
            )
        if raw_path == CRL_PATH or raw_path.startswith(CRL_PATH + "/"):
            self._require_method(request, CRL_METHODS, "crl")
            return await self.crl(request, raw_path[len(CRL_PATH) + 1 :] or None)
        if raw_path == OCSP_PATH or raw_path.startswith(OCSP_PATH + "/"):
            return await self.ocsp(request, raw_path)
        try:
            label, operation = parse_path(raw_path)
        except PathError as exc:
            raise Refusal(404, f"no such EST resource: {exc}") from None
        profile = self.state.config.profile_for(label)
        if profile is None:
            configured = ", ".join(sorted(self.state.config.labels)) or "none"
            raise Refusal(404, f"unknown EST label {label!r} (configured labels: {configured})")
        if operation == "fullcmc":
            raise Refusal(501, "fullcmc is not supported by this server (optional in RFC 7030)")
        if operation in _GET_OPERATIONS:
            self._require_method(request, ("GET", "HEAD"), operation)
            if self.state.config.upstream is not None:
                return await self._from_upstream(operation, profile)
            if operation == "cacerts":
                return self.cacerts()
            return self.csrattrs(profile)
        self._require_method(request, ("POST",), operation)
        assert is_operation(operation)  # parse_path's other operations are answered above
        return await self.enroll(request, label, operation, profile)

    @staticmethod
    def _require_method(request: web.Request, allowed: tuple[str, ...], operation: str) -> None:
        if request.method not in allowed:
            raise method_not_allowed(request.method, allowed, operation)

    # -- GET operations ------------------------------------------------------------------------

    def cacerts(self) -> web.Response:
        authority = self.state.authority
        generation = authority.generation
        if self._cacerts_cache is None or self._cacerts_cache[0] != generation:
            self._cacerts_cache = (generation, encode_certs_only_body(authority.cacerts))
        response = web.Response(status=200, body=self._cacerts_cache[1])
        response.headers["Content-Type"] = PKCS7_CERTS_ONLY
        response.headers["Content-Transfer-Encoding"] = "base64"
        return response

    async def _from_upstream(self, operation: str, profile: Profile) -> web.Response:
        """RA mode: /cacerts and /csrattrs as the upstream serves them (cached briefly)."""
        upstream, cache = self.state.config.upstream, self.state.upstream_cache
        assert upstream is not None
        if operation == "cacerts":
            return _certs_response(await cache.cacerts(upstream, self.state.authority.cacerts))
        attrs = await cache.csrattrs(upstream, profile)
        return _base64_response(encode_csrattrs(attrs), CSRATTRS)

    def csrattrs(self, profile: Profile) -> web.Response:
        # Encoded once per profile (a profile is an immutable value; an edited configuration
        # gives new ones, and old entries go with the LRU bound).
        return _base64_response(_csrattrs_der(profile), CSRATTRS)

    async def crl(self, request: web.Request, generation: str | None = None) -> web.Response:
        """``/crl``: signed by the current issuing CA; ``/crl/<generation>`` (``/crl/g1``): by
        that generation's, for certificates issued before a rollover. Served from the revocation
        cache (signed once per change, see revocation_cache.py), with ETag/Last-Modified."""
        artifact = await crl_artifact(self.state, self.revocation, generation)
        return _artifact_response(request, artifact, CRL_MEDIA_TYPE, CRL_CACHE_CONTROL)

    async def ocsp(self, request: web.Request, raw_path: str) -> web.Response:
        """``/ocsp`` (RFC 6960 App. A, RFC 5019 §5): POST a DER request, or GET
        ``/ocsp/<base64 of the DER request, URL-encoded>``."""
        if request.method == "POST":
            check_ocsp_post(raw_path, request.headers.get("Content-Type", ""))
            der = await self._read_body(request, MAX_OCSP_REQUEST_BYTES, "an OCSP request")
        elif request.method == "GET":
            der = ocsp_get_der(raw_path)
        else:
            raise method_not_allowed(request.method, OCSP_METHODS, "ocsp")
        answer = await self.revocation.ocsp(der)
        if answer.artifact is not None and request.method == "GET":
            return _artifact_response(
                request, answer.artifact, OCSP_RESPONSE_MEDIA_TYPE, OCSP_GET_CACHE_CONTROL
            )
        response = web.Response(status=200, body=answer.body)
        response.headers["Content-Type"] = OCSP_RESPONSE_MEDIA_TYPE
        response.headers["Cache-Control"] = "no-store"
        return response

    # -- enrollment ----------------------------------------------------------------------------

    async def _read_body(
        self,
        request: web.Request,
        limit: int = MAX_REQUEST_BODY_BYTES,
        what: str = "a CSR",
    ) -> bytes:
        if request.content_length is not None and request.content_length > limit:
            raise Refusal(
                413,
                f"request body of {request.content_length} bytes is over the limit of {limit} "
                f"bytes; {what} is a few kilobytes at most",
                headers=[("Connection", "close")],
            )
        if request.content.is_eof():
            # The whole body came with the request head (an OCSP request or a CSR fits in a
            # segment): nothing is left to wait for, so no deadline and no chunk loop (issue 17:
            # a third of the server's Python time per OCSP answer went into them).
            try:
                body = request.content.read_nowait(-1)
            except web.RequestPayloadError as exc:
                raise _unreadable_body(exc) from None
            if len(body) > limit:
                raise _too_large(limit, what)
            return body
        chunks: list[bytes] = []
        total = 0
        limits = self.state.config.limits
        timeout = limits.body_timeout
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            # body_timeout: a body that stops arriving must not hold the connection (guard.py
            # bounds the head; this bounds the body). After a grace, it must also keep
            # body_min_rate bytes/s (each byte buys 1/rate s, as Apache's mod_reqtimeout).
            async with asyncio.timeout_at(body_deadline(started, 0, limits)) as deadline:
                async for chunk in request.content.iter_chunked(_READ_CHUNK_BYTES):
                    total += len(chunk)
                    deadline.reschedule(body_deadline(started, total, limits))
                    if total > limit:
                        raise _too_large(limit, what)
                    chunks.append(chunk)
        except TimeoutError:
            expected = f" of {request.content_length}" if request.content_length is not None else ""
            raise Refusal(
                408,
                f"request body not received within body_timeout={timeout:g} s at "
                f"body_min_rate={limits.body_min_rate:g} bytes/s ({total}{expected} bytes "
                f"arrived in {loop.time() - started:.1f} s); send the whole body at once",
                headers=[("Connection", "close")],
            ) from None
        except ConnectionError:
            # The guard closed a slow body to make room (guard.py), or the client went away.
            raise Refusal(400, "the connection closed before the request body arrived") from None
        except web.RequestPayloadError as exc:
            raise _unreadable_body(exc) from None
        return b"".join(chunks)

    @staticmethod
    def _check_content_type(request: web.Request, operation: str) -> None:
        value = request.headers.get("Content-Type")
        if not value:
            raise Refusal(415, f"/{operation} needs Content-Type: {PKCS10} (none was sent)")
        try:
            media_type = parse_media_type(value)
        except MediaTypeError as exc:
            raise Refusal(415, f"unreadable Content-Type {value[:100]!r}: {exc}") from None
        if not media_type.matches(PKCS10):
            raise Refusal(
                415, f"/{operation} needs Content-Type: {PKCS10}, got {media_type.essence}"
            )
        coding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if coding not in ("", "identity"):
            # RFC 9110 8.4.1: 415 for a content coding the server does not accept. EST bodies
            # are base64 text of a few kilobytes; nothing is gained by compressing them.
            raise Refusal(
                415,
                f"Content-Encoding {coding[:40]} is not accepted on /{operation}; send the "
                "CSR uncompressed (base64 or DER)",
            )

    async def _http_user(self, request: web.Request, profile: Profile) -> str | None:
        """The HTTP user of an rfc7030-mode request, or a 401 when credentials are wrong."""
        header = request.headers.get("Authorization")
        if profile.auth_mode != "rfc7030" or not header:
            return None  # nmos mode never looks at HTTP credentials (S5)
        authenticator = self.state.authenticator
        loop = asyncio.get_running_loop()
        # Basic checks run scrypt (tens of ms): keep them off the event loop.
        result = await loop.run_in_executor(
            None,
            lambda: authenticator.check(
                header, method=request.method, uri=str(request.rel_url), source=request.remote
            ),
        )
        if result.retry_after is not None:
            # 429, not 401: a client that just re-prompts the user on 401 would keep the lock on;
            # 429 + Retry-After says "stop and wait" to people and programs alike (issue 24).
            raise Refusal(
                429,
                f"HTTP authentication refused: {result.reason}",
                headers=[("Retry-After", str(result.retry_after))],
            )
        if result.user is None:
            raise Refusal(
                401,
                f"HTTP authentication failed: {result.reason}",
                headers=[
                    ("WWW-Authenticate", value)
                    for value in authenticator.challenges(stale=result.stale)
                ],
            )
        return result.user

    async def enroll(
        self, request: web.Request, label: str | None, operation: Operation, profile: Profile
    ) -> web.Response:
        self._check_content_type(request, operation)
        body = await self._read_body(request)
        ssl_object = _ssl_object(request)
        client_certificate = _client_certificate(ssl_object)
        now = dt.datetime.now(dt.UTC)
        http_user = await self._http_user(request, profile)
        client_status = None
        # A registration authority this server trusts (issue 21; ra.py).
        forwarded_by = ra_identity(self.state.config, client_certificate, now)
        if profile.auth_mode == "rfc7030" and http_user is None and forwarded_by is None:
            # Authenticate before looking at the body: clients such as curl --digest first
            # send the request without credentials (and with an empty body) to get the
            # challenge, so a 401 must come before any complaint about the CSR.
            client_status = await self.state.run(self.state.trust.check, client_certificate, now)
            anonymous = not client_status.trusted and not client_status.revoked
            # A request with neither credentials nor a client certificate is challenged even on
            # a label that queues: it is how Digest clients start (the operator could not tell
            # who asked anyway). An untrusted certificate is what the approval queue is for.
            if anonymous and (
                client_certificate is None or not would_queue(profile, authenticated=False)
            ):
                raise Refusal(
                    401,
                    f"authentication required: {client_status.reason}; authenticate with "
                    "a trusted TLS client certificate or an HTTP user of this server",
                    headers=_challenge_headers(self.state.authenticator),
                )
        try:
            csr = decode_csr_body(body)
        except (EncodingError, CsrError) as exc:
            raise Refusal(400, f"the request body is not a usable PKCS#10 CSR: {exc}") from None
        enrollment = EnrollmentRequest(
            operation=operation,
            label=label,
            profile=profile,
            csr=csr,
            client_certificate=client_certificate,
            http_user=http_user,
            peer=_peer(request),
            tls_unique=tls_unique_for(ssl_object),
            tls_version=ssl_object.version() if ssl_object else None,
            client_status=client_status,
            forwarded_by=forwarded_by,
            tls_exporter=tls_exporter_for(ssl_object),
        )
        try:
            outcome = await self.state.run(enroll, self.state, enrollment, now)
        except NeedsHttpAuthentication as exc:
            raise Refusal(
                401,
                f"authentication required: {exc.reason}",
                headers=_challenge_headers(self.state.authenticator),
            ) from None
        if isinstance(outcome, Forward):
            forwarded = await forward_enrollment(self.state, enrollment, outcome)
            if isinstance(forwarded, UpstreamPending):
                seconds = format_retry_after(forwarded.retry_after_seconds)
                return text_response(
                    202,
                    f"the upstream CA is holding the request for approval; repeat the same "
                    f"request after {seconds} seconds",
                    headers=[("Retry-After", seconds)],
                )
            outcome = forwarded
        if isinstance(outcome, Queued):
            return self._queued(outcome, label)
        return self._issued(outcome, operation)

    def _queued(self, outcome: Queued, label: str | None) -> web.Response:
        seconds = outcome.retry_after_seconds
        data_dir = self.state.data_dir
        logger.info(
            "request %d %s for operator approval (label %s)",
            outcome.request_id,
            "queued" if outcome.new else "still waiting",
            label or "-",
        )
        return text_response(
            202,
            f"request {outcome.request_id} is waiting for operator approval; repeat the same "
            f"request after {seconds} seconds (operator: estkit server approve {data_dir} "
            f"{outcome.request_id})",
            headers=[("Retry-After", format_retry_after(seconds))],
        )

    def _issued(self, outcome: Issued, operation: str) -> web.Response:
        if operation != "serverkeygen" or outcome.key_part is None:
            return _certs_response([outcome.certificate])
        media_type = SERVER_GENERATED_KEY if outcome.key_encrypted else PKCS8
        body, content_type = build_serverkeygen_response(
            outcome.key_part, media_type, [outcome.certificate]
        )
        response = web.Response(status=200, body=body)
        response.headers["Content-Type"] = content_type
        return response


def check_ocsp_post(raw_path: str, media: str) -> None:
    """A POST to the OCSP path goes to exactly /ocsp with the OCSP request media type; else the
    Refusal (404, 415) that says so. Shared by the HTTPS port and the plain-HTTP listener."""
    if raw_path != OCSP_PATH:
        raise Refusal(404, f"POST OCSP requests to {OCSP_PATH}, not {raw_path[:80]}")
    try:
        # What every OCSP client sends, compared as is before any parsing.
        matches = media == OCSP_REQUEST_MEDIA_TYPE or parse_media_type(media).matches(
            OCSP_REQUEST_MEDIA_TYPE
        )
    except MediaTypeError:
        matches = False
    if not matches:
        raise Refusal(
            415,
            f"{OCSP_PATH} needs Content-Type: {OCSP_REQUEST_MEDIA_TYPE}, got "
            f"{media[:80] or 'none'}",
        )


def ocsp_get_der(raw_path: str) -> bytes:
    """The DER request of a GET ``/ocsp/<base64>`` (b"" when undecodable: malformedRequest);
    a path over MAX_OCSP_GET_PATH_CHARS is a 414 Refusal."""
    if len(raw_path) > MAX_OCSP_GET_PATH_CHARS:
        raise Refusal(
            414,
            f"OCSP GET path of {len(raw_path)} characters is over the limit of "
            f"{MAX_OCSP_GET_PATH_CHARS}; an OCSP request is a few hundred bytes",
        )
    return _decode_ocsp_get_path(raw_path[len(OCSP_PATH) + 1 :])


async def crl_artifact(
    state: ServerState, revocation: RevocationCache, generation: str | None
) -> Artifact:
    """``/crl`` (None: the current generation's) or ``/crl/<generation>``; a Refusal (404 for
    a generation this CA never had, 503 while the store cannot be read) otherwise."""
    if generation is not None:
        issuers = state.authority.issuers_by_generation
        if generation not in issuers:
            raise Refusal(
                404,
                f"no CA generation {generation[:40]!r}: this server has "
                f"{', '.join(sorted(issuers))} (/crl is the current one's)",
            )
    artifact = await revocation.crl(generation)
    if artifact is None:
        raise Refusal(
            503,
            "the CRL is not available yet (the certificate store could not be read); retry "
            f"after {STORE_RETRY_AFTER_SECONDS} seconds",
            headers=[("Retry-After", format_retry_after(STORE_RETRY_AFTER_SECONDS))],
        )
    return artifact


def artifact_headers(artifact: Artifact, cache_control: str) -> dict[str, str]:
    """ETag, Last-Modified, Expires and Cache-Control of a cached signed artifact."""
    last_modified, expires = artifact.http_dates
    return {
        "ETag": artifact.etag,
        "Last-Modified": last_modified,
        "Expires": expires,
        "Cache-Control": cache_control,
    }


def _decode_ocsp_get_path(encoded: str) -> bytes:
    """The DER request of a GET: URL-decoded, then base64 (standard or URL-safe alphabet, with
    or without padding). Undecodable text gives b"" (answered malformedRequest)."""
    text = unquote(encoded).strip().replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return b""


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = [value.strip().removeprefix("W/") for value in header.split(",")]
    return "*" in candidates or etag in candidates


def _artifact_response(
    request: web.Request, artifact: Artifact, content_type: str, cache_control: str
) -> web.Response:
    """A cached signed artifact with ETag/Last-Modified/Expires; 304 when the client has it."""
    headers = artifact_headers(artifact, cache_control)
    if etag_matches(request.headers.get("If-None-Match"), artifact.etag):
        return web.Response(status=304, headers=headers)
    response = web.Response(status=200, body=artifact.body, headers=headers)
    response.headers["Content-Type"] = content_type
    return response


def _too_large(limit: int, what: str) -> Refusal:
    return Refusal(
        413,
        f"request body is over the limit of {limit} bytes; {what} is a few kilobytes at most",
        headers=[("Connection", "close")],
    )


def _unreadable_body(exc: Exception) -> Refusal:
    # Broken chunked framing and the like: the client's fault, never a 500.
    return Refusal(
        400, f"the request body could not be read: {exc}", headers=[("Connection", "close")]
    )


# -- middleware ------------------------------------------------------------------------------------


def _refusal_middleware(state: ServerState) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            response = await handler(request)
        except Refusal as refusal:
            response = text_response(refusal.status, refusal.reason, refusal.headers)
            if ("Connection", "close") in refusal.headers:
                response.force_close()
            await _record_refusal(state, request, refusal.status, refusal.reason)
        except StoreUnavailableError as exc:
            # Nothing was issued or decided; the client may simply come back (E8 semantics).
            # The client is not told where the database lives (path, host): the log is.
            retry = format_retry_after(STORE_RETRY_AFTER_SECONDS)
            response = text_response(
                503,
                "the certificate store is unavailable, nothing was issued; retry after "
                f"{retry} seconds (the server log has the details)",
                [("Retry-After", retry)],
            )
            # One line, no traceback, and no attempt to record it in the store that is down.
            logger.warning(
                "refused %s %s %s: 503 the certificate store is unavailable, nothing was "
                "issued: %s",
                _peer(request),
                request.method,
                request.rel_url.raw_path,
                exc,
            )
        except web.HTTPException as exc:
            # aiohttp's own refusals (e.g. its body-size guard): same shape as ours.
            reason = exc.text or exc.reason
            response = text_response(exc.status, reason)
            if exc.status >= 400:
                await _record_refusal(state, request, exc.status, reason)
        except asyncio.CancelledError:
            raise
        except Exception:
            incident = secrets.token_hex(6)
            logger.exception(
                "incident %s: %s %s from %s", incident, request.method, request.path, _peer(request)
            )
            response = text_response(
                500,
                f"internal server error (incident {incident}); the server log has the details",
            )
        response.headers["Server"] = SERVER_HEADER
        return response

    return middleware


async def _record_refusal(
    state: ServerState, request: web.Request, status: int, reason: str
) -> None:
    if not await _relayed_by_trusted_ra(state, request):
        request[REFUSED_REQUEST_KEY] = True  # counted against the peer's address (guard.py)
    peer = _peer(request)
    path = request.rel_url.raw_path
    # Rate-limited (accesslog.refusals): a flood must not become a flood of log lines; the
    # access log and the store's audit event still record each one.
    refusals.log(
        "refused requests",
        logging.WARNING,
        "refused %s %s %s: %d %s",
        peer,
        request.method,
        path,
        status,
        reason,
    )
    await _audit(
        state, "refused", reason, status=status, path=path, peer=peer, method=request.method
    )


async def _relayed_by_trusted_ra(state: ServerState, request: web.Request) -> bool:
    """True when ``request`` came from a registration authority this server trusts (``[ra]
    trusted``, its certificate not revoked). Its refusals are the devices' it relays, not its
    own: they are not counted against its address by the failure throttle (guard.py), which
    would otherwise back off every device behind the RA once they together pass
    failures_per_second. Each refusal is still audited and logged."""
    try:
        certificate = _client_certificate(_ssl_object(request))
    except Refusal:
        return False
    now = dt.datetime.now(dt.UTC)
    if ra_identity(state.config, certificate, now) is None:
        return False
    status = await state.run(state.trust.check, certificate, now)
    return not status.revoked


# Audit message of an address whose new connections the guard closes at accept (one event per
# backoff; the message is fixed so the console groups them, the fields say who and how many).
THROTTLED_MESSAGE = (
    "new connections get no TLS for a while: too many failed TLS handshakes or refused requests "
    "from one address"
)


async def record_throttled(
    state: ServerState, address: str, failures: int, backoff_seconds: float
) -> None:
    """The ``throttled`` audit event of an address the failure throttle backs off (guard.py)."""
    await _audit(
        state,
        "throttled",
        THROTTLED_MESSAGE,
        peer=address,
        failures=failures,
        backoff_seconds=backoff_seconds,
    )


async def _audit(state: ServerState, kind: str, message: str, **fields: object) -> None:
    """One audit event on the store thread; a store that fails is logged, never raised (the
    refusal itself must still reach the client)."""
    try:
        await state.run(lambda: state.store.log_event(kind, message, **fields))
    except StoreError as exc:
        logger.warning("could not record the %s event in the certificate store: %s", kind, exc)
    except Exception:
        logger.exception("could not record the %s event in the store", kind)


def create_app(state: ServerState) -> web.Application:
    """The aiohttp application of the EST server over ``state``."""
    # client_max_size is aiohttp's own guard; we check earlier and with a clearer message.
    app = web.Application(
        client_max_size=MAX_REQUEST_BODY_BYTES, middlewares=[_refusal_middleware(state)]
    )
    app[STATE_KEY] = state
    # The tls-exporter self-check runs once per process: here, not in the first /csrattrs.
    support = exporter_support()
    logger.info("proof-of-possession under TLS 1.3 (tls-exporter): %s", support.reason)
    revocation = RevocationCache(state)
    app[REVOCATION_KEY] = revocation
    handler = EstHandler(state, revocation)

    async def start_revocation(_app: web.Application) -> None:
        await revocation.start()

    async def stop_revocation(_app: web.Application) -> None:
        await revocation.stop()

    app.on_startup.append(start_revocation)
    app.on_cleanup.append(stop_revocation)
    app.router.add_route("*", "/{tail:.*}", handler.dispatch)
    return app
