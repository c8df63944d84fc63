"""The EST conversations as sans-I/O flows shared by the sync and the async client.

Why generators: an operation is a small conversation (maybe a redirect, maybe 202 and a wait,
maybe a proof-of-possession dance of two requests on one connection). Written as a generator that
*yields* actions (send this request, wait this long, pin TLS 1.2) and *receives* replies, the
conversation is written once; :mod:`.sync` and :mod:`.aio` only carry the actions out (httpx's
own ``Auth.auth_flow`` uses the same pattern). Nothing here touches a socket or a clock directly.

This module has the actions, the building blocks (redirects, 202/503 polling) and the GET
operations; :mod:`.submit` has the CSR-posting operations (enroll, re-enroll, server keygen).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import httpx
from cryptography import x509

from estkit.protocol import PKCS10, build_csr, encode_csr_body

from .endpoint import EstEndpoint, same_origin
from .errors import EstRedirectError, EstRetryLaterError, EstTimeoutError
from .models import CaCertsResult, CsrAttrsResult, CsrSpec
from .responses import (
    Reply,
    RequestContext,
    error_for_status,
    interpret_cacerts,
    interpret_csrattrs,
)
from .retry import RETRY_STATUSES, RetryPolicy, decide_wait, utc_now
from .trust import ClientCredentials

T = TypeVar("T")

# Same-origin redirects are followed (E10), but a loop must end: browsers stop at 20, curl at 50;
# an EST server has no reason for more than one hop, so 5 is plenty.
MAX_REDIRECTS = 5
REDIRECT_STATUSES = (301, 302, 303, 307, 308)

# --- actions yielded to the transport ---------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Send ``request`` and resume the flow with its :class:`Reply`.

    ``dedicated``: on the operation's own one-connection client, so that consecutive requests
    share one TLS connection (needed to link a CSR to that connection's tls-unique).
    """

    request: httpx.Request
    dedicated: bool = False


@dataclass(frozen=True)
class Wait:
    """Sleep before the next attempt; the transport calls ``on_wait`` first."""

    attempt: int
    seconds: float
    reason: str


@dataclass(frozen=True)
class PinTls12:
    """Reopen the dedicated connection with TLS 1.2 as the maximum version."""

    reason: str


Action = Send | Wait | PinTls12
Flow = Generator[Action, Reply | None, T]


@dataclass(frozen=True)
class FlowSettings:
    """The client configuration every flow reads."""

    endpoint: EstEndpoint
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    clock: Callable[[], datetime] | None = None
    context: RequestContext = field(default_factory=RequestContext)
    credentials: ClientCredentials | None = None
    pin_tls12_for_pop: bool = True

    def now(self) -> datetime:
        return (self.clock or utc_now)()


# --- building blocks ----------------------------------------------------------------------------


def exchange(request: httpx.Request, *, dedicated: bool = False) -> Flow[Reply]:
    """Send one request, following same-origin redirects only (RFC 7030 §3.2.1, E10)."""
    current = request
    for _hop in range(MAX_REDIRECTS + 1):
        reply = yield Send(current, dedicated)
        assert reply is not None
        if reply.status not in REDIRECT_STATUSES:
            return reply
        location = reply.headers.get("location")
        if not location:
            return reply  # a 3xx without a target is reported as an unexpected status
        target = current.url.join(location)
        if not same_origin(current.url, target):
            raise EstRedirectError(
                f"the server redirected {current.method} {current.url} to another origin "
                f"({target.scheme}://{target.host}:{target.port or 443}); not followed",
                status=reply.status,
                server_text=reply.text(),
                headers=dict(reply.headers),
                hint="RFC 7030 allows only same-origin redirects: use the target URL as the "
                "server URL if you trust it",
                params=("url",),
                url=str(current.url),
            )
        method = "GET" if reply.status == 303 else current.method
        content = None if method == "GET" else current.content
        headers = {
            name: value
            for name, value in current.headers.items()
            if name.lower() not in ("host", "content-length", "authorization")
        }
        if content is None:
            headers.pop("Content-Type", None)
            headers.pop("content-type", None)
        current = httpx.Request(method, target, headers=headers, content=content)
    raise EstRedirectError(
        f"more than {MAX_REDIRECTS} redirects starting at {request.url}",
        status=0,
        hint="the server is in a redirect loop; report it to its operator",
        url=str(request.url),
    )


def get(settings: FlowSettings, operation: str) -> httpx.Request:
    return httpx.Request("GET", settings.endpoint.url_for(operation))


