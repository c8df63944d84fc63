"""A connection guard in front of aiohttp: header and idle timeouts, a connection cap, and a TLS
handshake timeout, so slow or hostile clients cannot starve well-behaved ones.

Why a layer of our own: aiohttp bounds header *sizes* but not how long a request head may take to
trickle in (slowloris), keeps idle connections for an hour, and has no cap on open connections.
The guard wraps each connection's aiohttp protocol object (asyncio calls it, it passes every call
on) and watches only three things: when bytes arrive, when a request reaches the application
(:meth:`ConnectionGuard.middleware`) and when its handler is done. With that it can tell a
connection that is *idle* (nothing in flight: safe to close, HTTP allows it at any time) from one
that is *mid-head* (a request started arriving) or *busy* (a handler is running), and apply:

- ``header_timeout``: a connection must complete its request head within this many seconds of
  its first byte (or of the handshake, for a new connection). Mid-head connections get
  ``408 Request Timeout`` and are closed; new ones that never sent a byte are closed silently.
- ``idle_timeout``: an idle keep-alive connection is closed after this many seconds (aiohttp's
  own keep-alive timer is set to the same value).
- ``max_connections``: at the cap, a new connection first evicts the oldest idle one; if every
  connection is mid-head or busy, the new connection is closed at once (bounded by the header
  timeout, which frees slots). Counted per process.
- ``tls_handshake_timeout``: passed to asyncio (``ssl_handshake_timeout``) for TCP connections
  that never finish TLS.

The body timeout lives in the request handler (``app.py``), which reads the body.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from estkit.server.limits import ConnectionLimits

logger = logging.getLogger("estkit.server")

# Connection states (see the module docstring).
FRESH = "fresh"  # TLS done, no byte of a request yet
HEAD = "head"  # bytes of a request head arrived, no handler yet
BUSY = "busy"  # a handler is running
IDLE = "idle"  # between requests on a keep-alive connection
_EVICTABLE = (FRESH, IDLE)
# At most one "connection limit reached" warning per this many seconds (an attack must not turn
# into a log flood); the suppressed count is reported with the next warning.
REFUSAL_LOG_INTERVAL_SECONDS = 10.0
# Seconds a closing TLS connection waits for the client's close_notify before it is dropped
# (asyncio's default is 30 s, which would let closed slowloris connections pile up descriptors).
TLS_SHUTDOWN_TIMEOUT_SECONDS = 5.0
_TIMEOUT_BODY = (
    "request head not received within header_timeout={seconds:g} s; send the request line and "
    "headers at once\n"
)


def _peer(transport: asyncio.BaseTransport) -> str:
    peername = transport.get_extra_info("peername")
    if not peername:
        return "unknown"
    host, port = peername[0], peername[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Connection:
    """What the guard knows about one open connection."""

    __slots__ = ("peer", "since", "state", "timer", "transport")

    def __init__(self, transport: asyncio.BaseTransport, now: float) -> None:
        self.transport = transport
        self.peer = _peer(transport)
        self.state = FRESH
        self.since = now
        self.timer: asyncio.TimerHandle | None = None

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class GuardedProtocol(asyncio.Protocol):
    """Passes every asyncio callback to aiohttp's protocol, telling the guard what happens."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._connection: _Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._connection = self._guard.admit(transport)
        if self._connection is None:
            transport.close()  # over the cap with nothing to evict; aiohttp never sees it
            return
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._connection is None:
            return
        self._guard.bytes_arrived(self._connection)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._connection is None:
            return None
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._connection is None:
            return
        self._guard.release(self._connection)
        self._connection = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._connection is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._connection is not None:
            self._inner.resume_writing()


