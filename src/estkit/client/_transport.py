"""Pieces both transports share: httpx client options, TLS facts, body limits, error translation.

Why: the sync and async clients differ only in ``await``; everything they decide (which httpx
exception means "TLS verification failed", how big a body may be, where tls-unique comes from)
lives here once.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TypedDict

import httpx

from estkit.errors import EstkitError
from estkit.protocol import MAX_RESPONSE_BODY_BYTES, tls_unique_for
from estkit.tlsbind import tls_exporter_for

from .errors import (
    EstConnectionChanged,
    EstConnectionError,
    EstError,
    EstProtocolResponseError,
    EstTimeoutError,
    EstTlsError,
)
from .responses import Reply

# What a one-connection client may hold: exactly one connection, kept alive, so that the
# requests of a proof-of-possession enrollment share one TLS session (E14).
ONE_CONNECTION = httpx.Limits(max_connections=1, max_keepalive_connections=1)

# Seconds; the whole enrollment including the server's signing is a few ms on a LAN, but a
# manual-approval server behind a slow link may take a while to accept the connection.
DEFAULT_TIMEOUT_SECONDS = 30.0

USER_AGENT = "estkit-client"


class HttpClientOptions(TypedDict):
    """The keyword arguments :func:`http_client_options` gives ``httpx.Client``/``AsyncClient``."""

    timeout: float
    follow_redirects: bool
    trust_env: bool
    headers: dict[str, str]


def http_client_options(timeout: float) -> HttpClientOptions:
    """Options for every httpx client we make (shared, verified, bootstrap and PoP)."""
    return {
        "timeout": timeout,
        "follow_redirects": False,  # the flows follow same-origin redirects themselves (E10)
        "trust_env": False,  # no proxy variables or .netrc credentials sneaking in (E9)
        "headers": {"User-Agent": USER_AGENT},
    }


@dataclass(frozen=True)
class TlsFacts:
    version: str | None
    tls_unique: bytes | None
    tls_exporter: bytes | None = None


def tls_facts(response: httpx.Response, *, channel_binding: bool = False) -> TlsFacts:
    """TLS version and tls-unique of the connection that carried ``response``; with
    ``channel_binding`` also its tls-exporter under TLS 1.3 (only proof-of-possession requests
    ask: the first read in a process runs ``estkit.tlsbind``'s self-check)."""
    stream = response.extensions.get("network_stream")
    if stream is None:
        return TlsFacts(None, None)
    ssl_object = stream.get_extra_info("ssl_object")
    if ssl_object is None:
        return TlsFacts(None, None)
    exporter = tls_exporter_for(ssl_object) if channel_binding else None
    return TlsFacts(ssl_object.version(), tls_unique_for(ssl_object), exporter)


class BodyCollector:
    """Accumulates a response body, refusing more than ``MAX_RESPONSE_BODY_BYTES``."""

    def __init__(self, request: httpx.Request, limit: int = MAX_RESPONSE_BODY_BYTES) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._limit = limit
        self._request = request

    def add(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self._limit:
            raise EstProtocolResponseError(
                f"the answer to {self._request.method} {self._request.url.path} is larger than "
                f"{self._limit} bytes; stopped reading",
                hint="this is not an EST response; check the server URL",
                url=str(self._request.url),
            )
        self._parts.append(chunk)

    def reply(self, response: httpx.Response, facts: TlsFacts) -> Reply:
        """The finished :class:`Reply`; ``facts`` were taken when the headers arrived, before
        reading the body could end the connection (``Connection: close``)."""
        return Reply(
            method=self._request.method,
            url=response.request.url if response.request else self._request.url,
            status=response.status_code,
            headers=response.headers,
            body=b"".join(self._parts),
            tls_version=facts.version,
            tls_unique=facts.tls_unique,
            tls_exporter=facts.tls_exporter,
        )


def _ssl_cause(exc: BaseException) -> BaseException | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return current
        current = current.__cause__ or current.__context__
    return None


def translate_transport_error(
    exc: httpx.HTTPError, request: httpx.Request, trust_description: str
) -> EstError:
    """Map an httpx failure to our hierarchy with a message that says what to do."""
    url = str(request.url)
    target = f"{request.url.host}:{request.url.port or 443}"
    if isinstance(exc, httpx.TimeoutException):
        # The message names the overall deadline when that is what expired (see .deadline).
        return EstTimeoutError(
            f"no answer from {target} in time ({str(exc) or type(exc).__name__})",
            hint="check that the server is running and reachable, or raise the timeout",
            url=url,
        )
    cause = _ssl_cause(exc)
    if isinstance(cause, ssl.SSLCertVerificationError):
        detail = cause.verify_message or str(cause)
        if "hostname" in detail.lower() or "ip address mismatch" in detail.lower():
            params: tuple[str, ...] = ("url",)
            hint = (
                f"the server certificate is not issued for {request.url.host!r}: connect with a "
                "name the certificate holds"
            )
        else:
            hint = (
                "trust the CA that issued the server's certificate, or bootstrap it with its "
                "SHA-256 fingerprint"
            )
            params = ("trust", "bootstrap_fingerprint")
        return EstTlsError(
            f"could not verify the TLS certificate of {target}: {detail} "
            f"(trusted: {trust_description})",
            hint=hint,
            url=url,
            trust_description=trust_description,
            params=params,
        )
    if cause is not None:
        reason = getattr(cause, "reason", None) or str(cause)
        hint = "check the TLS settings of both sides (TLS 1.2+, BCP-003-01 cipher suites)"
        params = ()
        if reason and "CERTIFICATE" in str(reason).upper():
            hint = "the server refused the client certificate: check the certificate and key"
            params = ("credentials",)
        return EstTlsError(
            f"TLS handshake with {target} failed: {reason}",
            hint=hint,
            url=url,
            trust_description=trust_description,
            params=params,
        )
    if isinstance(exc, ConnectionChanged):
        return EstConnectionChanged(
            f"{target} closed the connection after its authentication challenge",
            hint="the request is sent again on a new connection",
            url=url,
        )
    _kind, what, hint = next(row for row in _CONNECTION_FAILURES if isinstance(exc, row[0]))
    return EstConnectionError(
        f"{what.format(target=target)}: {exc or type(exc).__name__}", hint=hint, url=url
    )


# What a person reads when the connection itself failed: (httpx error, what happened, what to
# try). The first row whose type matches wins; the last one catches every other httpx error.
_CONNECTION_FAILURES: tuple[tuple[type[httpx.HTTPError], str, str], ...] = (
    (
        httpx.ConnectError,
        "cannot connect to {target}",
        "check the server URL and that the server is running",
    ),
    (
        httpx.RemoteProtocolError,
        "{target} broke off the exchange",
        "the server closed the connection; try again or check its logs",
    ),
    (httpx.HTTPError, "talking to {target} failed", "check the network and the server"),
)


# --- answering a challenge on a new connection (issue 13) -----------------------------------
# Some servers (the C EST server behind a public test server among them) close the connection
# after a 401 without saying ``Connection: close``. httpx then sends the credentialed answer on
# the dead pooled connection and fails with "Server disconnected without sending a response".
# The answer is resent once on a new connection, here, where that failure surfaces.

AUTH_ANSWER = "estkit.auth_answer"
"""Request extension: this request answers a 401 challenge (set by ``ChallengeAuth``)."""

CHANNEL_BINDING = "estkit.channel_binding"
"""Request extension: read the connection's tls-exporter too (TLS 1.3 proof-of-possession)."""

LINKED = "estkit.linked"
"""Request extension: the body is bound to the TLS connection (a PoP-linked CSR, E14); it must
never be resent on another connection."""

RECONNECTED = "estkit.reconnected"
"""Response extension: the answer travelled on a new connection after the old one dropped."""


class ConnectionChanged(httpx.TransportError, EstkitError):
    """A connection-bound request (PoP-linked CSR) lost its connection to an auth challenge."""


def _dropped_unanswered(exc: httpx.TransportError) -> bool:
    """Whether ``exc`` means the server closed the connection instead of answering."""
    if isinstance(exc, httpx.RemoteProtocolError):
        return "without sending a response" in str(exc)
    return isinstance(exc, httpx.ReadError | httpx.WriteError)


def _resend_or_raise(request: httpx.Request, exc: httpx.TransportError) -> None:
    if not request.extensions.get(AUTH_ANSWER) or not _dropped_unanswered(exc):
        raise exc
    if request.extensions.get(LINKED):
        raise ConnectionChanged(
            "the server closed the connection after its authentication challenge"
        ) from exc


class AuthRetryTransport(httpx.BaseTransport):
    """``httpx.HTTPTransport`` that resends a dropped challenge answer on a new connection.

    Only answers to a challenge are resent (the server refused the unauthenticated request, so
    repeating its authenticated form is what the exchange means anyway), once, and never a
    connection-bound one (:data:`LINKED`): that raises :class:`ConnectionChanged` so the flow
    can link a new CSR to the new connection.
    """

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return self._inner.handle_request(request)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            _resend_or_raise(request, exc)
        # The pool dropped the failed connection: this goes out on a new one.
        response = self._inner.handle_request(request)
        response.extensions = {**response.extensions, RECONNECTED: True}
        return response

    def close(self) -> None:
        self._inner.close()


class AsyncAuthRetryTransport(httpx.AsyncBaseTransport):
    """The ``await`` twin of :class:`AuthRetryTransport`."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._inner.handle_async_request(request)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            _resend_or_raise(request, exc)
        response = await self._inner.handle_async_request(request)
        response.extensions = {**response.extensions, RECONNECTED: True}
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


# httpx's own default pool (what ``httpx.Client()`` uses when given no transport).
POOL_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


def auth_retry_transport(
    verify: ssl.SSLContext, limits: httpx.Limits | None = None
) -> AuthRetryTransport:
    """The transport of every client that may carry credentials."""
    inner = httpx.HTTPTransport(verify=verify, limits=limits or POOL_LIMITS)
    return AuthRetryTransport(inner)


def async_auth_retry_transport(
    verify: ssl.SSLContext, limits: httpx.Limits | None = None
) -> AsyncAuthRetryTransport:
    inner = httpx.AsyncHTTPTransport(verify=verify, limits=limits or POOL_LIMITS)
    return AsyncAuthRetryTransport(inner)
