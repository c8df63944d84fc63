"""Pieces both transports share: httpx client options, TLS facts, body limits, error translation.

Why: the sync and async clients differ only in ``await``; everything they decide (which httpx
exception means "TLS verification failed", how big a body may be, where tls-unique comes from)
lives here once.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import httpx

from estkit.protocol import MAX_RESPONSE_BODY_BYTES, tls_unique_for

from .errors import (
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


def http_client_options(timeout: float) -> dict[str, object]:
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


def tls_facts(response: httpx.Response) -> TlsFacts:
    """TLS version and tls-unique of the connection that carried ``response``."""
    stream = response.extensions.get("network_stream")
    if stream is None:
        return TlsFacts(None, None)
    ssl_object = stream.get_extra_info("ssl_object")
    if ssl_object is None:
        return TlsFacts(None, None)
    return TlsFacts(ssl_object.version(), tls_unique_for(ssl_object))


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
            hint = (
                f"the server certificate is not issued for {request.url.host!r}: connect with a "
                "name the certificate holds"
            )
        else:
            hint = (
                "pass the CA that issued the server's certificate with --trust PEM, or bootstrap "
                "it with --bootstrap-fingerprint sha256:HEX"
            )
        return EstTlsError(
            f"could not verify the TLS certificate of {target}: {detail} "
            f"(trusted: {trust_description})",
            hint=hint,
            url=url,
            trust_description=trust_description,
        )
    if cause is not None:
        reason = getattr(cause, "reason", None) or str(cause)
        hint = "check the TLS settings of both sides (TLS 1.2+, BCP-003-01 cipher suites)"
        if reason and "CERTIFICATE" in str(reason).upper():
            hint = "the server refused the client certificate: check --cert/--key"
        return EstTlsError(
            f"TLS handshake with {target} failed: {reason}",
            hint=hint,
            url=url,
            trust_description=trust_description,
        )
    if isinstance(exc, httpx.ConnectError):
        return EstConnectionError(
            f"cannot connect to {target}: {exc or type(exc).__name__}",
            hint="check the server URL and that the server is running",
            url=url,
        )
    if isinstance(exc, httpx.RemoteProtocolError):
        return EstConnectionError(
            f"{target} broke off the exchange: {exc or type(exc).__name__}",
            hint="the server closed the connection; try again or check its logs",
            url=url,
        )
    return EstConnectionError(
        f"talking to {target} failed: {exc or type(exc).__name__}",
        hint="check the network and the server",
        url=url,
    )
