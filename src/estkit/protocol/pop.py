"""Proof-of-possession linking (RFC 7030 §3.5, checklist E14), under TLS 1.2 and TLS 1.3.

The client puts a channel binding of its TLS session into the CSR's challengePassword so the
server knows the CSR was made by the party at the other end of *this* TLS connection:

- TLS 1.2: ``base64(tls-unique)`` (RFC 7030 §3.5, RFC 5929), exactly as RFC 7030 says;
- TLS 1.3: ``"tls-exporter:" + base64(tls-exporter)`` (RFC 9266, 32 bytes), an estkit extension
  (docs/tls13-pop.md has the wire format): the prefix says which binding was used, so a
  tls-exporter value can never be compared with tls-unique or the other way round. A server
  offers it by listing :data:`~estkit.protocol.csrattrs.TLS_EXPORTER_POP_OID` in /csrattrs.

Why the TLS version check: tls-unique (RFC 5929) is defined only up to TLS 1.2; Python's
``get_channel_binding("tls-unique")`` still returns bytes under TLS 1.3, and using them would let
two unrelated sessions look linked (RFC 9266 §1). The tls-exporter value itself comes from
``estkit.tlsbind`` (reading it is I/O-level TLS code, which this package does not contain); here
are only the pure parts: building and comparing the challengePassword text.
"""

from __future__ import annotations

import base64
import enum
import hmac
from typing import Protocol

TLS_UNIQUE = "tls-unique"
TLS_EXPORTER = "tls-exporter"
# The estkit wire format of a tls-exporter challengePassword: this prefix, then base64 of the
# 32 bytes (RFC 9266 §2), no line breaks: 57 characters, all PrintableString (RFC 2985 allows
# up to 255), so every CSR library can carry it.
TLS_EXPORTER_PREFIX = TLS_EXPORTER + ":"
TLS_EXPORTER_LENGTH = 32
_TLS_UNIQUE_VERSIONS = ("TLSv1.2",)


class _SslLike(Protocol):
    def version(self) -> str | None: ...

    def get_channel_binding(self, cb_type: str = ...) -> bytes | None: ...


class PopResult(enum.Enum):
    """Outcome of comparing a CSR's challengePassword with the session's tls-unique."""

    MATCH = "match"
    MISMATCH = "mismatch"
    ABSENT = "absent"  # the CSR carries no challengePassword
    # The session has no binding of the kind the challengePassword uses (or none at all): a
    # plain value under TLS 1.3, where tls-unique does not exist, or any value when the server
    # cannot read its side's tls-exporter. Nothing can be checked.
    UNAVAILABLE = "unavailable"


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


def exporter_challenge_password_for(tls_exporter: bytes) -> str:
    """``"tls-exporter:" + base64(value)``: the estkit challengePassword for a TLS 1.3 session."""
    if len(tls_exporter) != TLS_EXPORTER_LENGTH:
        raise ValueError(
            f"a tls-exporter channel binding is {TLS_EXPORTER_LENGTH} bytes (RFC 9266), "
            f"not {len(tls_exporter)}"
        )
    return TLS_EXPORTER_PREFIX + base64.b64encode(tls_exporter).decode("ascii")


def binding_type_of(challenge_password: str) -> str:
    """Which channel binding a challengePassword claims: :data:`TLS_EXPORTER` when it carries
    the estkit prefix, else :data:`TLS_UNIQUE` (RFC 7030 §3.5's plain base64)."""
    if challenge_password.strip().startswith(TLS_EXPORTER_PREFIX):
        return TLS_EXPORTER
    return TLS_UNIQUE


def check_pop(
    challenge_password: str | None,
    tls_unique: bytes | None,
    tls_exporter: bytes | None = None,
) -> PopResult:
    """Compare a CSR's challengePassword with the session's channel binding (constant time).

    ``tls_unique``: the session's under TLS 1.2, else None; ``tls_exporter``: its RFC 9266 value
    under TLS 1.3 when the server can read it, else None. The prefix of the challengePassword
    picks which one it is compared with. A tls-exporter value on a session that has only
    tls-unique (TLS 1.2) is a MISMATCH: it claims a link this session cannot have. A plain
    value on a session that has only tls-exporter (TLS 1.3) is UNAVAILABLE, as before this
    extension existed: it may be an RFC 7030 client using tls-unique where it does not exist.
    """
    if tls_unique is None and tls_exporter is None:
        return PopResult.UNAVAILABLE
    if challenge_password is None:
        return PopResult.ABSENT
    given = challenge_password.strip().encode("utf-8", "replace")
    if binding_type_of(challenge_password) == TLS_EXPORTER:
        if tls_exporter is None:
            return PopResult.MISMATCH
        expected = exporter_challenge_password_for(tls_exporter).encode("ascii")
    else:
        if tls_unique is None:
            return PopResult.UNAVAILABLE
        expected = challenge_password_for(tls_unique).encode("ascii")
    return PopResult.MATCH if hmac.compare_digest(given, expected) else PopResult.MISMATCH


__all__ = [
    "TLS_EXPORTER",
    "TLS_EXPORTER_LENGTH",
    "TLS_EXPORTER_PREFIX",
    "TLS_UNIQUE",
    "PopResult",
    "binding_type_of",
    "challenge_password_for",
    "check_pop",
    "exporter_challenge_password_for",
    "tls_unique_for",
]
