"""A connection guard in front of aiohttp: a descriptor budget, a timeout per phase, eviction of
the oldest reusable connection, TLS alerts for hopeless handshakes and an access log, so slow or
hostile clients cannot starve well-behaved ones (issues 6 and 14).

Why a layer of our own: aiohttp bounds header *sizes* but not how long a request head may take to
trickle in (slowloris), keeps idle connections for an hour, and has no cap on open connections;
asyncio's own accept loop logs a traceback and retries on EMFILE, and drops the TLS alert of a
failed handshake. So :class:`GuardedSite` runs its own accept loop and TLS start, and the guard
wraps each connection's aiohttp protocol object (asyncio calls it, it passes every call on). It
knows every connection's phase:

- ``handshake``: accepted, ClientHello and TLS handshake under way (``tls_handshake_timeout``);
- ``fresh``: TLS done, no byte of a request yet; ``head``: a request head is arriving
  (``header_timeout``: a mid-head connection gets ``408`` and is closed);
- ``busy``: a handler runs (the body timeout and minimum rate live in ``app.py``, which reads
  the body); while its body is still arriving it also counts as reusable;
- ``idle``: between requests on a keep-alive connection (``idle_timeout``).

``max_connections`` (lowered to the listener's share of RLIMIT_NOFILE, see
:func:`estkit.server.limits.connection_budget`): at the cap, a new connection closes the oldest
connection that is in handshake, head, idle or a still-arriving body, as nginx drains reusable
connections; only if every connection is running a handler is the newcomer closed. accept()
failing with EMFILE/ENFILE evicts the same way and pauses accepting for ACCEPT_PAUSE_SECONDS: it
never crashes or spins the loop. Refusals are logged through the rate-limited
:data:`estkit.server.accesslog.refusals`.

Per-address failure throttle (:class:`FailureThrottle`): failed TLS handshakes and refused
requests are counted per source address; past ``failures_per_second`` in one second, new
connections from that address get no TLS work for ``failure_backoff`` seconds: each is held
unread for TARPIT_SECONDS after accept(), then closed (fail2ban, nginx limit_req, a tarpit).
A refused request costs a full TLS handshake with a client certificate (~2.5 ms of CPU), so a
flood of them from one address would otherwise take a core from the devices. It counts what one
process sees on one listener; an attacker spread over many addresses is not stopped by it, and
the host's own loopback addresses (:data:`THROTTLE_EXEMPT`) are never backed off.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, cast

from aiohttp import web

from estkit.server.accesslog import access, access_handshake_failed, address_of, refusals
from estkit.server.clienthello import (
    ClientHello,
    alert_record,
    parse_client_hello,
    record_length,
    refusal_alert,
)
from estkit.server.limits import ConnectionLimits
from estkit.server.refusal import REFUSED_REQUEST_KEY

logger = logging.getLogger("estkit.server")
# Called with the alert code each time the guard itself sends a refusal alert (OpenSSL never sees
# those handshakes, so its message callback cannot count them): the metrics module listens here.
ALERT_OBSERVERS: list[Callable[[int], None]] = []
# Called with the listener's name for each new connection the failure throttle closes unread
# (its address is backed off): the metrics module listens here.
THROTTLE_OBSERVERS: list[Callable[[str], None]] = []

# Connection phases (see the module docstring).
HANDSHAKE = "handshake"
FRESH = "fresh"
HEAD = "head"
BUSY = "busy"
IDLE = "idle"
_REUSABLE = (HANDSHAKE, FRESH, HEAD, IDLE)
# Seconds a closing TLS connection waits for the client's close_notify before it is dropped
# (asyncio's default is 30 s, which would let closed slowloris connections pile up descriptors).
TLS_SHUTDOWN_TIMEOUT_SECONDS = 5.0
# Seconds accept() rests after failing for lack of descriptors (EMFILE/ENFILE): long enough for
# the evicted connection's descriptor to be freed, short enough that a device barely notices.
ACCEPT_PAUSE_SECONDS = 0.05
# Connections taken from the kernel's queue per readiness event (asyncio takes `backlog`); a
# bound keeps one burst from monopolising the event loop.
ACCEPT_BATCH = 64
# Seconds between looks at a ClientHello that arrived only in part (its bytes stay queued, so the
# socket stays readable; this keeps the wait from spinning). Bounded by tls_handshake_timeout.
PEEK_RETRY_SECONDS = 0.01
# Connections closed when accept() runs out of descriptors: one for the newcomer, the rest as
# headroom for what its request opens (store, CA files, log rotation).
EMFILE_EVICTIONS = 8
# After accept() ran out of descriptors the budget is held below the connections open at that
# moment (minus EMFILE_EVICTIONS) for this many seconds, so eviction happens at admission and
# accept() stops failing; then the configured budget applies again.
EMFILE_CEILING_SECONDS = 60.0
# The failure throttle counts failures per address in windows of this many seconds (its limit is
# failures_per_second).
FAILURE_WINDOW_SECONDS = 1.0
# Addresses the failure throttle tracks at once (bounded memory against spoofed or many
# addresses; the least recently failing one is forgotten first). As MAX_RATE_LIMITED_KINDS.
MAX_THROTTLED_ADDRESSES = 4096
# Seconds a new connection from a backed-off address is held, unread, before it is closed: a
# flooding client waits instead of reconnecting at once (measured: closed at once, the bench's
# flooder reconnected ~4,000 times a second, its own CPU competing with the devices'). Short, so
# few descriptors are held; such connections are evicted first at the connection cap.
TARPIT_SECONDS = 2.0
# Source addresses the failure throttle never backs off: the host's own default loopback
# addresses. A reverse proxy or load balancer on the same host makes every client 127.0.0.1 (a
# backoff would shut them all out), and local tools and health checks come from there; fail2ban's
# default ignoreip exempts loopback the same way. Only these two, so other loopback addresses
# (127.0.0.2 ...) stand for other hosts in tests and benchmarks.
THROTTLE_EXEMPT = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
_MSG_MORE = getattr(socket, "MSG_MORE", 0)
_ACCEPT_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_TIMEOUT_BODY = (
    "request head not received within header_timeout={seconds:g} s; send the request line and "
    "headers at once\n"
)


def format_peer(address: Any) -> str:
    if not address or not isinstance(address, tuple):
        return "unknown"
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Connection:
    """What the guard knows about one accepted connection."""

    __slots__ = (
        "peer",
        "request",
        "since",
        "sock",
        "started",
        "state",
        "task",
        "timer",
        "transport",
    )

    def __init__(self, sock: socket.socket, peer: str, now: float) -> None:
        self.sock = sock
        self.peer = peer
        self.state = HANDSHAKE
        self.since = now
        self.transport: asyncio.BaseTransport | None = None
        self.task: asyncio.Task[None] | None = None
        # The TLS task ran its first step (a task cancelled before that never runs its finally).
        self.started = False
        self.request: web.BaseRequest | None = None
        self.timer: asyncio.TimerHandle | None = None

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def reusable(self) -> bool:
        if self.state in _REUSABLE:
            return True
        # A handler waiting for a body that is still arriving (slow body): reusable too.
        return self.state == BUSY and self.request is not None and not self.request.content.is_eof()


class GuardedProtocol(asyncio.Protocol):
    """Passes every asyncio callback to aiohttp's protocol, telling the guard what happens."""

    def __init__(
        self, inner: asyncio.Protocol, guard: ConnectionGuard, connection: _Connection
    ) -> None:
        self._inner = inner
        self._guard = guard
        self._connection: _Connection | None = connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._connection is None or not self._guard.established(self._connection, transport):
            self._connection = None
            _abort(transport)
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


