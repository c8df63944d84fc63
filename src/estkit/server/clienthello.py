"""Read a TLS ClientHello (RFC 8446 §4.1.2) before the handshake: offered versions, cipher suites
and SNI, to log a failed handshake and to answer a hopeless one with the proper alert.

Why our own reader: asyncio's SSLProtocol (3.11 to 3.13) drops the alert OpenSSL writes when a
handshake fails (``_on_handshake_complete`` calls ``_fatal_error`` without flushing the outgoing
BIO), so a TLS 1.1 client saw the connection close with no alert and nothing was logged. Deciding
the two cases BCP-003-01 refuses outright (no TLS 1.2/1.3, no allowed cipher suite) from the
ClientHello bytes and writing the 7-byte alert record ourselves depends on no asyncio internals.

A hostile peer sends anything: every length is checked against the bytes present, and a hello
that does not parse is simply handed to OpenSSL (which refuses it on its own).
"""

from __future__ import annotations

import ssl
import struct
import weakref
from dataclasses import dataclass

# TLS record content type "handshake" and handshake type "client_hello".
_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
# Largest TLS plaintext record (RFC 8446 §5.1: 2^14) plus its 5-byte header: all we ever read.
MAX_HELLO_RECORD_BYTES = 16384 + 5
_EXT_SERVER_NAME = 0x0000
_EXT_SUPPORTED_VERSIONS = 0x002B
# GREASE values (RFC 8701) are offered by browsers and mean nothing.
_GREASE = frozenset(0x0A0A + 0x1010 * i for i in range(16))
TLS12 = 0x0303
TLS13 = 0x0304
VERSION_NAMES = {0x0300: "SSLv3", 0x0301: "TLSv1.0", 0x0302: "TLSv1.1", TLS12: "TLSv1.2"}
VERSION_NAMES[TLS13] = "TLSv1.3"
# Alert descriptions (RFC 8446 §6.2).
ALERT_HANDSHAKE_FAILURE = 40
ALERT_PROTOCOL_VERSION = 70
_TLS13_SUITES = frozenset({0x1301, 0x1302, 0x1303, 0x1304, 0x1305})


@dataclass(frozen=True)
class ClientHello:
    """What a client offered."""

    versions: tuple[int, ...]
    cipher_suites: tuple[int, ...]
    server_name: str | None

    @property
    def version_names(self) -> str:
        return ",".join(VERSION_NAMES.get(v, f"0x{v:04x}") for v in self.versions) or "-"


def record_length(header: bytes) -> int | None:
    """Total length of the TLS record whose first 5 bytes are ``header``; None if not a
    handshake record (plain HTTP sent to the HTTPS port, say)."""
    if len(header) < 5 or header[0] != _HANDSHAKE:
        return None
    return min(5 + struct.unpack("!H", header[3:5])[0], MAX_HELLO_RECORD_BYTES)


def parse_client_hello(record: bytes) -> ClientHello | None:
    """The ClientHello in the first TLS record, or None when it does not parse."""
    try:
        return _parse(record)
    except (IndexError, struct.error, UnicodeDecodeError):
        return None


def _parse(record: bytes) -> ClientHello | None:
    if record_length(record[:5]) is None or record[5] != _CLIENT_HELLO:
        return None
    body = record[9:]  # record header (5) + handshake type (1) + length (3)
    legacy_version = struct.unpack("!H", body[0:2])[0]
    pos = 2 + 32  # version + random
    pos += 1 + body[pos]  # session id
    (suites_len,) = struct.unpack("!H", body[pos : pos + 2])
    suites_bytes = body[pos + 2 : pos + 2 + suites_len]
    if len(suites_bytes) != suites_len:
        return None
    suites = tuple(
        s for s in struct.unpack(f"!{suites_len // 2}H", suites_bytes) if s not in _GREASE
    )
    pos += 2 + suites_len
    pos += 1 + body[pos]  # compression methods
    versions: tuple[int, ...] = (legacy_version,)
    server_name: str | None = None
    if pos + 2 <= len(body):
        (ext_total,) = struct.unpack("!H", body[pos : pos + 2])
        pos += 2
        end = min(len(body), pos + ext_total)
        while pos + 4 <= end:
            ext_type, ext_len = struct.unpack("!HH", body[pos : pos + 4])
            data = body[pos + 4 : pos + 4 + ext_len]
            pos += 4 + ext_len
            if ext_type == _EXT_SUPPORTED_VERSIONS and data:
                listed = data[1 : 1 + data[0]]
                versions = tuple(
                    v
                    for v in struct.unpack(f"!{len(listed) // 2}H", listed[: len(listed) // 2 * 2])
                    if v not in _GREASE
                )
            elif ext_type == _EXT_SERVER_NAME and len(data) >= 5 and data[2] == 0:
                (name_len,) = struct.unpack("!H", data[3:5])
                server_name = data[5 : 5 + name_len].decode("ascii")[:253]
    return ClientHello(versions=versions, cipher_suites=suites, server_name=server_name)


# Suite ids each server context allows: get_ciphers() builds a dict per suite, which cost ~2% of
# a server's CPU when called for every connection (issue 16). A context's suites are set once
# (tls.py); a reloaded certificate gets a new context, hence a new entry.
_ALLOWED_SUITES: weakref.WeakKeyDictionary[ssl.SSLContext, frozenset[int]] = (
    weakref.WeakKeyDictionary()
)


def _allowed_suites(context: ssl.SSLContext) -> frozenset[int]:
    allowed = _ALLOWED_SUITES.get(context)
    if allowed is None:
        allowed = frozenset(cipher["id"] & 0xFFFF for cipher in context.get_ciphers())
        _ALLOWED_SUITES[context] = allowed
    return allowed


def refusal_alert(hello: ClientHello, context: ssl.SSLContext) -> tuple[int, str] | None:
    """(alert, reason) when ``context`` cannot accept ``hello`` (BCP-003-01 T1/T2), else None."""
    if not {TLS12, TLS13} & set(hello.versions):
        return (
            ALERT_PROTOCOL_VERSION,
            f"offered {hello.version_names}; TLS 1.2 or 1.3 is required (BCP-003-01 T1)",
        )
    allowed = _allowed_suites(context)
    offered = set(hello.cipher_suites)
    usable = set()
    if TLS13 in hello.versions:
        usable |= offered & allowed & _TLS13_SUITES
    if TLS12 in hello.versions:
        usable |= (offered & allowed) - _TLS13_SUITES
    if not usable:
        return (
            ALERT_HANDSHAKE_FAILURE,
            "no offered cipher suite is allowed by BCP-003-01 T2",
        )
    return None


def alert_record(description: int, hello: ClientHello | None = None) -> bytes:
    """A fatal TLS alert record (level 2). Its record version is the highest the client offered
    up to TLS 1.2 (records never say 1.3), so an old client's record layer accepts it."""
    offered = [v for v in (hello.versions if hello else ()) if 0x0301 <= v <= TLS13]
    version = min(max(offered, default=TLS12), TLS12)
    return bytes([0x15, 0x03, version & 0xFF, 0x00, 0x02, 0x02, description])


__all__ = [
    "ALERT_HANDSHAKE_FAILURE",
    "ALERT_PROTOCOL_VERSION",
    "MAX_HELLO_RECORD_BYTES",
    "ClientHello",
    "alert_record",
    "parse_client_hello",
    "record_length",
    "refusal_alert",
]
