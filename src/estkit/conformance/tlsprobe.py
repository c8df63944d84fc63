"""TLS handshake probes: which protocol versions and cipher suites does the server accept?

Why two mechanisms: TLS ≤1.2 probes use the stdlib (``SSLContext.minimum_version``,
``maximum_version`` and ``set_ciphers``). The stdlib has no binding for OpenSSL's
``SSL_CTX_set_ciphersuites``, so a TLS 1.3 probe that offers exactly one suite runs
``openssl s_client -ciphersuites`` instead (a network client like any other); when that program is
missing the TLS 1.3 suite probes are reported as skipped, never guessed.
"""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509

from estkit.conformance.target import Identity, Target
from estkit.conformance.transport import ContextFactory, TlsSettings, ssl_error_text, tls_facts

HandshakeOutcome = Literal["accepted", "refused", "unreachable", "local"]
"""``local``: the local OpenSSL could not even offer what was asked (reported as skip)."""

LOCAL_FAILURE_REASONS = frozenset(
    {"NO_CIPHERS_AVAILABLE", "NO_PROTOCOLS_AVAILABLE", "NO_SUITABLE_SIGNATURE_ALGORITHM"}
)
"""OpenSSL reasons raised by our own side before the server had a say."""

OPENSSL_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Handshake:
    outcome: HandshakeOutcome
    offered: str
    version: str | None = None
    cipher: str | None = None
    peer_certificate: x509.Certificate | None = None
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.outcome == "accepted"

    def evidence(self) -> dict[str, Any]:
        record: dict[str, Any] = {"offered": self.offered, "outcome": self.outcome}
        if self.version:
            record["version"] = self.version
            record["cipher"] = self.cipher
        if self.detail:
            record["detail"] = self.detail
        return record


def handshake(
    factory: ContextFactory,
    target: Target,
    settings: TlsSettings,
    *,
    identity: Identity | None = None,
    offered: str | None = None,
) -> Handshake:
    """Do one TLS handshake and close; the result says who stopped it, if anyone did."""
    label = offered or _describe_settings(settings)
    try:
        ctx = factory.build(settings, identity)
    except ssl.SSLError as exc:
        return Handshake(
            "local", label, detail=f"local OpenSSL cannot offer this: {ssl_error_text(exc)}"
        )
    if not _offers_anything(ctx, settings):
        return Handshake("local", label, detail="local OpenSSL has no cipher for this protocol")
    server_hostname = None if target.host_is_ip else target.host
    try:
        raw = socket.create_connection((target.host, target.port), timeout=target.timeout)
    except OSError as exc:
        return Handshake("unreachable", label, detail=f"cannot connect to {target.url}: {exc}")
    try:
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
            version, cipher, peer = tls_facts(tls)
            return Handshake(
                "accepted", label, version=version, cipher=cipher, peer_certificate=peer
            )
    except ssl.SSLError as exc:
        if getattr(exc, "reason", None) in LOCAL_FAILURE_REASONS:
            return Handshake("local", label, detail=f"local OpenSSL refused: {ssl_error_text(exc)}")
        return Handshake("refused", label, detail=ssl_error_text(exc))
    except (ConnectionResetError, BrokenPipeError, TimeoutError) as exc:
        # A server that drops the connection on an unwanted ClientHello has refused it too.
        return Handshake("refused", label, detail=f"connection closed: {exc}")
    except OSError as exc:
        return Handshake("unreachable", label, detail=str(exc))
    finally:
        raw.close()


def _offers_anything(ctx: ssl.SSLContext, settings: TlsSettings) -> bool:
    ciphers = ctx.get_ciphers()
    low, high = _numeric(settings.min_version), _numeric(settings.max_version)
    wants_tls13 = high >= ssl.TLSVersion.TLSv1_3.value
    wants_legacy = low <= ssl.TLSVersion.TLSv1_2.value
    return any(
        (c.get("protocol") == "TLSv1.3" and wants_tls13)
        or (c.get("protocol") != "TLSv1.3" and wants_legacy)
        for c in ciphers
    )


def _numeric(version: ssl.TLSVersion) -> int:
    """Protocol number, with the MINIMUM/MAXIMUM_SUPPORTED sentinels mapped to the extremes."""
    if version == ssl.TLSVersion.MINIMUM_SUPPORTED:
        return ssl.TLSVersion.SSLv3.value
    if version == ssl.TLSVersion.MAXIMUM_SUPPORTED:
        return ssl.TLSVersion.TLSv1_3.value
    return version.value


def _describe_settings(settings: TlsSettings) -> str:
    versions = f"{_version_name(settings.min_version)}-{_version_name(settings.max_version)}"
    return f"{versions} {settings.ciphers}" if settings.ciphers else versions


def _version_name(version: ssl.TLSVersion) -> str:
    return {
        ssl.TLSVersion.MINIMUM_SUPPORTED: "min",
        ssl.TLSVersion.MAXIMUM_SUPPORTED: "max",
    }.get(version, version.name.replace("v", " ").replace("_", "."))


def probe_version(
    factory: ContextFactory,
    target: Target,
    version: ssl.TLSVersion,
    *,
    identity: Identity | None = None,
) -> Handshake:
    """Offer exactly one protocol version with every suite the local OpenSSL has."""
    ciphers = None if version >= ssl.TLSVersion.TLSv1_3 else "ALL:@SECLEVEL=0"
    settings = TlsSettings(min_version=version, max_version=version, ciphers=ciphers, verify=False)
    return handshake(factory, target, settings, identity=identity, offered=_version_label(version))


