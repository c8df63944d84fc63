"""HTTP/1.1 over TLS with full control, for probing a server under test.

Why the stdlib ``http.client`` over an ``ssl.SSLSocket`` and not httpx: the cases must send
deliberately wrong requests (wrong method, wrong content type, malformed or oversized bodies),
need the TLS object of the connection *before* the body is built (tls-unique for RFC 7030 §3.5
proof-of-possession), and must record the negotiated version and suite of every exchange. One
request per connection, no pooling and no hidden retries, so each exchange is exactly what the
evidence says it was.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import select
import shutil
import socket
import ssl
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from cryptography import x509

from estkit.conformance.target import Identity, Target
from estkit.fileio import write_file_atomic, write_private_file_atomic
from estkit.protocol import MAX_RESPONSE_BODY_BYTES, certificates_to_pem, private_key_to_pem

SEND_CHUNK_BYTES = 16 * 1024
"""Bodies go out in chunks so a server that answers early (413) and closes is noticed."""

EARLY_READ_BYTES = 64 * 1024
"""What one look at an early answer takes off the socket: a 413/400/401 head and its short text
fit many times over; the rest of a longer answer is read normally afterwards."""

EVIDENCE_HEADERS = (
    "content-type",
    "content-length",
    "content-transfer-encoding",
    "retry-after",
    "www-authenticate",
    "location",
    "allow",
)
"""Response headers worth recording; the rest (Date, Server…) prove nothing."""

BodySource = bytes | Callable[[ssl.SSLSocket], bytes]
"""A body, or a function building it from the connected TLS socket (for PoP linking: tls-unique
under TLS 1.2, tls-exporter under TLS 1.3)."""


@dataclass(frozen=True)
class TlsSettings:
    """What a connection offers: protocol range and TLS ≤1.2 cipher string."""

    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED
    ciphers: str | None = None
    verify: bool = True


# EST operations do not verify the server certificate: judging it is the job of the cases that
# cite S2 (server-certificate-valid, cacerts-root). Verifying everywhere would turn one bad
# certificate into a failure of every case and hide what else the server gets right.
DEFAULT_TLS = TlsSettings(verify=False)
TLS12_ONLY = TlsSettings(max_version=ssl.TLSVersion.TLSv1_2, verify=False)
TLS13_ONLY = TlsSettings(min_version=ssl.TLSVersion.TLSv1_3, verify=False)
VERIFIED_TLS = TlsSettings(verify=True)


class ContextFactory:
    """Builds and caches ``ssl.SSLContext`` objects for the settings and identities in use.

    The stdlib loads client certificates only from files, so each identity is written once to a
    private temporary directory (key files 0600 via :mod:`estkit.fileio`) removed by :meth:`close`.
    """

    def __init__(self, trust_anchors: tuple[x509.Certificate, ...], *, check_hostname: bool):
        self._cadata = certificates_to_pem(list(trust_anchors)).decode("ascii")
        self._check_hostname = check_hostname
        self._workdir: Path | None = None
        self._files: dict[int, tuple[Path, Path]] = {}
        self._contexts: dict[tuple[TlsSettings, int | None], ssl.SSLContext] = {}

    def context(self, settings: TlsSettings, identity: Identity | None) -> ssl.SSLContext:
        cache_key = (settings, id(identity) if identity is not None else None)
        cached = self._contexts.get(cache_key)
        if cached is None:
            cached = self.build(settings, identity)
            self._contexts[cache_key] = cached
        return cached

    def build(self, settings: TlsSettings, identity: Identity | None) -> ssl.SSLContext:
        """A fresh context; raises ``ssl.SSLError`` if the local OpenSSL cannot offer it."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        with warnings.catch_warnings():
            # TLS 1.0/1.1 are deprecated in Python: offering them is the point of some probes.
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = settings.min_version
            ctx.maximum_version = settings.max_version
        if settings.ciphers is not None:
            ctx.set_ciphers(settings.ciphers)
        if settings.verify:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.check_hostname = self._check_hostname
            ctx.load_verify_locations(cadata=self._cadata)
            # A --cacert bundle may hold an intermediate only: treat every given CA as an anchor.
            ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if identity is not None:
            cert_path, key_path = self._identity_files(identity)
            ctx.load_cert_chain(cert_path, key_path)
        return ctx

    def _identity_files(self, identity: Identity) -> tuple[Path, Path]:
        files = self._files.get(id(identity))
        if files is None:
            if self._workdir is None:
                self._workdir = Path(tempfile.mkdtemp(prefix="estkit-conformance-"))
            index = len(self._files)
            cert_path = self._workdir / f"identity{index}.pem"
            key_path = self._workdir / f"identity{index}.key"
            write_file_atomic(cert_path, certificates_to_pem(list(identity.chain)))
            write_private_file_atomic(key_path, private_key_to_pem(identity.key))
            files = (cert_path, key_path)
            self._files[id(identity)] = files
        return files

    def close(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self._files.clear()
        self._contexts.clear()


@dataclass
class Exchange:
    """One request and what came back, or why nothing came back."""

    method: str
    path: str
    client: str | None
    request_content_type: str | None
    request_bytes: int
    status: int | None = None
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    tls_version: str | None = None
    cipher: str | None = None
    peer_certificate: x509.Certificate | None = None
    error: str | None = None
    error_kind: str | None = None
    """``connect`` (nobody answered), ``tls`` (handshake or TLS alert), ``http`` (broken reply)."""
    send_interrupted: str | None = None
    """Why the request body was not sent in full (the server answered or closed early)."""

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def headers_named(self, name: str) -> list[str]:
        """Every value of a header that may repeat (WWW-Authenticate)."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    @property
    def content_type(self) -> str | None:
        return self.header("content-type")

    def describe(self) -> str:
        """One line for messages: ``POST /.well-known/est/simpleenroll → 400 Bad Request``."""
        if self.status is None:
            return f"{self.method} {self.path} → no HTTP response ({self.error})"
        return f"{self.method} {self.path} → {self.status} {self.reason}".rstrip()

    def body_text(self, limit: int = 200) -> str:
        """The start of a (text) error body, for messages; binary bodies are summarised."""
        text = self.body[:limit].decode("utf-8", errors="replace").strip()
        if any(ord(ch) < 9 for ch in text):
            return f"<{len(self.body)} bytes of binary data>"
        return text

    def evidence(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "request": f"{self.method} {self.path}",
            "client_certificate": self.client,
            "request_content_type": self.request_content_type,
            "request_bytes": self.request_bytes,
            "tls": {"version": self.tls_version, "cipher": self.cipher},
        }
        if self.status is not None:
            record["status"] = self.status
            record["headers"] = {
                key.lower(): value for key, value in self.headers if key.lower() in EVIDENCE_HEADERS
            }
            record["body_bytes"] = len(self.body)
            content_type = (self.content_type or "").lower()
            if self.status >= 400 and content_type.startswith("text/"):
                record["body_text"] = self.body_text()
        if self.error is not None:
            record["error"] = self.error
            record["error_kind"] = self.error_kind
        if self.send_interrupted is not None:
            record["send_interrupted"] = self.send_interrupted
        return record


def perform(
    factory: ContextFactory,
    target: Target,
    method: str,
    path: str,
    *,
    body: BodySource = b"",
    content_type: str | None = None,
    headers: Mapping[str, str] | None = None,
    identity: Identity | None = None,
    settings: TlsSettings = DEFAULT_TLS,
) -> Exchange:
    """Open a connection, send one request, read the reply; never raises for network trouble."""
    exchange = Exchange(
        method=method,
        path=path,
        client=_identity_label(identity),
        request_content_type=content_type,
        request_bytes=0,
    )
    try:
        ctx = factory.context(settings, identity)
    except ssl.SSLError as exc:
        exchange.error, exchange.error_kind = f"local TLS setup failed: {exc}", "local"
        return exchange
    conn = http.client.HTTPSConnection(
        target.host, target.port, context=ctx, timeout=target.timeout
    )
    try:
        try:
            conn.connect()
        except ssl.SSLError as exc:
            exchange.error, exchange.error_kind = (
                f"TLS handshake failed: {ssl_error_text(exc)}",
                "tls",
            )
            return exchange
        except OSError as exc:
            exchange.error, exchange.error_kind = (
                f"cannot connect to {target.url}: {exc}",
                "connect",
            )
            return exchange
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        exchange.tls_version, exchange.cipher, exchange.peer_certificate = tls_facts(sock)
        payload = body(sock) if callable(body) else body
        exchange.request_bytes = len(payload)
        early = bytearray()
        interrupted = _send_request(conn, method, path, payload, content_type, headers or {}, early)
        exchange.send_interrupted = interrupted
        # Read through a file that first returns what was taken off the socket while sending.
        # cast: typeshed asks for a socket, but HTTPResponse only calls its makefile("rb").
        prefixed = cast(socket.socket, _Prefixed(sock, bytes(early)))
        response = http.client.HTTPResponse(prefixed, method=method)
        response.begin()
        exchange.status, exchange.reason = response.status, response.reason
        exchange.headers = tuple(response.getheaders())
        exchange.body = response.read(MAX_RESPONSE_BODY_BYTES)
    except ssl.SSLError as exc:
        # Under TLS 1.3 a refused client certificate shows up as an alert on the first read.
        exchange.error, exchange.error_kind = f"TLS error: {ssl_error_text(exc)}", "tls"
        _mention_interruption(exchange)
    except (OSError, http.client.HTTPException) as exc:
        exchange.error = f"no valid HTTP response: {type(exc).__name__}: {exc}".rstrip(": ")
        exchange.error_kind = "http"
        _mention_interruption(exchange)
    finally:
        conn.close()
    return exchange


def _mention_interruption(exchange: Exchange) -> None:
    if exchange.send_interrupted and exchange.error:
        exchange.error = f"{exchange.error} (after sending stopped: {exchange.send_interrupted})"


def _send_request(
    conn: http.client.HTTPSConnection,
    method: str,
    path: str,
    payload: bytes,
    content_type: str | None,
    headers: Mapping[str, str],
    early: bytearray,
) -> str | None:
    """Send the request; returns why sending stopped early, or None when all of it went out.

    A server may answer (413, 400, 401) as soon as it has the headers and close without reading
    the body (issue 13). Before each chunk we take whatever the server already sent into
    ``early`` and stop sending if that was its answer or its close; a send that fails anyway
    (BrokenPipe, reset, SSLEOFError) also just stops. The caller reads the answer either way.
    """
    conn.putrequest(method, path, skip_accept_encoding=True)
    if content_type is not None:
        conn.putheader("Content-Type", content_type)
    for name, value in headers.items():
        conn.putheader(name, value)
    if payload or method in ("POST", "PUT"):
        conn.putheader("Content-Length", str(len(payload)))
    try:
        conn.endheaders()
    except OSError as exc:  # ssl.SSLError is an OSError
        return f"the headers could not be sent: {type(exc).__name__}: {exc}"
    sock = conn.sock
    for start in range(0, len(payload), SEND_CHUNK_BYTES):
        data = _take_early(sock)
        if data is not None:
            early += data
            what = "answered" if data else "closed the connection"
            return f"the server {what} after {start} of {len(payload)} body bytes"
        try:
            sock.sendall(payload[start : start + SEND_CHUNK_BYTES])
        except OSError as exc:
            return (
                f"sending failed after {start} of {len(payload)} body bytes "
                f"({type(exc).__name__}); the server closed the connection"
            )
    return None


def _take_early(sock: ssl.SSLSocket) -> bytes | None:
    """Application data the server sent before we finished (``b""``: it closed), or None.

    Not just "is the socket readable": a TLS 1.3 server sends session tickets after the
    handshake, which make it readable without being an answer; a non-blocking read consumes
    those and reports "nothing yet".
    """
    if not sock.pending():
        readable, _writable, _errors = select.select([sock], [], [], 0)
        if not readable:
            return None
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(EARLY_READ_BYTES)
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        return None
    except OSError:
        return b""  # reset or TLS alert: the server is gone; what it said is read next
    finally:
        sock.settimeout(timeout)


class _Prefixed:
    """A socket stand-in for ``http.client.HTTPResponse``: ``prefix`` first, then the socket."""

    def __init__(self, sock: ssl.SSLSocket, prefix: bytes) -> None:
        self._sock = sock
        self._prefix = prefix

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_PrefixedRaw(self._sock, self._prefix))


class _PrefixedRaw(io.RawIOBase):
    def __init__(self, sock: ssl.SSLSocket, prefix: bytes) -> None:
        self._sock = sock
        self._prefix = memoryview(prefix)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._prefix:
            size = min(len(buffer), len(self._prefix))
            buffer[:size] = self._prefix[:size]
            self._prefix = self._prefix[size:]
            return size
        try:
            return self._sock.recv_into(buffer)
        except (ssl.SSLZeroReturnError, ConnectionResetError):
            return 0  # closed: the response ends here (http.client reports a short answer)


def tls_facts(sock: ssl.SSLSocket) -> tuple[str | None, str | None, x509.Certificate | None]:
    """Protocol version, cipher name and server certificate of an established connection."""
    cipher = sock.cipher()
    return sock.version(), (cipher[0] if cipher else None), _peer_certificate(sock)


def _peer_certificate(sock: ssl.SSLSocket) -> x509.Certificate | None:
    """The server's certificate; None when it sent none or one that does not parse."""
    der = sock.getpeercert(binary_form=True)
    if not der:
        return None
    with contextlib.suppress(ValueError):
        return x509.load_der_x509_certificate(der)
    return None


def _identity_label(identity: Identity | None) -> str | None:
    if identity is None:
        return None
    return f"{identity.name}: {identity.certificate.subject.rfc4514_string()}"


def ssl_error_text(exc: ssl.SSLError) -> str:
    """The OpenSSL reason without Python's file/line suffix."""
    reason = getattr(exc, "reason", None)
    text = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], str) else str(exc)
    text = text.split(" (_ssl.c")[0]
    if reason and reason.lower() not in text.lower().replace(" ", "_"):
        return f"{text} [{reason}]"
    return text