class _Failures:
    __slots__ = ("blocked_until", "closed", "count", "window")

    def __init__(self, now: float) -> None:
        self.window = now  # start of the current counting window
        self.count = 0  # failures in it
        self.blocked_until = 0.0  # monotonic time; 0: not blocked
        self.closed = 0  # connections refused TLS (tarpitted) during the current backoff


class FailureThrottle:
    """Failed handshakes and refused requests per source address; an address past
    ``failures_per_second`` gets no TLS work for ``failure_backoff`` seconds (see the module
    docstring). Runs on the listener's event loop only (no lock)."""

    def __init__(
        self,
        limits: Callable[[], ConnectionLimits],
        clock: Callable[[], float] = time.monotonic,
        on_throttle: Callable[[str, int, float], None] | None = None,
    ) -> None:
        self._limits = limits
        self._clock = clock
        # Told (address, failures, backoff seconds) when a backoff starts: the audit event.
        self._on_throttle = on_throttle
        self._addresses: OrderedDict[str, _Failures] = OrderedDict()
        self.closed = 0  # connections refused TLS (tarpitted), in all

    def blocked(self, address: str) -> bool:
        """True when a new connection from ``address`` is to be closed at once (and counted)."""
        entry = self._current(address, self._clock())
        if entry is None or not entry.blocked_until:
            return False
        entry.closed += 1
        self.closed += 1
        return True

    def _current(self, address: str, now: float) -> _Failures | None:
        """The entry of ``address``; one whose backoff is over is forgotten (and summed up)."""
        entry = self._addresses.get(address)
        if entry is None or not entry.blocked_until or now < entry.blocked_until:
            return entry
        if entry.closed:
            refusals.log(
                "connections refused TLS",
                logging.WARNING,
                "backoff of %s over: %d new connections from it got no TLS (held, then closed)",
                address,
                entry.closed,
            )
        del self._addresses[address]
        return None

    def failed(self, address: str) -> None:
        """One failed handshake or refused request from ``address``."""
        if address in THROTTLE_EXEMPT:
            return
        now = self._clock()
        entry = self._current(address, now)
        if entry is None or (
            not entry.blocked_until and now - entry.window >= FAILURE_WINDOW_SECONDS
        ):
            entry = _Failures(now)
            self._addresses[address] = entry
            if len(self._addresses) > MAX_THROTTLED_ADDRESSES:
                self._addresses.popitem(last=False)
        self._addresses.move_to_end(address)
        entry.count += 1
        limits = self._limits()
        if not entry.blocked_until and entry.count > limits.failures_per_second:
            entry.blocked_until = now + limits.failure_backoff
            refusals.log(
                "addresses throttled",
                logging.WARNING,
                "%s: %d failed TLS handshakes or refused requests within %g s "
                "(failures_per_second=%d); its new connections get no TLS for %g s (held unread, "
                "then closed)",
                address,
                entry.count,
                FAILURE_WINDOW_SECONDS,
                limits.failures_per_second,
                limits.failure_backoff,
            )
            if self._on_throttle is not None:
                self._on_throttle(address, entry.count, limits.failure_backoff)


