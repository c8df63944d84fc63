"""Tiny, deliberately quirky HTTPS servers imitating other EST implementations.

Why purpose-built: the decoding rules (bare DER, PEM, unwrapped base64, CRLF, NUL-terminated
csrattrs, mislabelled PKCS#1 keys, odd Retry-After values, redirects) are about *other* servers'
habits, which our own server never shows. Each fixture is a real TLS server on 127.0.0.1 (stdlib
``http.server`` + ``ssl``), answers from a route table, and records every request it received, so
tests can show that a request reached the server and what it carried (headers, tls-unique).
"""

from __future__ import annotations

import http.server
import itertools
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from estkit.tlsbind import tls_exporter_for

LOOPBACK = "127.0.0.1"
# How often serve_forever checks for shutdown: short, so fixtures stop at once.
POLL_SECONDS = 0.02


@dataclass
class Canned:
    """One answer: status, headers (in order, repeatable) and body."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


@dataclass
class Recorded:
    """What the server saw of one request."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    tls_version: str | None
    tls_unique: bytes | None
    connection_id: int  # serial number of the TLS connection within this server
    peer_certificate: bytes | None = None  # DER of the client certificate, when one was sent
    tls_exporter: bytes | None = None  # RFC 9266 value of the server's end, under TLS 1.3


Handler = Callable[[Recorded], Canned]
Route = Canned | Handler | list[Canned]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _serve(self) -> None:
        if getattr(self.connection, "estkit_doomed", False):
            # "silent" close after a 401: the next request on this connection is read and
            # dropped unanswered, what a client sees when the server closed after challenging
            # and the client reused the connection anyway (issue 13).
            self.server.owner.dropped.append(self.path)
            self.close_connection = True
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        conn = self.connection
        version = conn.version() if isinstance(conn, ssl.SSLSocket) else None
        unique = (
            conn.get_channel_binding("tls-unique")
            if isinstance(conn, ssl.SSLSocket) and version == "TLSv1.2"
            else None
        )
        record = Recorded(
            self.command,
            self.path,
            {name.lower(): value for name, value in self.headers.items()},
            body,
            version,
            unique,
            getattr(conn, "estkit_connection_number", 0),
            conn.getpeercert(binary_form=True) if isinstance(conn, ssl.SSLSocket) else None,
            tls_exporter_for(conn) if version == "TLSv1.3" else None,
        )
        self.server.owner.requests.append(record)
        answer = self.server.owner.answer(record)
        self.send_response(answer.status)
        names = {name.lower() for name, _ in answer.headers}
        for name, value in answer.headers:
            self.send_header(name, value)
        if "content-length" not in names:
            self.send_header("Content-Length", str(len(answer.body)))
        drop = self.server.owner.drop_after_challenge if answer.status == 401 else None
        if record.path in self.server.owner.closing_paths or drop == "header":
            self.send_header("Connection", "close")
            self.close_connection = True
        if drop == "silent":
            conn.estkit_doomed = True  # type: ignore[union-attr]
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    do_GET = _serve
    do_POST = _serve


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: QuirkyServer

    def __init__(self, owner: QuirkyServer, context: ssl.SSLContext, host: str) -> None:
        self.owner = owner
        self._context = context
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._numbers = itertools.count(1)
        super().__init__((host, 0), _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = self.socket.accept()
        # Handshake in the request thread, so one failing client cannot block the accept loop.
        wrapped = self._context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        # A serial number, not id(): ids of closed sockets are reused.
        wrapped.estkit_connection_number = next(self._numbers)  # type: ignore[attr-defined]
        return wrapped, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            self.owner.handshake_errors.append(str(exc))
            return
        super().finish_request(request, client_address)


class QuirkyServer:
    """An HTTPS server answering from ``routes`` (path → answer) and recording requests.

    A route is a :class:`Canned` answer, a list of them (served in turn, the last repeated) or a
    function of the :class:`Recorded` request. Unknown paths get 404.
    """

    def __init__(
        self,
        cert_chain: Path,
        key: Path,
        routes: dict[str, Route] | None = None,
        *,
        minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
        maximum_version: ssl.TLSVersion | None = None,
        client_ca: Path | None = None,
        require_client_cert: bool = False,
        ciphers: str | None = None,
        host: str = LOOPBACK,
    ) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = minimum_version
        if maximum_version is not None:
            context.maximum_version = maximum_version
        if ciphers is not None:
            context.set_ciphers(ciphers)
        context.load_cert_chain(str(cert_chain), str(key))
        if client_ca is not None:
            context.load_verify_locations(str(client_ca))
            context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        self.routes: dict[str, Route] = dict(routes or {})
        self.requests: list[Recorded] = []
        self.handshake_errors: list[str] = []
        self.closing_paths: set[str] = set()
        # After every 401: None keeps the connection; "header" answers with Connection: close
        # and closes; "silent" says nothing and drops the next request on that connection.
        self.drop_after_challenge: str | None = None
        self.dropped: list[str] = []  # paths of requests dropped unanswered
        self.host = host
        self._httpd = _Server(self, context, host)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": POLL_SECONDS}, daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def close_after(self, path: str) -> None:
        """Answer ``path`` with ``Connection: close`` (the connection ends after the reply)."""
        self.closing_paths.add(path)

    def answer(self, record: Recorded) -> Canned:
        route = self.routes.get(record.path.split("?", 1)[0])
        if route is None:
            return Canned(404, [("Content-Type", "text/plain")], b"no such path here\n")
        if isinstance(route, Canned):
            return route
        if isinstance(route, list):
            return route.pop(0) if len(route) > 1 else route[0]
        return route(record)

    def wait_for_handshake_error(self, timeout: float = 5.0) -> str:
        """The first failed handshake, waiting for the server thread to record it."""
        deadline = time.monotonic() + timeout
        while not self.handshake_errors and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.handshake_errors, "the server saw no failed TLS handshake"
        return self.handshake_errors[0]

    def paths(self) -> list[str]:
        return [record.path for record in self.requests]

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> QuirkyServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
