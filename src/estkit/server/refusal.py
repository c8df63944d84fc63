"""The one way the server says no: an exception carrying the HTTP status and a human reason.

Why an exception: a refusal can be decided deep inside enrollment (a revoked certificate, a CSR
field that differs) or early (wrong Content-Type). Raising :class:`Refusal` anywhere ends the
request the same way: a ``text/plain`` body with the reason, one log line, one audit event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from estkit.errors import EstkitError

# Set on an aiohttp request that was answered with a recorded refusal: the connection guard counts
# it against the peer's address (per-address failure throttle, guard.FailureThrottle). A typed
# RequestKey where aiohttp has one (3.12+), else the plain name older versions use.
_REQUEST_KEY: Any = getattr(web, "RequestKey", None)
REFUSED_REQUEST_KEY: Any = (
    _REQUEST_KEY("estkit_refused", bool) if _REQUEST_KEY is not None else "estkit_refused"
)


class Refusal(EstkitError):
    """Stop the request with ``status`` and ``reason`` (sent to the client as text/plain)."""

    def __init__(
        self,
        status: int,
        reason: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = tuple(headers)

    def __str__(self) -> str:
        return f"{self.status}: {self.reason}"


class NeedsHttpAuthentication(EstkitError):
    """An rfc7030-mode request arrived without a trusted certificate or HTTP credentials.

    The HTTP layer answers with 401 and the Basic/Digest challenges (never in ``nmos`` mode,
    BCP-003-03 S5).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