class ConnectionGuard:
    """Tracks the connections of one listener and enforces :class:`ConnectionLimits`.

    Runs entirely on the listener's event loop (no locks needed). ``name`` appears in log lines
    (``est`` or ``console``)."""

    def __init__(
        self,
        limits: Callable[[], ConnectionLimits],
        name: str = "est",
        on_throttle: Callable[[str, int, float], None] | None = None,
    ) -> None:
        # A callable, so a reloaded configuration applies to the next connection.
        self._limits = limits
        self.name = name
        self._connections: dict[int, _Connection] = {}  # id(connection) -> connection
        self._by_transport: dict[int, _Connection] = {}  # id(transport) -> connection
        self.evictions = 0
        self.refused = 0
        self.throttle = FailureThrottle(limits, on_throttle=on_throttle)
        self._ceiling: tuple[int, float] | None = None  # (max connections, until monotonic)

    @property
    def limits(self) -> ConnectionLimits:
        limits = self._limits()
        if self._ceiling is not None:
            ceiling, until = self._ceiling
            if time.monotonic() >= until:
                self._ceiling = None
            elif ceiling < limits.max_connections:
                return replace(limits, max_connections=ceiling)
        return limits

    def out_of_descriptors(self) -> int:
        """accept() failed for lack of descriptors: evict EMFILE_EVICTIONS connections and hold
        the budget below today's count for a while; returns how many were closed."""
        closed = 0
        while closed < EMFILE_EVICTIONS and self.evict_one():
            closed += 1
        ceiling = max(1, len(self._connections))
        self._ceiling = (ceiling, time.monotonic() + EMFILE_CEILING_SECONDS)
        return closed

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def phases(self) -> dict[str, int]:
        """How many connections are in each phase (tests, diagnostics)."""
        counts: dict[str, int] = {}
        for connection in self._connections.values():
            counts[connection.state] = counts.get(connection.state, 0) + 1
        return counts

    # -- connection life cycle -----------------------------------------------------------------

    def admit(self, sock: socket.socket, peer: str) -> _Connection | None:
        """A socket was accepted: make room if at the cap; None means refuse it."""
        limits = self.limits
        if len(self._connections) >= limits.max_connections and not self.evict_one(limits):
            self.refused += 1
            refusals.log(
                f"{self.name} connections refused",
                logging.WARNING,
                "refused %s connection from %s: max_connections=%d reached and every connection "
                "is running a request",
                self.name,
                peer,
                limits.max_connections,
            )
            return None
        connection = _Connection(sock, peer, time.monotonic())
        self._connections[id(connection)] = connection
        return connection

    def established(self, connection: _Connection, transport: asyncio.BaseTransport) -> bool:
        """TLS is up; False if the guard dropped the connection meanwhile."""
        if self._connections.get(id(connection)) is not connection:
            return False
        connection.transport = transport
        connection.state = FRESH
        connection.since = time.monotonic()
        self._by_transport[id(transport)] = connection
        self._arm(connection, self.limits.header_timeout)
        return True

    def release(self, connection: _Connection) -> None:
        connection.cancel_timer()
        self._connections.pop(id(connection), None)
        if connection.transport is not None:
            self._by_transport.pop(id(connection.transport), None)

    def bytes_arrived(self, connection: _Connection) -> None:
        if self._connections.get(id(connection)) is not connection:
            return  # already closed by the guard, waiting for the TLS shutdown to finish
        if connection.state in (FRESH, IDLE):
            # The first byte of a request: its head must now be complete in time.
            connection.state = HEAD
            connection.since = time.monotonic()
            self._arm(connection, self.limits.header_timeout)

    def request_started(self, request: web.BaseRequest) -> None:
        connection = self._find(request.transport)
        if connection is not None:
            connection.state = BUSY
            connection.request = request
            connection.cancel_timer()

    def request_finished(self, transport: asyncio.BaseTransport | None) -> None:
        connection = self._find(transport)
        if connection is not None and connection.state == BUSY:
            connection.state = IDLE
            connection.request = None
            connection.since = time.monotonic()
            self._arm(connection, self.limits.idle_timeout)

    def evict_one(self, limits: ConnectionLimits | None = None) -> bool:
        """Close the oldest reusable connection; False if there is none."""
        candidates = [c for c in self._connections.values() if c.reusable()]
        if not candidates:
            return False
        oldest = min(candidates, key=lambda c: c.since)
        self.evictions += 1
        refusals.log(
            f"{self.name} {oldest.state} connections evicted",
            logging.INFO,
            "%s connection budget (max_connections=%d) reached: closed the %s connection from "
            "%s to make room",
            self.name,
            (limits or self.limits).max_connections,
            oldest.state,
            oldest.peer,
        )
        self._drop(oldest)
        return True

    def close_all_handshakes(self) -> None:
        """Listener stopping: abandon connections that never finished TLS."""
        for connection in list(self._connections.values()):
            if connection.state == HANDSHAKE:
                self._drop(connection)

    # -- aiohttp integration -------------------------------------------------------------------

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Marks a connection busy while its request is handled, and writes its access-log line
        (outermost middleware)."""
        self.request_started(request)
        started = time.monotonic()
        status: int | str = "-"
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            self.request_finished(request.transport)
            peer = self._find(request.transport)
            peer_text = peer.peer if peer else (request.remote or "unknown")
            if request.get(REFUSED_REQUEST_KEY):
                self.throttle.failed(address_of(peer_text))
            access(
                "request",
                listener=self.name,
                peer=peer_text,
                method=request.method,
                path=request.rel_url.raw_path,
                status=status,
                ms=f"{(time.monotonic() - started) * 1000:.1f}",
            )

    # -- internals -----------------------------------------------------------------------------

    def _find(self, transport: asyncio.BaseTransport | None) -> _Connection | None:
        return self._by_transport.get(id(transport)) if transport is not None else None

    def _arm(self, connection: _Connection, seconds: float) -> None:
        connection.cancel_timer()
        loop = asyncio.get_running_loop()
        connection.timer = loop.call_later(seconds, self._expire, connection)

    def _expire(self, connection: _Connection) -> None:
        connection.timer = None
        if self._connections.get(id(connection)) is not connection:
            return
        limits = self.limits
        transport = connection.transport
        if transport is None:
            return
        if connection.state == HEAD:
            body = _TIMEOUT_BODY.format(seconds=limits.header_timeout).encode()
            refusals.log(
                f"{self.name} slow request heads",
                logging.WARNING,
                "closed %s connection from %s: 408 request head not complete within "
                "header_timeout=%g s (slow or stalled client)",
                self.name,
                connection.peer,
                limits.header_timeout,
            )
            # No handler is running (the head is incomplete), so nothing else writes now.
            # A TCP/TLS stream's transport (uvloop's does not derive from WriteTransport).
            cast(asyncio.WriteTransport, transport).write(
                b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
        elif connection.state == FRESH:
            refusals.log(
                f"{self.name} silent connections",
                logging.INFO,
                "closed %s connection from %s: no request within header_timeout=%g s",
                self.name,
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
        self.release(connection)
        transport.close()

    def _drop(self, connection: _Connection) -> None:
        """Evict: free the slot and the descriptor now (abort, no TLS close_notify wait)."""
        self.release(connection)
        if connection.transport is not None:
            _abort(connection.transport)
        else:
            if connection.task is not None:
                connection.task.cancel()  # a started task closes its socket (or transport)
            if not connection.started:
                connection.sock.close()


class _Listener:
    """Stands in for :class:`asyncio.Server` in aiohttp's site (``sockets``, ``close``)."""

    def __init__(self, sock: socket.socket, site: GuardedSite) -> None:
        self._sock = sock
        self._site = site
        self.sockets = [sock]

    def close(self) -> None:
        self._site.stop_accepting()

    async def wait_closed(self) -> None:
        return None


