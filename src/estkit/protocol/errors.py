"""One exception hierarchy for everything that can be wrong on the wire.

Why a hierarchy rooted in ``ValueError``: callers (server, client, conformance suite) want to turn
*any* malformed input into a 400 or a clear CLI message with a single ``except EstProtocolError``,
while code that only knows ``ValueError`` still treats these as bad values rather than bugs.
Messages say what was found, what was expected and what to do, because they end up verbatim in
HTTP error bodies and CLI output.
"""

from __future__ import annotations

from estkit.errors import EstkitError


class EstProtocolError(EstkitError, ValueError):
    """Base class: the bytes or text received do not follow the EST wire format."""


class EncodingError(EstProtocolError):
    """Base64, PEM or DER that cannot be decoded, or a key that cannot be loaded."""


class MediaTypeError(EstProtocolError):
    """A Content-Type value that is not a valid ``type/subtype; params`` media type."""


class CsrError(EstProtocolError):
    """A PKCS#10 request that cannot be parsed or whose signature does not verify."""


class CsrPolicyError(CsrError):
    """A well-formed CSR that a policy refuses (weak key, forbidden hash, wildcard name...)."""


class Pkcs7Error(EstProtocolError):
    """A PKCS#7 / CMS structure that cannot be parsed or is outside our limits."""


class CsrAttrsError(EstProtocolError):
    """A CsrAttrs (``/csrattrs``) body that is not the RFC 8951 ASN.1 structure."""


class MultipartError(EstProtocolError):
    """A ``/serverkeygen`` multipart body that cannot be split into key and certificate parts."""


class PathError(EstProtocolError):
    """A request path that is not ``/.well-known/est[/<label>]/<operation>``."""


__all__ = [
    "CsrAttrsError",
    "CsrError",
    "CsrPolicyError",
    "EncodingError",
    "EstProtocolError",
    "MediaTypeError",
    "MultipartError",
    "PathError",
    "Pkcs7Error",
]
