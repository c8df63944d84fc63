"""Media types (RFC 9110 §8.3.1) parsed into comparable values.

Why not compare strings: RFC 7030 servers send ``application/pkcs7-mime; smime-type=certs-only``,
``application/pkcs7-mime;smime-type="certs-only"`` or plain ``application/pkcs7-mime`` and all are
valid (RFC 7030 §3.2.4 names the types, RFC 9110 §8.3.1 gives their syntax; checklist E16).
Matching must look at type/subtype and parameters, with case-insensitive names and unquoted values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import MediaTypeError
from .limits import MAX_MEDIA_TYPE_LENGTH

PKCS10 = "application/pkcs10"
PKCS7_MIME = "application/pkcs7-mime"
PKCS7_CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"
CSRATTRS = "application/csrattrs"
PKCS8 = "application/pkcs8"
SERVER_GENERATED_KEY = "application/pkcs7-mime; smime-type=server-generated-key"
MULTIPART_MIXED = "multipart/mixed"
TEXT_PLAIN = "text/plain; charset=utf-8"

# RFC 9110 §5.6.2 token characters.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN_RE = re.compile(_TOKEN)
_TYPE_RE = re.compile(rf"[ \t]*({_TOKEN})/({_TOKEN})[ \t]*")
_PARAM_NAME_RE = re.compile(rf"[ \t]*({_TOKEN})[ \t]*=[ \t]*")
# quoted-string: qdtext or quoted-pair (RFC 9110 §5.6.4), tab/space/visible ASCII and obs-text.
_QUOTED_RE = re.compile(r'"((?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*)"')
_QUOTED_PAIR_RE = re.compile(r"\\(.)")


@dataclass(frozen=True)
class MediaType:
    """A parsed media type. ``type``/``subtype`` and parameter names are stored lower case."""

    type: str
    subtype: str
    params: tuple[tuple[str, str], ...] = ()

    @property
    def essence(self) -> str:
        """``type/subtype`` in lower case, the part that must always match."""
        return f"{self.type}/{self.subtype}".lower()

    def param(self, name: str) -> str | None:
        """The (unquoted) value of parameter ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.params:
            if key.lower() == wanted:
                return value
        return None

    def matches(self, expected: MediaType | str) -> bool:
        """True when the essence is equal and every parameter of ``expected`` is present here.

        Extra parameters on this side are allowed (``charset`` on a certs-only reply, say); values
        compare case-insensitively, as ``smime-type`` values are case-insensitive tokens.
        """
        if isinstance(expected, str):
            expected = parse_media_type(expected)
        if self.essence != expected.essence:
            return False
        for key, value in expected.params:
            mine = self.param(key)
            if mine is None or mine.lower() != value.lower():
                return False
        return True

    def __str__(self) -> str:
        text = self.essence
        for key, value in self.params:
            if value and _TOKEN_RE.fullmatch(value):
                text += f"; {key}={value}"
            else:
                escaped = value.replace("\\", "\\\\").replace('"', '\\"')
                text += f'; {key}="{escaped}"'
        return text


def parse_media_type(value: str) -> MediaType:
    """Parse a Content-Type header value; raises :class:`MediaTypeError` naming the problem.

    Tolerates optional whitespace and empty parameters (``a/b;``), which real servers emit.
    """
    if not isinstance(value, str):
        raise MediaTypeError(f"media type must be text, got {type(value).__name__}")
    if len(value) > MAX_MEDIA_TYPE_LENGTH:
        raise MediaTypeError(
            f"media type is {len(value)} characters long, over the limit of "
            f"{MAX_MEDIA_TYPE_LENGTH}; send a short 'type/subtype; name=value' value"
        )
    match = _TYPE_RE.match(value)
    if match is None:
        raise MediaTypeError(
            f"not a media type: {value!r}; expected 'type/subtype' such as {PKCS10!r}"
        )
    type_, subtype = match.group(1).lower(), match.group(2).lower()
    pos = match.end()
    params: list[tuple[str, str]] = []
    while pos < len(value):
        if value[pos] != ";":
            raise MediaTypeError(
                f"unexpected {value[pos]!r} at position {pos} in media type {value!r}; "
                "parameters must follow ';' as name=value"
            )
        pos += 1
        # Skip whitespace; an empty parameter (";;" or a trailing ";") is tolerated.
        while pos < len(value) and value[pos] in " \t":
            pos += 1
        if pos >= len(value) or value[pos] == ";":
            continue
        name_match = _PARAM_NAME_RE.match(value, pos)
        if name_match is None:
            raise MediaTypeError(
                f"malformed parameter at position {pos} in media type {value!r}; "
                "expected name=value"
            )
        pos = name_match.end()
        quoted = _QUOTED_RE.match(value, pos)
        if quoted is not None:
            param_value = _QUOTED_PAIR_RE.sub(r"\1", quoted.group(1))
            pos = quoted.end()
        else:
            token = _TOKEN_RE.match(value, pos)
            if token is None:
                raise MediaTypeError(
                    f"parameter {name_match.group(1)!r} has no valid value in media type "
                    f"{value!r}; use a token or a quoted string"
                )
            param_value = token.group(0)
            pos = token.end()
        while pos < len(value) and value[pos] in " \t":
            pos += 1
        params.append((name_match.group(1).lower(), param_value))
    return MediaType(type_, subtype, tuple(params))


__all__ = [
    "CSRATTRS",
    "MULTIPART_MIXED",
    "PKCS7_CERTS_ONLY",
    "PKCS7_MIME",
    "PKCS8",
    "PKCS10",
    "SERVER_GENERATED_KEY",
    "TEXT_PLAIN",
    "MediaType",
    "parse_media_type",
]