class GuardedSite(web.BaseSite):
    """An aiohttp site listening through a :class:`ConnectionGuard` (TCP host/port or a socket):
    its own accept loop and TLS start (see the module docstring)."""

    __slots__ = (
        "_accepting",
        "_guard",
        "_host",
        "_listen",
        "_port",
        "_resume",
        "_reuse_address",
        "_sock",
        "_tasks",
    )

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
        self._listen: socket.socket | None = None
        self._accepting = False
        self._resume: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        _quiet_handshake_failures(asyncio.get_running_loop())
        if self._sock is not None:
            listen = self._sock
        else:
            host = (self._host or "127.0.0.1").strip("[]")
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            listen = socket.create_server(
                (host, self._port), family=family, backlog=self._backlog, reuse_port=False
            )
        listen.setblocking(False)
        self._listen = listen
        # aiohttp types _server as asyncio.Server; _Listener has the part aiohttp uses.
        self._server = _Listener(listen, self)  # type: ignore[assignment]  # duck-typed Server
        self._accepting = True
        asyncio.get_running_loop().add_reader(listen.fileno(), self._accept_ready)

    def stop_accepting(self) -> None:
        loop = asyncio.get_running_loop()
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        if self._listen is not None:
            if self._accepting:
                loop.remove_reader(self._listen.fileno())
            self._accepting = False
            self._listen.close()
            self._listen = None
        self._guard.close_all_handshakes()

    # -- accept loop ---------------------------------------------------------------------------

    def _accept_ready(self) -> None:
        listen = self._listen
        if listen is None:
            return
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = listen.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_OUT_OF_DESCRIPTORS:
                    self._out_of_descriptors(exc)
                # Else (ECONNABORTED and the like): the peer gave up while queued; go on.
                return
            sock.setblocking(False)
            peer = format_peer(address)
            if self._guard.throttle.blocked(str(address[0])):
                self._tarpit(sock, peer)  # this address keeps failing: no TLS work for it
                for observe in THROTTLE_OBSERVERS:
                    observe(self._guard.name)
                continue
            connection = self._guard.admit(sock, peer)
            if connection is None:
                sock.close()
                continue
            task = asyncio.get_running_loop().create_task(self._start_tls(connection))
            connection.task = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _tarpit(self, sock: socket.socket, peer: str) -> None:
        """Hold a connection of a backed-off address unread for TARPIT_SECONDS, then close it.
        It is in the handshake phase for the budget (evicted first when the cap is reached)."""
        connection = self._guard.admit(sock, peer)
        if connection is None:
            sock.close()
            return
        loop = asyncio.get_running_loop()
        connection.timer = loop.call_later(TARPIT_SECONDS, self._end_tarpit, connection)

    def _end_tarpit(self, connection: _Connection) -> None:
        connection.timer = None
        self._guard.release(connection)
        connection.sock.close()

    def _out_of_descriptors(self, exc: OSError) -> None:
        evicted = self._guard.out_of_descriptors()
        refusals.log(
            f"{self._guard.name} accept out of descriptors",
            logging.WARNING,
            "%s listener: accept() failed (%s); closed the %d oldest reusable connections, "
            "holding max_connections at %d for %g s; accepting again in %g s",
            self._guard.name,
            exc.strerror or exc,
            evicted,
            self._guard.limits.max_connections,
            EMFILE_CEILING_SECONDS,
            ACCEPT_PAUSE_SECONDS,
        )
        loop = asyncio.get_running_loop()
        if self._accepting and self._listen is not None:
            loop.remove_reader(self._listen.fileno())
            self._accepting = False
            self._resume = loop.call_later(ACCEPT_PAUSE_SECONDS, self._resume_accepting)

    def _resume_accepting(self) -> None:
        self._resume = None
        if self._listen is not None and not self._accepting:
            self._accepting = True
            asyncio.get_running_loop().add_reader(self._listen.fileno(), self._accept_ready)

    # -- TLS start -----------------------------------------------------------------------------

    async def _start_tls(self, connection: _Connection) -> None:
        connection.started = True
        sock = connection.sock
        handed_over = False
        hello: ClientHello | None = None
        timeout = self._guard.limits.tls_handshake_timeout
        server = self._runner.server
        assert server is not None and self._ssl_context is not None
        try:
            async with asyncio.timeout(timeout):
                hello = await self._read_hello(sock)
                refusal = refusal_alert(hello, self._ssl_context) if hello else None
                if refusal is not None:
                    # Logged first: once the alert is out, the peer (a test) may look at once.
                    self._handshake_failed(connection, hello, refusal[1], alert=refusal[0])
                    self._send_alert(sock, refusal[0], hello)
                    for observe in ALERT_OBSERVERS:
                        observe(refusal[0])
                    return
                handed_over = True
                await asyncio.get_running_loop().connect_accepted_socket(
                    lambda: GuardedProtocol(server(), self._guard, connection),
                    sock,
                    ssl=self._ssl_context,
                    ssl_handshake_timeout=timeout,
                    ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT_SECONDS,
                )
        except TimeoutError:
            self._handshake_failed(
                connection, hello, f"no TLS handshake within tls_handshake_timeout={timeout:g} s"
            )
        except asyncio.CancelledError:
            pass  # evicted or stopping; the socket is closed below or by its transport
        except (OSError, ssl.SSLError) as exc:
            self._handshake_failed(connection, hello, _reason(exc))
        except ValueError as exc:
            # Python's ssl cannot decode the client certificate it was given (a SAN DNS name
            # with non-ASCII bytes raises UnicodeDecodeError once OpenSSL has finished): the
            # connection is closed without an HTTP answer, logged as one line, no traceback.
            self._handshake_failed(connection, hello, f"unreadable client certificate: {exc}")
        finally:
            if connection.state == HANDSHAKE:
                self._guard.release(connection)
            if not handed_over:
                sock.close()

    async def _read_hello(self, sock: socket.socket) -> ClientHello | None:
        """The client's ClientHello, peeked (left for OpenSSL to read); None if not TLS."""
        header = await _peek(sock, 5)
        length = record_length(header)
        if length is None:
            return None
        return parse_client_hello(await _peek(sock, length))

    @staticmethod
    def _send_alert(sock: socket.socket, alert: int, hello: ClientHello | None) -> None:
        try:
            # Read what was peeked: closing with unread bytes would send a reset, and the
            # client could lose the alert.
            while sock.recv(65536):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            return
        try:
            # MSG_MORE (Linux): the alert leaves with the FIN of the shutdown in one segment,
            # one packet less per refused handshake under a flood.
            sock.send(alert_record(alert, hello), _MSG_MORE)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _handshake_failed(
        self,
        connection: _Connection,
        hello: ClientHello | None,
        reason: str,
        *,
        alert: int | None = None,
    ) -> None:
        self._guard.throttle.failed(address_of(connection.peer))
        access_handshake_failed(
            address_of(connection.peer),
            listener=self._guard.name,
            peer=connection.peer,
            sni=hello.server_name if hello else None,
            offered=hello.version_names if hello else None,
            alert=alert,
            reason=reason,
        )
        refusals.log(
            f"{self._guard.name} TLS handshakes refused",
            logging.WARNING,
            "TLS handshake from %s failed: %s",
            connection.peer,
            reason,
        )


