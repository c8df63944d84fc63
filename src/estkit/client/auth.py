"""HTTP authentication that speaks only when spoken to (RFC 7030 §3.2.3, checklist E9).

Why our own ``httpx.Auth``: ``httpx.BasicAuth`` sends the password with the very first request,
which is how the prototype ended up sending ``Authorization: Basic None:None`` to every server.
Here nothing is sent until the server challenges with 401, and then only over HTTPS, because the
client object that carries this flow only exists on connections whose server certificate was
verified (the bootstrap client never gets credentials). Digest reuses ``httpx.DigestAuth`` by
driving its public ``auth_flow`` generator with the challenge we already received.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from typing import Literal

import httpx

from ._transport import AUTH_ANSWER, LINKED, RECONNECTED, ConnectionChanged

AuthScheme = Literal["any", "basic", "digest"]

# Schemes we can answer, best first: Digest never puts the password on the wire.
_PREFERENCE = ("digest", "basic")

# Answers to challenges per request: the first, and one more for a Digest challenge that is
# stale=true or came on a new connection (its nonce bound to the old one). More than that means
# the server keeps refusing, and looping would only hammer it.
MAX_CHALLENGE_ANSWERS = 2


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
    401 after answering is returned as is (the credentials were refused, and we do not loop),
    except a Digest challenge that is ``stale=true`` or came on a new connection: that one is
    answered once more with its fresh nonce (RFC 7616 §3.3).

    ``preemptive``: send Basic with the first request, for servers that never challenge. After
    a server challenged once, later requests of this client carry the answer straight away, so a
    request whose body is bound to its connection (proof-of-possession) is not challenged again.

    The answer may travel on a new connection when the server closed the challenged one (issue
    13): with ``Connection: close`` httpx opens one itself; without it the failed answer is
    resent by :class:`estkit.client._transport.AuthRetryTransport`. A request marked
    :data:`LINKED` is never answered on another connection: :class:`ConnectionChanged` tells the
    flow to rebuild the CSR for the new connection instead.
    """

    # The 401 body must be read so the connection stays usable: proof-of-possession linking
    # depends on the next request travelling on the very same TLS connection.
    requires_response_body = True

    def __init__(
        self,
        username: str,
        password: str,
        scheme: AuthScheme = "any",
        *,
        preemptive: bool = False,
    ) -> None:
        if scheme not in ("any", "basic", "digest"):
            raise ValueError(f"unknown HTTP auth scheme {scheme!r}: use any, basic or digest")
        if preemptive and scheme == "digest":
            raise ValueError("only Basic credentials can be sent before a challenge")
        self.username = username
        self._password = password
        self.scheme = scheme
        self.preemptive = preemptive
        self._digest = httpx.DigestAuth(username, password)
        self._digest_established = False
        self._basic_established = False
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
        if request.url.scheme != "https":
            yield request  # never credentials in clear text
            return
        sent: str | None = None
        if self._digest_established:
            # The server already challenged this client with Digest: httpx keeps its nonce and
            # counts requests (RFC 7616 nc), so later requests are answered straight away.
            request = next(self._digest.auth_flow(request))
            sent = "digest"
        elif self._basic_established or (self.preemptive and self.scheme != "digest"):
            request = self._with_basic(request)
            sent = "basic"
        response = yield request
        moved = False  # whether the last answer went out on a new connection
        for _answer in range(MAX_CHALLENGE_ANSWERS):
            if response.status_code != 401:
                return
            moved = moved or bool(response.extensions.get(RECONNECTED))
            chosen = self._choose(offered_schemes(response))
            if chosen is None or not self._worth_answering(chosen, sent, response, moved):
                return  # nothing we can answer, or our answer was refused
            answer = self._answer(chosen, request, response)
            moved = connection_closes(response)
            if request.extensions.get(LINKED) and moved:
                # The answer would go out on a new connection, where this body's tls-unique
                # is wrong; the flow relinks and the next request carries the credentials.
                raise ConnectionChanged(
                    "the server closed the connection after its authentication challenge"
                )
            answer.extensions = {**answer.extensions, AUTH_ANSWER: True}
            request, sent = answer, chosen
            response = yield answer

    def _worth_answering(
        self, chosen: str, sent: str | None, response: httpx.Response, moved: bool
    ) -> bool:
        if sent is None:
            return True
        if chosen == "digest" and sent == "digest":
            # A nonce from another connection may be refused without stale=true (servers that
            # bind nonces to connections): a fresh challenge on the new one is worth one answer.
            return moved or _digest_is_stale(response)
        return chosen != sent

    def _answer(
        self, chosen: str, request: httpx.Request, response: httpx.Response
    ) -> httpx.Request:
        if chosen == "digest":
            flow = self._digest.auth_flow(request)
            next(flow)  # the request as already sent
            answer = flow.send(response)  # parses the challenge, resets nc, adds Authorization
            flow.close()
            self._digest_established = True
            self.answered = "digest"
            return answer
        self._basic_established = True
        self.answered = "basic"
        return self._with_basic(request)

    def _with_basic(self, request: httpx.Request) -> httpx.Request:
        # Reuse httpx's encoder (RFC 7617, UTF-8) via BasicAuth's flow on a copy of the headers.
        basic_flow = httpx.BasicAuth(self.username, self._password).auth_flow(request)
        return next(basic_flow)


def connection_closes(response: httpx.Response) -> bool:
    """Whether ``response`` says the server ends the connection after it."""
    tokens = response.headers.get("connection", "").lower().split(",")
    return "close" in (token.strip() for token in tokens)


def _digest_is_stale(response: httpx.Response) -> bool:
    for value in response.headers.get_list("www-authenticate"):
        if value.strip().lower().startswith("digest") and re.search(
            r"\bstale\s*=\s*\"?true\b", value, re.IGNORECASE
        ):
            return True
    return False
