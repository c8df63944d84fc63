"""HTTP authentication that speaks only when spoken to (RFC 7030 §3.2.3, checklist E9).

Why our own ``httpx.Auth``: ``httpx.BasicAuth`` sends the password with the very first request,
which is how the prototype ended up sending ``Authorization: Basic None:None`` to every server.
Here nothing is sent until the server challenges with 401, and then only over HTTPS, because the
client object that carries this flow only exists on connections whose server certificate was
verified (the bootstrap client never gets credentials). Digest reuses ``httpx.DigestAuth`` by
driving its public ``auth_flow`` generator with the challenge we already received.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from typing import Literal

import httpx

AuthScheme = Literal["any", "basic", "digest"]

# Schemes we can answer, best first: Digest never puts the password on the wire.
_PREFERENCE = ("digest", "basic")


def offered_schemes(response: httpx.Response) -> list[str]:
    """Lower-case scheme names of every ``WWW-Authenticate`` challenge in ``response``."""
    schemes: list[str] = []
    for value in response.headers.get_list("www-authenticate"):
        scheme = value.strip().split(" ", 1)[0].rstrip(",").lower()
        if scheme:
            schemes.append(scheme)
    return schemes


class ChallengeAuth(httpx.Auth):
    """Basic or Digest credentials, answered only after a 401 challenge over HTTPS.

    ``scheme`` restricts which challenge may be answered (``"any"`` prefers Digest). A second
    401 after answering is returned as is: the credentials were refused, and we do not loop.
    """

    # The 401 body must be read so the connection stays usable: proof-of-possession linking
    # depends on the next request travelling on the very same TLS connection.
    requires_response_body = True

    def __init__(self, username: str, password: str, scheme: AuthScheme = "any") -> None:
        if scheme not in ("any", "basic", "digest"):
            raise ValueError(f"unknown HTTP auth scheme {scheme!r}: use any, basic or digest")
        self.username = username
        self._password = password
        self.scheme = scheme
        self._digest = httpx.DigestAuth(username, password)
        self._digest_established = False
        self.answered: str | None = None

    def __repr__(self) -> str:  # never show the password
        return f"ChallengeAuth(username={self.username!r}, scheme={self.scheme!r})"

    def _choose(self, schemes: list[str]) -> str | None:
        allowed = _PREFERENCE if self.scheme == "any" else (self.scheme,)
        for candidate in allowed:
            if candidate in schemes:
                return candidate
        return None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._digest_established:
            # The server already challenged this client with Digest: httpx keeps its nonce and
            # counts requests (RFC 7616 nc), so later requests are answered straight away.
            yield from self._digest.auth_flow(request)
            return
        response = yield request
        if response.status_code != 401 or request.url.scheme != "https":
            return
        chosen = self._choose(offered_schemes(response))
        if chosen == "digest":
            flow = self._digest.auth_flow(request)
            next(flow)  # the unauthenticated request, which we already sent
            try:
                answered = flow.send(response)
            except StopIteration:
                return
            self._digest_established = True
            self.answered = "digest"
            final = yield answered
            with contextlib.suppress(StopIteration):
                flow.send(final)
            return
        if chosen == "basic":
            self.answered = "basic"
            yield self._with_basic(request)

    def _with_basic(self, request: httpx.Request) -> httpx.Request:
        # Reuse httpx's encoder (RFC 7617, UTF-8) via BasicAuth's flow on a copy of the headers.
        basic_flow = httpx.BasicAuth(self.username, self._password).auth_flow(request)
        return next(basic_flow)
