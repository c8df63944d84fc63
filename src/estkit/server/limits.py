"""Connection limits of the EST server: how long and how many, so slow or hostile clients cannot
starve the others (issue 6, "Nothing lost").

Why these limits and not just aiohttp's defaults: aiohttp keeps an idle keep-alive connection for
an hour, has no limit on how long a request head or body may take to arrive, and no cap on open
connections, so a few hundred slowloris clients could hold a small server's file descriptors for
as long as they like. An EST exchange is a few kilobytes that a device sends at once; these limits
are generous for that and tight for an attacker. All of them can be changed in the ``[limits]``
table of ``estkit.toml`` (``estkit.server.config.set_limits`` edits it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from estkit.errors import EstkitError

# Seconds from a connection's first byte (or, for a new connection, from the TLS handshake) until
# its request head (request line + headers, a few hundred bytes) must be complete. Apache's
# mod_reqtimeout and nginx's client_header_timeout default to 20 and 60 s for browsers on slow
# links; EST devices send their head in one segment, so 10 s is ample.
HEADER_TIMEOUT_SECONDS = 10.0
# Seconds for the whole request body once the head arrived. A CSR is at most 64 KiB
# (MAX_REQUEST_BODY_BYTES); even at 9600 bit/s that is under a minute, typical is milliseconds.
BODY_TIMEOUT_SECONDS = 30.0
# Seconds an idle keep-alive connection stays open between requests (aiohttp: one hour). nginx's
# keepalive_timeout is 75 s; devices enroll a few times a year, so there is nothing to keep warm.
IDLE_TIMEOUT_SECONDS = 30.0
# Seconds a TCP connection may take to complete its TLS handshake (asyncio's default: 60 s).
TLS_HANDSHAKE_TIMEOUT_SECONDS = 10.0
# Open connections per server process. When full, the oldest idle connection is closed to make
# room; if none is idle the new one is closed. 1000 keeps a process below the common soft
# `ulimit -n` of 1024 descriptors, with room left for the store, log and listening sockets.
MAX_CONNECTIONS = 1000
# Largest request line / header field in bytes (aiohttp's and nginx's default, 8 KiB): EST
# headers are short; an Authorization: Digest header is a few hundred bytes.
MAX_HEADER_FIELD_BYTES = 8190
# Most header fields per request (aiohttp: 128). An EST request carries about ten.
MAX_HEADERS = 64


class LimitsError(EstkitError, ValueError):
    """A ``[limits]`` value is not a positive number, or unknown; the message says which."""


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits one server process enforces (see the module constants for the reasoning)."""

    header_timeout: float = HEADER_TIMEOUT_SECONDS
    body_timeout: float = BODY_TIMEOUT_SECONDS
    idle_timeout: float = IDLE_TIMEOUT_SECONDS
    tls_handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT_SECONDS
    max_connections: int = MAX_CONNECTIONS

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise LimitsError(f"limits.{item.name} must be a number, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise LimitsError(f"limits.{item.name} must be greater than 0, got {value!r}")
        if int(self.max_connections) != self.max_connections:
            raise LimitsError(
                f"limits.max_connections must be a whole number, got {self.max_connections!r}"
            )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> ConnectionLimits:
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise LimitsError(
                f"unknown limit(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**dict(mapping))

    def to_mapping(self, *, only_changed: bool = False) -> dict[str, float | int]:
        """The TOML table; ``only_changed`` leaves out values equal to the defaults."""
        values = asdict(self)
        if only_changed:
            defaults = asdict(ConnectionLimits())
            values = {key: value for key, value in values.items() if value != defaults[key]}
        return values


__all__ = [
    "BODY_TIMEOUT_SECONDS",
    "HEADER_TIMEOUT_SECONDS",
    "IDLE_TIMEOUT_SECONDS",
    "MAX_CONNECTIONS",
    "MAX_HEADERS",
    "MAX_HEADER_FIELD_BYTES",
    "TLS_HANDSHAKE_TIMEOUT_SECONDS",
    "ConnectionLimits",
    "LimitsError",
]
