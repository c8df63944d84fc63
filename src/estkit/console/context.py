"""Shared state of the console application and small per-request helpers.

Why a module of its own: the middlewares (who is asking) and the handlers (what they see) both
read the same application keys and request identity, and must not import each other.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from cryptography import x509

from estkit.console import auth
from estkit.console.admin_ca import Operator
from estkit.console.backend import ConsoleBackend
from estkit.console.html import Html
from estkit.console.views import MESSAGE_STYLE_HASH, message_page

logger = logging.getLogger("estkit.console")

# Live refresh period: quick enough that a queued device shows up while the operator watches,
# slow enough that an open tab costs the server nothing measurable.
DEFAULT_POLL_MS = 3000
MAX_FORM_BYTES = 16 * 1024
LIVE_HEADER = "X-Console-Live"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; "
    f"style-src 'self' '{MESSAGE_STYLE_HASH}'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

BACKEND_KEY = web.AppKey("backend", ConsoleBackend)
SESSIONS_KEY = web.AppKey("sessions", auth.SessionStore)
CSRF_KEY = web.AppKey("csrf", auth.CsrfGuard)
TOKEN_KEY = web.AppKey("token", str)
OPERATORS_CA_KEY = web.AppKey("operators_ca", x509.Certificate)
ALLOWED_HOSTS_KEY = web.AppKey("allowed_hosts", frozenset)
POLL_KEY = web.AppKey("poll_ms", int)
# The console's clock (tests inject one to expire sign-in tokens without waiting).
CLOCK_KEY: web.AppKey[Callable[[], dt.datetime]] = web.AppKey("clock")
# Per-request identity. aiohttp >= 3.14 wants typed keys; older releases take plain strings.
_RequestKey = getattr(web, "RequestKey", None)
OPERATOR_RKEY: Any = _RequestKey("operator", Operator) if _RequestKey else "operator"
SESSION_RKEY: Any = _RequestKey("session", object) if _RequestKey else "session"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def html_response(
    body: Html, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=str(body), status=status, content_type="text/html", charset="utf-8", headers=headers
    )


def message(title: str, text: str, status: int, extra: Html | None = None) -> web.Response:
    """A one-message page (refusals, errors); self-contained so it works before sign-in."""
    return html_response(message_page(title, text, extra), status)


def wants_live(request: web.Request) -> bool:
    """The page's script asks for the live region as JSON instead of the whole page."""
    return request.headers.get(LIVE_HEADER) == "1"


def operator_of(request: web.Request) -> Operator:
    operator: Operator = request[OPERATOR_RKEY]
    return operator


def session_of(request: web.Request) -> auth.Session | None:
    session: auth.Session | None = request.get(SESSION_RKEY)
    return session


def csrf_binding(request: web.Request) -> str:
    return auth.binding_for(operator_of(request), session_of(request))


def csrf_token(request: web.Request) -> str:
    return request.app[CSRF_KEY].token_for(csrf_binding(request))


def backend_of(request: web.Request) -> ConsoleBackend:
    return request.app[BACKEND_KEY]
