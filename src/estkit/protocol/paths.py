"""EST request paths: ``/.well-known/est[/<label>]/<operation>`` (RFC 7030 §3.2.2).

Why strict: the label selects a CA profile, so a path that could be read two ways (dot segments,
percent-escapes, empty segments) must be refused rather than guessed at.
"""

from __future__ import annotations

import re

from .errors import PathError
from .limits import MAX_LABEL_LENGTH

WELL_KNOWN_EST = "/.well-known/est"
OPERATIONS = ("cacerts", "simpleenroll", "simplereenroll", "csrattrs", "serverkeygen", "fullcmc")
CRL_PATH = "/crl"

# RFC 3986 §2.3 unreserved characters: safe in a path segment without escaping.
_LABEL_RE = re.compile(r"[A-Za-z0-9._~-]+")
_DOT_SEGMENTS = (".", "..")
# Longest path we bother to echo back in an error message.
_MAX_PATH_ECHO = 200


def validate_label(label: str) -> str:
    """Return ``label`` if it is a valid EST label, else raise :class:`PathError` saying why."""
    if not isinstance(label, str) or not label:
        raise PathError("an EST label must be a non-empty path segment")
    if len(label) > MAX_LABEL_LENGTH:
        raise PathError(
            f"label is {len(label)} characters long; at most {MAX_LABEL_LENGTH} are allowed"
        )
    if not _LABEL_RE.fullmatch(label) or label in _DOT_SEGMENTS:
        raise PathError(
            f"invalid label {label[:_MAX_PATH_ECHO]!r}: use only letters, digits and . _ ~ - "
            "in a single path segment"
        )
    if label in OPERATIONS:
        raise PathError(
            f"label {label!r} is an EST operation name and would make paths ambiguous; "
            "choose another label"
        )
    return label


def _validate_operation(operation: str) -> str:
    if operation not in OPERATIONS:
        raise PathError(
            f"unknown EST operation {operation[:_MAX_PATH_ECHO]!r}; expected one of: "
            f"{', '.join(OPERATIONS)}"
        )
    return operation


def build_path(operation: str, label: str | None = None) -> str:
    """``/.well-known/est/<op>`` or ``/.well-known/est/<label>/<op>``."""
    _validate_operation(operation)
    if label is None:
        return f"{WELL_KNOWN_EST}/{operation}"
    return f"{WELL_KNOWN_EST}/{validate_label(label)}/{operation}"


def parse_path(path: str) -> tuple[str | None, str]:
    """Split a request path into ``(label, operation)``; a query string is ignored.

    Raises :class:`PathError` for anything that is not exactly an EST path.
    """
    if not isinstance(path, str):
        raise PathError(f"path must be text, got {type(path).__name__}")
    bare = path.split("?", 1)[0].split("#", 1)[0]
    echo = bare[:_MAX_PATH_ECHO]
    prefix = WELL_KNOWN_EST + "/"
    if not bare.startswith(prefix):
        raise PathError(f"path {echo!r} is not under {WELL_KNOWN_EST}/")
    segments = bare[len(prefix) :].split("/")
    if len(segments) == 1:
        return None, _validate_operation(segments[0])
    if len(segments) == 2:
        label, operation = segments
        return validate_label(label), _validate_operation(operation)
    raise PathError(
        f"path {echo!r} has too many segments; expected {WELL_KNOWN_EST}/<operation> or "
        f"{WELL_KNOWN_EST}/<label>/<operation>"
    )


def split_host_port(value: str, default_port: int) -> tuple[str, int]:
    """Split ``HOST``, ``HOST:PORT``, ``[V6]:PORT`` or a bare IPv6 address into host and port
    (``default_port`` when none is given); ``ValueError`` names what is wrong.

    Why here: the node's server and DNS server settings and the conformance suite's DNS server
    option take the same text, and must read an IPv6 address the same way.
    """
    text = value.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"no host in {value!r}: give HOST or HOST:PORT")
    if not port_text:
        return host, default_port
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port {port_text!r} in {value!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"port {port} in {value!r} is out of range 1-65535")
    return host, port


__all__ = [
    "CRL_PATH",
    "OPERATIONS",
    "WELL_KNOWN_EST",
    "build_path",
    "parse_path",
    "split_host_port",
    "validate_label",
]
