"""The client's one error hierarchy (modelled on certbot's ``acme.errors``).

Why one hierarchy: a caller (the NMOS node, the CLI, a vendor's own process) needs to tell "try
again later" from "fix your configuration" from "the server is broken" without parsing messages.
Every error carries a ``message`` (what happened), a ``hint`` (what a person should try next, in
the API's words) and ``params`` (the names of the parameters the hint is about, which the CLI maps
to its flags);
``str(error)`` joins both so a log line alone is actionable. The CLI prints them on two lines.

    EstError
    ├── EstConnectionError          could not reach the server / timed out
    │   └── EstTimeoutError
    ├── EstTlsError                 handshake or certificate verification failed
    ├── EstHttpError                the server answered with an error status
    │   ├── EstAuthError            401 / 403
    │   ├── EstNotFoundError        404 (unknown label, operation not offered)
    │   ├── EstRetryLaterError      202 / 503 still pending after the allowed attempts
    │   └── EstRedirectError        redirect refused (other origin, too many hops)
    ├── EstProtocolResponseError    the body or media type could not be understood
    │   └── EstIssuedCertificateError   the issued certificate is not fit to install
    ├── EstPopError                 proof-of-possession linking impossible
    └── EstBootstrapError           bootstrap /cacerts not confirmed (wrong fingerprint ...)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Required, TypedDict, Unpack

from estkit.errors import EstkitError

# How much of a server's error text we keep: enough for any sensible message, bounded so a
# misbehaving server cannot flood a log line or a terminal.
MAX_SERVER_TEXT_CHARS = 500


def printable(text: str, *, keep: str = "") -> str:
    """``text`` made safe for a terminal or a log line: every non-printable character (ESC of
    ``\x1b]0;title\x07`` or ``\x1b[2J``, BEL, CR, NUL, bidi overrides ...) becomes a visible
    escape such as ``\x1b``. Characters in ``keep`` (e.g. ``"\n"``) pass unchanged.

    Why one helper: server-provided text reaches people through error messages, CLI output and
    node logs; a hostile server must not be able to retitle or clear a terminal, hide text, or
    forge log lines through any of them.
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() or char in keep else _escaped(char) for char in text)


class ErrorContext(TypedDict, total=False):
    """The keywords every :class:`EstError` takes; subclasses add their own and pass these on."""

    hint: str | None
    url: str | None
    params: Iterable[str]


class HttpErrorContext(ErrorContext, total=False):
    """The keywords every :class:`EstHttpError` takes (``status`` required)."""

    status: Required[int]
    server_text: str
    headers: Mapping[str, str] | None


def _escaped(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


class EstError(EstkitError):
    """Base of every error raised by :mod:`estkit.client`.

    Message and hint may quote the server; both are passed through :func:`printable`.
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        url: str | None = None,
        params: Iterable[str] = (),
    ) -> None:
        message = printable(message, keep="\n")
        super().__init__(message, params=params)
        self.message = message
        self.hint = printable(hint, keep="\n") if hint is not None else None
        self.url = url

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class EstConnectionError(EstError):
    """The server could not be reached (refused, DNS failure, reset, timeout)."""


class EstTimeoutError(EstConnectionError):
    """The server did not answer within the configured timeout."""


class EstConnectionChanged(EstConnectionError):
    """The server closed the connection after an auth challenge while the request was bound to
    that connection (a proof-of-possession CSR); the flow relinks on a new one (issue 13)."""


class EstTlsError(EstError):
    """The TLS handshake failed, most often because the server certificate did not verify.

    ``trust_description`` says which trust anchors were used, so the person can see at once
    whether the wrong file was passed.
    """

    def __init__(
        self, message: str, *, trust_description: str | None = None, **context: Unpack[ErrorContext]
    ) -> None:
        super().__init__(message, **context)
        self.trust_description = trust_description


def clip_server_text(text: str) -> str:
    """Shorten a server's error body to something printable on one or two lines."""
    cleaned = printable(" ".join(text.split()))
    if len(cleaned) > MAX_SERVER_TEXT_CHARS:
        return cleaned[:MAX_SERVER_TEXT_CHARS] + "…"
    return cleaned


class EstHttpError(EstError):
    """The server answered with a status the operation cannot use."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        server_text: str = "",
        headers: Mapping[str, str] | None = None,
        **context: Unpack[ErrorContext],
    ) -> None:
        super().__init__(message, **context)
        self.status = status
        self.server_text = clip_server_text(server_text)
        self.headers: dict[str, str] = dict(headers or {})


class EstAuthError(EstHttpError):
    """401 or 403: the server wants (other) credentials or refuses this client."""


class EstNotFoundError(EstHttpError):
    """404: unknown label, or the server does not offer the operation."""


class EstRetryLaterError(EstHttpError):
    """The request is still pending (202) or the server still busy (503) after every attempt.

    ``retry_after`` is the wait, in seconds, the server asked for last (None when it gave none);
    ``attempts`` how many requests were made.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None,
        attempts: int,
        **context: Unpack[HttpErrorContext],
    ) -> None:
        super().__init__(message, **context)
        self.retry_after = retry_after
        self.attempts = attempts


class EstRedirectError(EstHttpError):
    """A redirect was refused: another origin (RFC 7030 §3.2.1) or too many hops."""


class EstProtocolResponseError(EstError):
    """The server's answer could not be understood (media type, encoding, content)."""

    def __init__(
        self, message: str, *, content_type: str | None = None, **context: Unpack[ErrorContext]
    ) -> None:
        super().__init__(message, **context)
        self.content_type = content_type


class EstPopError(EstError):
    """Proof-of-possession linking (RFC 7030 §3.5) could not be done on this connection."""


class EstBootstrapError(EstError):
    """Bootstrap ``/cacerts`` could not be confirmed; nothing from it may be trusted."""


class EstIssuedCertificateError(EstProtocolResponseError):
    """The server issued a certificate that must not be installed: it does not chain to the
    trust anchors, is not valid now, lacks the names asked for, is a CA certificate, is not fit
    for TLS, or certifies another key. Nothing has been written when this is raised."""