class ConnectionGuard:
    """Tracks the open connections of one server process and enforces :class:`ConnectionLimits`.

    Runs entirely on the server's event loop (no locks needed)."""

    def __init__(self, limits: Callable[[], ConnectionLimits]) -> None:
        # A callable, so a reloaded configuration applies to the next connection.
        self._limits = limits
        self._connections: dict[int, _Connection] = {}  # id(transport) -> connection
        self._last_refusal_log = 0.0
        self._suppressed_refusals = 0

    @property
    def limits(self) -> ConnectionLimits:
        return self._limits()

    # -- connection life cycle -----------------------------------------------------------------

    def protocol_factory(
        self, server: Callable[[], asyncio.Protocol]
    ) -> Callable[[], GuardedProtocol]:
        return lambda: GuardedProtocol(server(), self)

    def admit(self, transport: asyncio.BaseTransport) -> _Connection | None:
        limits = self.limits
        if len(self._connections) >= limits.max_connections and not self._evict_one(limits):
            self._log_refusal(transport, limits)
            return None
        connection = _Connection(transport, time.monotonic())
        self._connections[id(transport)] = connection
        self._arm(connection, limits.header_timeout)
        return connection

    def release(self, connection: _Connection) -> None:
        connection.cancel_timer()
        self._connections.pop(id(connection.transport), None)

    def bytes_arrived(self, connection: _Connection) -> None:
        if self._find(connection.transport) is not connection:
            return  # already closed by the guard, waiting for the TLS shutdown to finish
        if connection.state in _EVICTABLE:
            # The first byte of a request: its head must now be complete in time.
            connection.state = HEAD
            self._arm(connection, self.limits.header_timeout)

    def request_started(self, transport: asyncio.BaseTransport | None) -> None:
        connection = self._find(transport)
        if connection is not None:
            connection.state = BUSY
            connection.cancel_timer()

    def request_finished(self, transport: asyncio.BaseTransport | None) -> None:
        connection = self._find(transport)
        if connection is not None and connection.state == BUSY:
            connection.state = IDLE
            connection.since = time.monotonic()
            self._arm(connection, self.limits.idle_timeout)

    # -- aiohttp integration -------------------------------------------------------------------

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Marks a connection busy while its request is handled (outermost middleware)."""
        self.request_started(request.transport)
        try:
            return await handler(request)
        finally:
            self.request_finished(request.transport)

    # -- internals -----------------------------------------------------------------------------

    def _find(self, transport: asyncio.BaseTransport | None) -> _Connection | None:
        return self._connections.get(id(transport)) if transport is not None else None

    def _arm(self, connection: _Connection, seconds: float) -> None:
        connection.cancel_timer()
        loop = asyncio.get_running_loop()
        connection.timer = loop.call_later(seconds, self._expire, connection)

    def _expire(self, connection: _Connection) -> None:
        connection.timer = None
        if self._connections.get(id(connection.transport)) is not connection:
            return
        limits = self.limits
        transport = connection.transport
        if connection.state == HEAD:
            body = _TIMEOUT_BODY.format(seconds=limits.header_timeout).encode()
            logger.warning(
                "closed connection from %s: 408 request head not complete within "
                "header_timeout=%g s (slow or stalled client)",
                connection.peer,
                limits.header_timeout,
            )
            # No handler is running (the head is incomplete), so nothing else writes now.
            assert isinstance(transport, asyncio.WriteTransport)  # a TCP/TLS stream's transport
            transport.write(
                b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
        elif connection.state == FRESH:
            logger.info(
                "closed connection from %s: no request within header_timeout=%g s",
                connection.peer,
                limits.header_timeout,
            )
        elif connection.state == IDLE:
            logger.debug(
                "closed idle connection from %s after idle_timeout=%g s",
                connection.peer,
                limits.idle_timeout,
            )
        else:  # BUSY: the handler has its own (body) timeout
            return
        self._close(connection)

    def _evict_one(self, limits: ConnectionLimits) -> bool:
        candidates = [c for c in self._connections.values() if c.state in _EVICTABLE]
        if not candidates:
            return False
        oldest = min(candidates, key=lambda c: c.since)
        logger.info(
            "max_connections=%d reached: closed the %s connection from %s to make room",
            limits.max_connections,
            oldest.state,
            oldest.peer,
        )
        self._close(oldest)
        return True

    def _close(self, connection: _Connection) -> None:
        """Close, and free the slot now: the TLS shutdown that follows may take a few seconds
        (bounded by TLS_SHUTDOWN_TIMEOUT_SECONDS) but carries no request any more."""
        self.release(connection)
        connection.transport.close()

    def _log_refusal(self, transport: asyncio.BaseTransport, limits: ConnectionLimits) -> None:
        now = time.monotonic()
        if now - self._last_refusal_log < REFUSAL_LOG_INTERVAL_SECONDS:
            self._suppressed_refusals += 1
            return
        suppressed = (
            f" ({self._suppressed_refusals} more refused since the last message)"
            if self._suppressed_refusals
            else ""
        )
        self._last_refusal_log, self._suppressed_refusals = now, 0
        logger.warning(
            "refused connection from %s: max_connections=%d reached and none is idle (every "
            "open connection is mid-request; the header timeout frees them)%s",
            _peer(transport),
            limits.max_connections,
            suppressed,
        )


class GuardedSite(web.BaseSite):
    """An aiohttp site listening through a :class:`ConnectionGuard` (TCP host/port or a socket)."""

    __slots__ = ("_guard", "_host", "_port", "_reuse_address", "_sock")

    def __init__(
        self,
        runner: web.BaseRunner,
        guard: ConnectionGuard,
        *,
        ssl_context: ssl.SSLContext,
        host: str | None = None,
        port: int = 0,
        sock: Any = None,
        backlog: int = 128,
        reuse_address: bool = True,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._guard = guard
        self._host, self._port, self._sock = host, port, sock
        self._reuse_address = reuse_address

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        factory = self._guard.protocol_factory(server)
        handshake = self._guard.limits.tls_handshake_timeout
        if self._sock is not None:
            self._server = await loop.create_server(
                factory,
                sock=self._sock,
                ssl=self._ssl_context,
                backlog=self._backlog,
                ssl_handshake_timeout=handshake,
                ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT_SECONDS,
            )
        else:
            self._server = await loop.create_server(
                factory,
                self._host,
                self._port,
                ssl=self._ssl_context,
                backlog=self._backlog,
                reuse_address=self._reuse_address,
                ssl_handshake_timeout=handshake,
                ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT_SECONDS,
            )


__all__ = ["ConnectionGuard", "GuardedProtocol", "GuardedSite"]