def post_csr(
    settings: FlowSettings, operation: str, csr: x509.CertificateSigningRequest
) -> httpx.Request:
    # RFC 8951: base64 body; the Content-Transfer-Encoding header is ignored by conforming
    # receivers but some older servers insist on it (checklist quirks), so it is sent.
    return httpx.Request(
        "POST",
        settings.endpoint.url_for(operation),
        headers={"Content-Type": PKCS10, "Content-Transfer-Encoding": "base64"},
        content=encode_csr_body(csr),
    )


def polled(
    settings: FlowSettings, attempt_flow: Callable[[int], Flow[Reply]]
) -> Flow[tuple[Reply, int, list[str]]]:
    """Repeat ``attempt_flow`` while the server answers 202/503 (E8, C10), within the policy.

    An attempt that got no answer in time (:class:`EstTimeoutError`) is repeated too, after the
    default wait: the server may be busy, and the request may even have been queued, so it is
    sent again as it was (the same CSR, so the server can recognise it). Permanent failures
    (4xx, TLS verification, connection refused) end the flow at once. The last attempt's
    timeout is raised.

    Returns the final reply, how many attempts were made and the wait notes (clamped waits).
    """
    notes: list[str] = []
    policy = settings.retry
    for attempt in range(1, policy.max_attempts + 1):
        try:
            reply = yield from attempt_flow(attempt)
        except EstTimeoutError as exc:
            if attempt == policy.max_attempts:
                if attempt > 1:
                    exc.hint = (
                        f"{exc.hint + '; ' if exc.hint else ''}no answer in {attempt} attempts"
                    )
                raise
            seconds = min(policy.default_retry_after, policy.max_retry_after)
            yield Wait(
                attempt,
                seconds,
                f"no answer in time ({exc.message}); waiting {seconds:g} s before trying again",
            )
            continue
        if reply.status not in RETRY_STATUSES:
            return reply, attempt, notes
        decision = decide_wait(
            reply.status, reply.headers.get("retry-after"), settings.now(), policy
        )
        if attempt == policy.max_attempts:
            what = "still pending approval" if reply.status == 202 else "still unavailable (503)"
            raise EstRetryLaterError(
                f"{reply.method} {reply.url.path} is {what} after {attempt} attempt(s)",
                status=reply.status,
                retry_after=decision.seconds,
                attempts=attempt,
                server_text=reply.text(),
                headers=dict(reply.headers),
                hint=f"try again in {decision.seconds:g} s or later (the request stays queued "
                "on the server), or raise the attempt limit",
                url=str(reply.url),
            )
        if decision.clamped:
            notes.append(decision.reason)
        yield Wait(attempt, decision.seconds, decision.reason)
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


def require_ok(reply: Reply, operation: str, settings: FlowSettings, ok: tuple[int, ...]) -> None:
    if reply.status not in ok:
        raise error_for_status(reply, operation, settings.context)


# --- the operations --------------------------------------------------------------------------


def cacerts_flow(settings: FlowSettings) -> Flow[CaCertsResult]:
    """``GET /cacerts`` (E1)."""

    def attempt(_n: int) -> Flow[Reply]:
        return (yield from exchange(get(settings, "cacerts")))

    reply, _attempts, notes = yield from polled(settings, attempt)
    require_ok(reply, "cacerts", settings, (200,))
    result = interpret_cacerts(reply)
    result.warnings.extend(notes)
    return result


# The /csrattrs statuses that are an answer (E4): 204 and 404 mean the server has no wishes.
CSRATTRS_ANSWERS = (200, 204, 404)


def csrattrs_flow(settings: FlowSettings) -> Flow[CsrAttrsResult]:
    """``GET /csrattrs`` (E4): 204 and 404 mean the server has no wishes."""

    def attempt(_n: int) -> Flow[Reply]:
        return (yield from exchange(get(settings, "csrattrs")))

    reply, _attempts, notes = yield from polled(settings, attempt)
    require_ok(reply, "csrattrs", settings, CSRATTRS_ANSWERS)
    result = interpret_csrattrs(reply)
    result.warnings.extend(notes)
    return result


def build_csr_for(
    spec: CsrSpec, challenge_password: str | None = None
) -> x509.CertificateSigningRequest:
    """The CSR described by ``spec``, optionally carrying a PoP challengePassword."""
    return build_csr(
        spec.key,
        common_name=spec.common_name,
        dns_names=spec.dns_names,
        serial_number=spec.serial_number,
        challenge_password=challenge_password,
        extra_attributes=spec.extra_attributes,
        extensions=spec.extensions,
        hash_algorithm=spec.hash_algorithm,
    )