def _abort(transport: asyncio.BaseTransport) -> None:
    """Drop a connection at once (no TLS close_notify wait); close() where abort is missing.

    Duck-typed, not ``isinstance(transport, asyncio.WriteTransport)``: uvloop's TLS transport
    has ``abort()`` but does not derive from asyncio's classes, and a ``close()`` there would
    wait for the peer's close_notify, keeping an evicted slow body's handler waiting."""
    abort = getattr(transport, "abort", None)
    if callable(abort):
        abort()
    else:
        transport.close()


async def _peek(sock: socket.socket, size: int) -> bytes:
    """Wait until ``size`` bytes are queued on ``sock`` (or EOF) and return them unread."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            data = sock.recv(size, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            data = None
        if data is not None:
            if len(data) >= size or not data:
                return data
            await asyncio.sleep(PEEK_RETRY_SECONDS)
            continue
        readable = loop.create_future()
        loop.add_reader(sock.fileno(), _wake, readable)
        try:
            await readable
        finally:
            loop.remove_reader(sock.fileno())


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# Loops whose exception handler already condenses handshake failures.
_QUIET_LOOPS: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def _quiet_handshake_failures(loop: asyncio.AbstractEventLoop) -> None:
    """Log asyncio's "SSL handshake failed" reports as one rate-limited line, not a traceback.

    asyncio reports a failed handshake through the loop's exception handler, whose default prints
    the traceback: a client could fill the log with them (one per connection). Everything else
    still reaches the previous handler. Installed once per loop.
    """
    if loop in _QUIET_LOOPS:
        return
    _QUIET_LOOPS.add(loop)
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("SSL handshake failed"):
            exc = context.get("exception")
            refusals.log(
                "TLS handshakes refused",
                logging.WARNING,
                "TLS handshake failed: %s",
                _reason(exc) if isinstance(exc, BaseException) else context.get("message"),
            )
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or exc.__class__.__name__
    return str(exc) or exc.__class__.__name__


__all__ = ["ConnectionGuard", "FailureThrottle", "GuardedProtocol", "GuardedSite", "format_peer"]
