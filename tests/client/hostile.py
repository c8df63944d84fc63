"""A hostile HTTPS server: headers at once, then the body one byte at a time (a tarpit).

Why not :mod:`.quirky`: its answers are written in one go; the point here is the timing. The server
is real TLS on loopback with the quirky PKI's server certificate, records what it received and
how many body bytes it managed to send, and stops when the client goes away.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


class TricklingServer:
    """Answers every request with ``Content-Length: declared`` and then one byte per
    ``interval`` seconds, until the client closes or the server is stopped."""

    def __init__(
        self,
        cert_chain: Path,
        key: Path,
        *,
        interval: float = 2.0,
        declared: int = 100_000,
        status_line: str = "HTTP/1.1 200 OK",
        content_type: str = "application/pkcs7-mime",
    ) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(str(cert_chain), str(key))
        self.interval = interval
        self.declared = declared
        self.status_line = status_line
        self.content_type = content_type
        self.requests: list[bytes] = []
        self.bytes_sent = 0
        self._stop = threading.Event()
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(0.1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(raw,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        try:
            with self._context.wrap_socket(raw, server_side=True) as conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                self.requests.append(data.split(b"\r\n", 1)[0])
                conn.sendall(
                    f"{self.status_line}\r\nContent-Type: {self.content_type}\r\n"
                    f"Content-Length: {self.declared}\r\n\r\n".encode()
                )
                while not self._stop.is_set():
                    conn.sendall(b"M")
                    self.bytes_sent += 1
                    deadline = time.monotonic() + self.interval
                    while time.monotonic() < deadline and not self._stop.is_set():
                        time.sleep(0.05)
        except (OSError, ssl.SSLError):
            return

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> TricklingServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
