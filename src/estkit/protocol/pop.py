"""Proof-of-possession linking (RFC 7030 §3.5, checklist E14).

The client puts base64(tls-unique) of its TLS session into the CSR's challengePassword so the
server knows the CSR was made by the party at the other end of *this* TLS connection.

Why the TLS version check: tls-unique (RFC 5929) is defined only up to TLS 1.2; Python's
``get_channel_binding("tls-unique")`` still returns bytes under TLS 1.3, and using them would let
two unrelated sessions look linked (RFC 9266 §1).
"""

from __future__ import annotations

import base64
import enum
import hmac
from typing import Protocol

TLS_UNIQUE = "tls-unique"
_TLS_UNIQUE_VERSIONS = ("TLSv1.2",)


class _SslLike(Protocol):
    def version(self) -> str | None: ...

    def get_channel_binding(self, cb_type: str = ...) -> bytes | None: ...


class PopResult(enum.Enum):
    """Outcome of comparing a CSR's challengePassword with the session's tls-unique."""

    MATCH = "match"
    MISMATCH = "mismatch"
    ABSENT = "absent"  # the CSR carries no challengePassword
    UNAVAILABLE = "unavailable"  # the session has no tls-unique (TLS 1.3)


def tls_unique_for(ssl_object: _SslLike | None) -> bytes | None:
    """The tls-unique channel binding of a TLS 1.2 session; None for TLS 1.3 or no TLS."""
    if ssl_object is None:
        return None
    try:
        if ssl_object.version() not in _TLS_UNIQUE_VERSIONS:
            return None
        binding = ssl_object.get_channel_binding(TLS_UNIQUE)
    except (ValueError, OSError, AttributeError):
        return None
    return bytes(binding) if binding else None


def challenge_password_for(tls_unique: bytes) -> str:
    """base64(tls-unique) without newlines, the challengePassword value of RFC 7030 §3.5."""
    return base64.b64encode(tls_unique).decode("ascii")


def check_pop(challenge_password: str | None, tls_unique: bytes | None) -> PopResult:
    """Compare a CSR's challengePassword with the session's tls-unique (constant time)."""
    if tls_unique is None:
        return PopResult.UNAVAILABLE
    if challenge_password is None:
        return PopResult.ABSENT
    expected = challenge_password_for(tls_unique).encode("ascii")
    given = challenge_password.strip().encode("utf-8", "replace")
    return PopResult.MATCH if hmac.compare_digest(given, expected) else PopResult.MISMATCH


__all__ = ["TLS_UNIQUE", "PopResult", "challenge_password_for", "check_pop", "tls_unique_for"]
