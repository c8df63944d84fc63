"""Who may use the console, and proof that a state change came from the console's own page.

Two ways in, both ending in an :class:`~estkit.console.admin_ca.Operator`:

* an operator client certificate (issued by the console's operators CA) presented in the TLS
  handshake: checked on every request, no cookie needed;
* a sign-in token (``estkit server console-login DIR --operator NAME``, or the one a console
  makes at start for programs that embed it): ``/login?token=...&operator=NAME`` works once,
  within :data:`LOGIN_TOKEN_LIFETIME_SECONDS`, only for the operator named when it was made, and
  creates a server-side session referenced by an HttpOnly, Secure, SameSite=Strict cookie. The
  store keeps only the token's SHA-256; logs and the audit trail name a token by
  :func:`token_label` (a 12-digit prefix of that hash), never by its value.

Every POST carries a CSRF token bound to the caller (session id or certificate fingerprint) with an
HMAC under a per-process secret, and its ``Origin`` must be the console itself. Browsers send
client certificates and Strict cookies on their own, so neither alone proves intent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from estkit.ca.store import CertificateStore
from estkit.console.admin_ca import Operator, validate_operator_name

SESSION_COOKIE = "estkit_console_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
TOKEN_BYTES = 32
SESSION_ID_BYTES = 32
# An operator who walks away for a working day has to log in again.
SESSION_IDLE_SECONDS = 8 * 3600
SESSION_MAX_SECONDS = 24 * 3600
# Sessions are kept in memory; cap them so a token leak cannot exhaust memory.
MAX_SESSIONS = 256
DEFAULT_TOKEN_OPERATOR = "token-operator"
# A sign-in token is for opening the console now, not a credential to keep: 10 minutes is enough
# to copy a URL from a terminal into a browser, short enough that a token seen in a scroll-back or
# a screenshot is dead by the time anyone else reads it.
LOGIN_TOKEN_LIFETIME_SECONDS = 600
# Hex digits of the token's SHA-256 shown in logs: enough to match a log line to a token you hold,
# far too few (48 bits of a hash) to help anyone guess the 256-bit token.
TOKEN_LABEL_HEX_DIGITS = 12


@dataclass
class Session:
    id: str
    operator: Operator
    created: float
    last_seen: float


@dataclass
class SessionStore:
    """In-memory sessions: they die with the console process, as the token does."""

    idle_seconds: float = SESSION_IDLE_SECONDS
    max_seconds: float = SESSION_MAX_SECONDS
    _sessions: dict[str, Session] = field(default_factory=dict)

    def create(self, operator: Operator, *, now: float | None = None) -> Session:
        now = time.monotonic() if now is None else now
        self._expire(now)
        if len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
            del self._sessions[oldest.id]
        session = Session(secrets.token_urlsafe(SESSION_ID_BYTES), operator, now, now)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None, *, now: float | None = None) -> Session | None:
        if not session_id:
            return None
        now = time.monotonic() if now is None else now
        self._expire(now)
        session = self._sessions.get(session_id)
        if session is not None:
            session.last_seen = now
        return session

    def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def _expire(self, now: float) -> None:
        stale = [
            sid
            for sid, s in self._sessions.items()
            if now - s.last_seen > self.idle_seconds or now - s.created > self.max_seconds
        ]
        for sid in stale:
            del self._sessions[sid]


def new_login_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str) -> str:
    """What the store keeps of a sign-in token (a lookup by hash needs no timing-safe compare:
    the attacker does not know the hash of the token they are guessing)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_label(token: str) -> str:
    """How logs name a token: a prefix of its hash, never the token."""
    return "sha256:" + token_digest(token)[:TOKEN_LABEL_HEX_DIGITS]


def issue_login_token(
    store: CertificateStore,
    operator: str = DEFAULT_TOKEN_OPERATOR,
    *,
    token: str | None = None,
    now: dt.datetime | None = None,
) -> str:
    """Make a single-use sign-in token for ``operator`` (valid
    :data:`LOGIN_TOKEN_LIFETIME_SECONDS`) and return it; only its hash is stored."""
    validate_operator_name(operator)
    token = token or new_login_token()
    now = now or dt.datetime.now(dt.UTC)
    store.add_console_token(
        token_digest(token),
        operator,
        expires_at=now + dt.timedelta(seconds=LOGIN_TOKEN_LIFETIME_SECONDS),
        now=now,
    )
    return token


def login_url(base_url: str, token: str, operator: str) -> str:
    return f"{base_url}/login?token={quote(token)}&operator={quote(operator)}"


@dataclass(frozen=True)
class CsrfGuard:
    """CSRF tokens derived from the caller's identity: nothing to store, nothing to expire apart
    from the identity itself (a new session or a new certificate gets a new token)."""

    secret: bytes

    @classmethod
    def create(cls) -> CsrfGuard:
        return cls(secrets.token_bytes(32))

    def token_for(self, binding: str) -> str:
        return hmac.new(self.secret, f"csrf|{binding}".encode(), hashlib.sha256).hexdigest()

    def check(self, binding: str, presented: str | None) -> bool:
        if not presented:
            return False
        return hmac.compare_digest(self.token_for(binding), presented)


def origin_problem(origin: str | None, referer: str | None, expected_origin: str) -> str | None:
    """Return why the request's Origin (or, lacking it, Referer) is not the console, or None.

    A request with neither header is refused: every browser sends Origin on a POST, and scripts
    should use the command line instead of the console.
    """
    if origin is not None:
        if origin == "null" or origin.rstrip("/") != expected_origin:
            return f"Origin {origin!r} is not this console ({expected_origin})"
        return None
    if referer:
        parts = urlsplit(referer)
        if f"{parts.scheme}://{parts.netloc}" != expected_origin:
            return f"Referer {referer!r} is not this console ({expected_origin})"
        return None
    return "the request carries neither an Origin nor a Referer header"


def binding_for(operator: Operator, session: Session | None) -> str:
    """What a CSRF token is tied to: the session for token logins, the certificate otherwise."""
    if session is not None:
        return f"session:{session.id}"
    return f"cert:{operator.fingerprint}"