def _version_label(version: ssl.TLSVersion) -> str:
    return {
        ssl.TLSVersion.TLSv1: "TLS 1.0",
        ssl.TLSVersion.TLSv1_1: "TLS 1.1",
        ssl.TLSVersion.TLSv1_2: "TLS 1.2",
        ssl.TLSVersion.TLSv1_3: "TLS 1.3",
    }.get(version, str(version))


def probe_tls12_suites(
    factory: ContextFactory,
    target: Target,
    suites: list[str],
    *,
    identity: Identity | None = None,
) -> Handshake:
    """Offer exactly ``suites`` over TLS 1.2 (the server picks one or refuses)."""
    settings = TlsSettings(
        min_version=ssl.TLSVersion.TLSv1_2,
        max_version=ssl.TLSVersion.TLSv1_2,
        ciphers=":".join(suites) + ":@SECLEVEL=0",
        verify=False,
    )
    return handshake(factory, target, settings, identity=identity, offered=", ".join(suites))


def accepted_among(
    factory: ContextFactory,
    target: Target,
    suites: list[str],
    *,
    identity: Identity | None = None,
) -> tuple[list[str], list[Handshake]]:
    """Every suite of ``suites`` the server accepts over TLS 1.2.

    One handshake offers the whole group; each suite the server picks is removed and the rest
    offered again, so a group costs one handshake per accepted suite plus one.
    """
    remaining = list(suites)
    accepted: list[str] = []
    attempts: list[Handshake] = []
    while remaining:
        result = probe_tls12_suites(factory, target, remaining, identity=identity)
        attempts.append(result)
        if not result.accepted or result.cipher not in remaining:
            break
        accepted.append(result.cipher)
        remaining.remove(result.cipher)
    return accepted, attempts


_CIPHERSUITE_LINE = re.compile(r"^Ciphersuite:\s*(\S+)", re.MULTILINE)
_PROTOCOL_LINE = re.compile(r"^Protocol version:\s*(\S+)", re.MULTILINE)


def probe_tls13_suite(openssl: str | None, target: Target, suite: str) -> Handshake:
    """Offer exactly one TLS 1.3 suite with ``openssl s_client``."""
    if openssl is None:
        return Handshake("local", suite, detail="no openssl program configured")
    command = [
        openssl,
        "s_client",
        "-connect",
        target.authority,
        "-tls1_3",
        "-ciphersuites",
        suite,
        "-brief",
    ]
    command += ["-noservername"] if target.host_is_ip else ["-servername", target.host]
    try:
        completed = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=OPENSSL_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError:
        return Handshake("local", suite, detail=f"{openssl} not found: install OpenSSL's CLI")
    except subprocess.TimeoutExpired:
        return Handshake("unreachable", suite, detail="openssl s_client timed out")
    output = completed.stdout + completed.stderr
    negotiated = _CIPHERSUITE_LINE.search(output)
    protocol = _PROTOCOL_LINE.search(output)
    if negotiated and protocol:
        return Handshake("accepted", suite, version=protocol.group(1), cipher=negotiated.group(1))
    last_line = _last_error_line(output)
    if "connect:errno" in output or "Connection refused" in output:
        return Handshake("unreachable", suite, detail=last_line)
    if "alert" in output or "handshake failure" in output or "no shared cipher" in output:
        return Handshake("refused", suite, detail=last_line)
    if "unexpected eof" in output.lower() or "errno=104" in output:
        return Handshake("refused", suite, detail=last_line)
    return Handshake("local", suite, detail=f"openssl s_client failed: {last_line}")


def _last_error_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if "error" in line.lower() or "alert" in line.lower():
            # Strip OpenSSL's "4047...:error:0A000410:SSL routines:" prefix down to the reason.
            return line.split(":SSL routines:")[-1]
    return lines[-1] if lines else "no output"


PLAIN_HTTP_READ_BYTES = 4096
PLAIN_HTTP_TIMEOUT_SECONDS = 3.0
"""A TLS server rejects a plain-text request at its first bytes; silence this long means no."""


@dataclass(frozen=True)
class PlainHttpAnswer:
    """What came back to a plain-text HTTP request sent to the TLS port."""

    data: bytes
    error: str | None

    @property
    def http_status(self) -> int | None:
        """The status code if the answer is an HTTP response, else None."""
        match = re.match(rb"HTTP/1\.[01] (\d{3})", self.data)
        return int(match.group(1)) if match else None


def plain_http_request(target: Target, path: str) -> PlainHttpAnswer:
    """Send an unencrypted HTTP request to the server's port and read the first bytes back.

    ``error`` is set only when no connection could be made; a reset or silence after the request
    is the expected behaviour of a TLS-only port and leaves ``data`` empty.
    """
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {target.authority}\r\nConnection: close\r\n\r\n"
    ).encode("ascii")
    timeout = min(target.timeout, PLAIN_HTTP_TIMEOUT_SECONDS)
    try:
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
    except OSError as exc:
        return PlainHttpAnswer(b"", f"{type(exc).__name__}: {exc}")
    chunks: list[bytes] = []
    size = 0
    with sock:
        try:
            sock.sendall(request)
            while size < PLAIN_HTTP_READ_BYTES:
                chunk = sock.recv(PLAIN_HTTP_READ_BYTES - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except OSError:
            pass  # reset or silence: either way no (further) HTTP answer
    return PlainHttpAnswer(b"".join(chunks), None)
