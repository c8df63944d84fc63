"""Body encoding for EST: base64 of DER as RFC 8951 §3 defines it, tolerant of what others send.

Why our own tolerant decoder: RFC 8951 says receivers SHOULD accept CR, LF, space and tab inside
base64 and MUST ignore Content-Transfer-Encoding (checklist E15), and real servers send PEM or raw
DER instead (checklist "quirks"). The stdlib decoder either ignores *all* junk (lenient mode hides
corruption) or rejects whitespace (strict mode), so we remove exactly the allowed whitespace and
then decode strictly. DER detection needs only the outer tag and length, which no library exposes
without parsing the whole structure, so it is a dozen lines here.
"""

from __future__ import annotations

import binascii
import re
from typing import Literal

from .errors import EncodingError

BASE64_LINE_LENGTH = 64  # RFC 7468 §2 line length; some C clients fail on longer lines.
_BASE64_WHITESPACE = b"\r\n \t"
_TRAILING_JUNK = b"\x00\r\n \t"
_DER_SEQUENCE_TAG = 0x30
_MAX_DER_LENGTH_OCTETS = 4  # 4 GiB: any longer length field is not a body we would accept.
_PEM_BEGIN = b"-----BEGIN "
_PEM_BLOCK_RE = re.compile(
    rb"-----BEGIN ([^\r\n-]*)-----\r?\n?(.*?)-----END \1-----",
    re.DOTALL,
)

BodyForm = Literal["base64", "pem", "der"]


def encode_base64_body(der: bytes) -> bytes:
    """Base64 wrapped at 64 columns with ``\\n`` line ends, always ending with ``\\n``.

    Why wrapped and newline-terminated: some C implementations fail on single-line base64 without
    a trailing newline and others on very long lines (checklist quirks); 64 columns suits both.
    """
    encoded = binascii.b2a_base64(der, newline=False)
    lines = [
        encoded[i : i + BASE64_LINE_LENGTH] for i in range(0, len(encoded), BASE64_LINE_LENGTH)
    ]
    return b"\n".join(lines) + b"\n"


def decode_base64_body(body: bytes) -> bytes:
    """Decode base64 that may contain CR, LF, space and tab anywhere; anything else is an error."""
    compact = bytes(body).translate(None, _BASE64_WHITESPACE)
    if not compact:
        raise EncodingError(
            "body is not valid base64: it is empty; send the base64 encoding of the DER structure"
        )
    bad = compact.translate(
        None, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
    )
    if bad:
        raise EncodingError(
            f"body is not valid base64: it contains the byte {bad[:1]!r} "
            f"(at offset {bytes(body).find(bad[:1])}); only A-Z a-z 0-9 + / = and white space "
            "are allowed"
        )
    try:
        return binascii.a2b_base64(compact, strict_mode=True)
    except binascii.Error as exc:
        raise EncodingError(
            f"body is not valid base64: {exc}; check that the body was not truncated and that "
            "'=' padding appears only at the end"
        ) from None


def der_length(data: bytes) -> int | None:
    """Total length (header + content) of the DER TLV at the start of ``data``, or None.

    Returns None when ``data`` does not start with a definite-length SEQUENCE header.
    """
    if len(data) < 2 or data[0] != _DER_SEQUENCE_TAG:
        return None
    first = data[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if count == 0 or count > _MAX_DER_LENGTH_OCTETS or len(data) < 2 + count:
        return None  # indefinite length (BER) or absurd length field
    return 2 + count + int.from_bytes(data[2 : 2 + count], "big")


def _strip_trailing_junk(data: bytes) -> bytes:
    return data.rstrip(_TRAILING_JUNK)


def _decode_pem(text: bytes) -> bytes:
    match = _PEM_BLOCK_RE.search(text)
    if match is None:
        raise EncodingError(
            "body starts like PEM ('-----BEGIN') but has no matching '-----END' line; "
            "send the complete PEM block or plain base64"
        )
    return decode_pem_block_content(match.group(2), match.group(1).decode("ascii", "replace"))


def decode_pem_block_content(content: bytes, label: str = "PEM") -> bytes:
    """Decode the base64 between a PEM block's BEGIN and END lines (RFC 7468 §2).

    Legacy RFC 1421 header lines (``Proc-Type: ...`` followed by a blank line) are skipped.
    """
    lines = content.splitlines()
    if any(b":" in line for line in lines):
        # Headers end at the first blank line after them.
        while lines and lines[0].strip():
            lines.pop(0)
    try:
        return decode_base64_body(b"".join(lines))
    except EncodingError as exc:
        raise EncodingError(f"the PEM block {label!r} has bad content: {exc}") from None


def iter_pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """All ``(label, der)`` PEM blocks in ``data``, in order (raises :class:`EncodingError`)."""
    blocks = []
    for match in _PEM_BLOCK_RE.finditer(data):
        label = match.group(1).decode("ascii", "replace")
        blocks.append((label, decode_pem_block_content(match.group(2), label)))
    return blocks


def decode_body(body: bytes) -> tuple[bytes, BodyForm]:
    """Return ``(der, form)`` for a body that is base64, PEM or raw DER.

    Content-Transfer-Encoding is never consulted (RFC 8951 §3): the form is recognised from the
    bytes. Trailing NUL bytes and white space are tolerated (some servers append a NUL). Raw DER
    is recognised by a leading SEQUENCE tag whose encoded length matches the body.
    """
    body = bytes(body)
    total = der_length(body)
    if total is not None and total <= len(body) and not _strip_trailing_junk(body[total:]):
        return body[:total], "der"
    text = _strip_trailing_junk(body).lstrip(_BASE64_WHITESPACE)
    if not text:
        raise EncodingError(
            "body is empty; expected base64 (RFC 8951), PEM or DER encoding of a DER structure"
        )
    if text.startswith(_PEM_BEGIN):
        return _decode_pem(text), "pem"
    if total is not None and total > len(body):
        raise EncodingError(
            f"body looks like raw DER but is truncated: the header announces {total} bytes and "
            f"only {len(body)} arrived; resend the complete body (base64 is preferred)"
        )
    try:
        return decode_base64_body(text), "base64"
    except EncodingError as exc:
        raise EncodingError(
            f"{exc} (the body is neither PEM nor raw DER either; EST bodies are base64 of DER)"
        ) from None


__all__ = [
    "BASE64_LINE_LENGTH",
    "BodyForm",
    "decode_base64_body",
    "decode_body",
    "decode_pem_block_content",
    "der_length",
    "encode_base64_body",
    "iter_pem_blocks",
]
