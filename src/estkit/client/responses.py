"""Turning what the server sent into results or errors: pure functions, no I/O.

Why separate from the transport: the sync and the async client must interpret every answer in
exactly the same way (the httpx model: one model layer, two thin transports), and the decoding
rules (RFC 8951, checklist E15/E16 and the interop quirks) are tested here without a network.
Tolerance is deliberate and always reported: every quirk we accept becomes a warning in the
result, so a person can tell the server's maintainer what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import httpx
from cryptography import x509

from estkit.protocol import (
    CsrAttrs,
    EstProtocolError,
    MediaType,
    MediaTypeError,
    classify_ca_certificates,
    decode_body,
    decode_certs_only_body,
    decode_csrattrs,
    parse_media_type,
)

from .errors import (
    EstAuthError,
    EstError,
    EstHttpError,
    EstNotFoundError,
    EstProtocolResponseError,
    clip_server_text,
)
from .models import CaCertsResult, CsrAttrsResult

# Media types (by essence) that we accept for certificates. RFC 7030 says
# application/pkcs7-mime; the x- and -certificates forms are what older servers send for the
# same bytes, so refusing them would only break interop (E16).
CERTS_ESSENCES = (
    "application/pkcs7-mime",
    "application/x-pkcs7-mime",
    "application/pkcs7-certificates",
    "application/x-pkcs7-certificates",
)
# No media type, or a generic one: try to decode the body anyway and warn.
GENERIC_ESSENCES = ("application/octet-stream", "application/x-pem-file", "text/plain")


# How much of a non-EST body we quote in an error (an HTML error page from a proxy, say).
MAX_QUOTED_BODY_CHARS = 120


@dataclass(frozen=True)
class Reply:
    """One HTTP answer as the flows see it: already read, with the TLS facts of its connection."""

    method: str
    url: httpx.URL
    status: int
    headers: httpx.Headers
    body: bytes
    tls_version: str | None = None
    tls_unique: bytes | None = None
    # RFC 9266 tls-exporter of a TLS 1.3 connection, read only for requests that link a CSR
    # (the :data:`~._transport.CHANNEL_BINDING` request extension).
    tls_exporter: bytes | None = None

    @property
    def content_type(self) -> str | None:
        content_type: str | None = self.headers.get("content-type")
        return content_type

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass(frozen=True)
class RequestContext:
    """What the interpreter needs to know about the client to give useful hints."""

    label: str | None = None
    has_http_credentials: bool = False
    has_client_certificate: bool = False


class _HttpErrorContext(TypedDict):
    """What every :class:`EstHttpError` made from a reply carries (its keyword arguments)."""

    status: int
    server_text: str
    headers: dict[str, str]
    url: str


def error_for_status(reply: Reply, operation: str, context: RequestContext) -> EstError:
    """The error for a status the operation cannot use, with a hint a person can act on."""
    server_text = clip_server_text(reply.text()) if reply.body else ""
    said = f": {server_text}" if server_text else ""
    where = f"{reply.method} {reply.url.path}"
    status = reply.status
    common: _HttpErrorContext = {
        "status": status,
        "server_text": server_text,
        "headers": dict(reply.headers),
        "url": str(reply.url),
    }
    if status == 401:
        if context.has_http_credentials:
            hint = "check the user name and password"
            params: tuple[str, ...] = ("username", "password")
            message = f"{where} was refused: the server did not accept the credentials{said}"
        else:
            hint = (
                "this server wants HTTP authentication: give a user name and password, or a "
                "client certificate and key"
            )
            params = ("username", "password", "credentials")
            message = f"{where} needs authentication (401){said}"
        return EstAuthError(message, hint=hint, params=params, **common)
    if status == 403:
        if context.has_client_certificate:
            hint = "the server does not accept this client certificate for this operation/label"
        else:
            hint = "present a client certificate the server trusts"
        return EstAuthError(
            f"{where} was forbidden (403){said}", hint=hint, params=("credentials",), **common
        )
    if status == 404:
        if context.label:
            hint = f"check the label {context.label!r}: the server may not know it"
        else:
            hint = f"the server does not offer /{operation}; check the URL and label"
        return EstNotFoundError(f"{where} not found (404){said}", hint=hint, **common)
    if 400 <= status < 500:
        return EstHttpError(
            f"the server rejected {where} ({status}){said}",
            hint="fix the request as the server's message says",
            **common,
        )
    if status == 501:
        return EstHttpError(
            f"the server does not implement {where} (501){said}",
            hint="this server cannot do that; use another operation or ask its operator",
            **common,
        )
    if status >= 500:
        return EstHttpError(
            f"the server failed on {where} ({status}){said}",
            hint="try again later, or ask the server's operator to look at its logs",
            **common,
        )
    return EstHttpError(
        f"unexpected answer {status} to {where}{said}",
        hint="the server does not follow RFC 7030 here; report it to its maintainer",
        **common,
    )


def media_type(reply: Reply) -> MediaType | None:
    value = reply.content_type
    if value is None:
        return None
    try:
        return parse_media_type(value)
    except MediaTypeError as exc:
        raise EstProtocolResponseError(
            f"the server sent an unreadable Content-Type {value!r} for {reply.url.path}: {exc}",
            content_type=value,
            hint="report this to the server's maintainer",
            url=str(reply.url),
        ) from None


def quote_body(reply: Reply) -> str:
    text = reply.text().strip()
    if not text:
        return "an empty body"
    text = " ".join(text.split())
    if len(text) > MAX_QUOTED_BODY_CHARS:
        text = text[:MAX_QUOTED_BODY_CHARS] + "…"
    return repr(text)


def check_media_type(
    reply: Reply, accepted: tuple[str, ...], what: str, warnings: list[str]
) -> None:
    """Refuse a body that is plainly something else (an HTML page); warn on a generic type."""
    media = media_type(reply)
    if media is None:
        warnings.append(f"the server sent {what} without a Content-Type; decoded it anyway")
        return
    if media.essence in accepted:
        if media.essence != accepted[0]:
            warnings.append(f"the server labelled {what} {media.essence!r}, not {accepted[0]!r}")
        return
    if media.essence in GENERIC_ESSENCES:
        warnings.append(f"the server labelled {what} {media.essence!r}; decoded it anyway")
        return
    raise unexpected_media_error(
        reply,
        f"{what} ({accepted[0]})",
        hint="check that the URL points at an EST server and not at a proxy or web page",
    )


def unexpected_media_error(reply: Reply, expected: str, *, hint: str) -> EstProtocolResponseError:
    """The answer is not the ``expected`` media type: say what came instead, quoting its body."""
    media = media_type(reply)
    return EstProtocolResponseError(
        f"expected {expected} from {reply.url.path} but got "
        f"{media.essence if media else 'no Content-Type'} with {quote_body(reply)}",
        content_type=reply.content_type,
        hint=hint,
        url=str(reply.url),
    )


def decoding_error(reply: Reply, what: str, exc: Exception) -> EstProtocolResponseError:
    return EstProtocolResponseError(
        f"could not decode {what} from {reply.url.path}: {exc}",
        content_type=reply.content_type,
        hint="the server's answer is malformed; report it to its maintainer",
        url=str(reply.url),
    )


def _body_form(body: bytes) -> str:
    try:
        return decode_body(body)[1]
    except (EstProtocolError, ValueError):
        return "unknown"


def _note_form(form: str, what: str, warnings: list[str], body: bytes = b"") -> None:
    if form not in ("base64", "unknown"):
        warnings.append(f"the server sent {what} as {form.upper()} instead of base64 (RFC 8951)")
    trailing_nuls = len(body) - len(body.rstrip(b"\0"))
    if trailing_nuls:
        warnings.append(f"ignored {trailing_nuls} trailing NUL byte(s) after {what}")


def decode_certificates(reply: Reply, what: str, warnings: list[str]) -> list[x509.Certificate]:
    """Certificates from a certs-only body in base64, PEM or raw DER."""
    check_media_type(reply, CERTS_ESSENCES, what, warnings)
    try:
        certificates = decode_certs_only_body(reply.body)
    except (EstProtocolError, ValueError) as exc:
        raise decoding_error(reply, what, exc) from None
    if not certificates:
        raise EstProtocolResponseError(
            f"{what} from {reply.url.path} holds no certificate",
            content_type=reply.content_type,
            hint="the server's answer is empty; report it to its maintainer",
            url=str(reply.url),
        )
    _note_form(_body_form(reply.body), what, warnings, reply.body)
    return certificates


def interpret_cacerts(reply: Reply) -> CaCertsResult:
    """``/cacerts`` 200 → every certificate, classified for root rollover (E1, C5)."""
    warnings: list[str] = []
    certificates = decode_certificates(reply, "the CA certificates", warnings)
    ca_set = classify_ca_certificates(certificates)
    if ca_set.current_root is None:
        warnings.append(
            "the server's /cacerts holds no self-signed root CA, only "
            f"{len(certificates)} issuing certificate(s); trust anchors will be those"
        )
    return CaCertsResult(certificates, ca_set, warnings, _body_form(reply.body))


# How much of a 404 body /csrattrs quotes in its warning.
MAX_QUOTED_TEXT = 200


def interpret_csrattrs(reply: Reply) -> CsrAttrsResult:
    """``/csrattrs``: 200 with attributes, or 204/404 meaning "no wishes" (E4)."""
    if reply.status in (204, 404):
        warnings = []
        if reply.status == 404:
            # RFC 7030 §4.5.2 lets 404 mean "no attributes", but it is also what an unknown
            # label gets: show the server's words so a person can tell the two apart.
            said = reply.body[:MAX_QUOTED_TEXT].decode("utf-8", "replace").strip()
            said = said.splitlines()[0] if said else ""
            warnings.append(
                "the server has no CSR attributes (404" + (f": {said})" if said else ")")
            )
        return CsrAttrsResult(CsrAttrs(), reply.status, warnings)
    warnings = []
    if reply.body.strip(b"\0 \t\r\n") == b"":
        warnings.append("the server answered /csrattrs 200 with an empty body")
        return CsrAttrsResult(CsrAttrs(), reply.status, warnings)
    check_media_type(reply, ("application/csrattrs",), "the CSR attributes", warnings)
    try:
        der, form = decode_body(reply.body)
        attrs, decode_warnings = decode_csrattrs(der)
    except (EstProtocolError, ValueError) as exc:
        raise decoding_error(reply, "the CSR attributes", exc) from None
    _note_form(form, "the CSR attributes", warnings, reply.body)
    warnings.extend(decode_warnings)
    return CsrAttrsResult(attrs, reply.status, warnings)
