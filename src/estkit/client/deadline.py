"""One overall deadline per HTTP exchange, and cancellation of an exchange in flight.

Why: httpx's timeouts apply to each socket operation. A hostile server that sends its headers
with ``Content-Length: 100000`` and then one byte every two seconds never trips a 3-second read
timeout and keeps the caller reading for days. Here the timeout the caller gives is the budget of
the WHOLE exchange (connect + TLS + request + headers + body): every socket operation of a
blocking client is limited to what is left of it, so the exchange fails at the deadline, whatever
the server does. The asyncio client gets the same budget from ``asyncio.timeout``.

The blocking client's sockets are reached through httpcore's network-backend interface (a
public httpcore API); the backend of an ``httpx.Client``'s connection pool is wrapped once, on
the first request (:func:`overall_deadline`).

Cancellation (the NMOS agent stopping on SIGTERM): code that may have to abandon its exchanges
runs them inside :func:`cancellable` with a ``threading.Event``. Once the event is set, no socket
operation starts any more (:class:`RequestCancelled`), and a signal handler may call
:func:`interrupt_blocking_io` to abandon the one the main thread is blocked in. Neither happens
in the middle of writing a file: only inside socket operations.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from estkit.errors import EstkitError


class RequestCancelled(EstkitError):
    """The exchange was abandoned because its caller is stopping (not a server failure).

    Deliberately not an ``EstError``: retry loops must not count it as a failed attempt.
    """


@dataclass(frozen=True)
class _Scope:
    deadline: float | None  # time.monotonic() value
    seconds: float | None
    cancel: threading.Event | None


_scope: ContextVar[_Scope | None] = ContextVar("estkit_exchange_scope", default=None)
_cancel: ContextVar[threading.Event | None] = ContextVar("estkit_cancel_event", default=None)
# The scope a thread is blocked in right now (read by a signal handler on the main thread).
_blocking = threading.local()


def deadline_message(seconds: float | None) -> str:
    return f"the exchange did not complete within its overall deadline of {seconds:g} s"


def _check(scope: _Scope | None) -> float | None:
    """Remaining seconds of ``scope`` (None: no deadline); raises when cancelled or expired."""
    if scope is None:
        return None
    if scope.cancel is not None and scope.cancel.is_set():
        raise RequestCancelled("stopped before the exchange with the server completed")
    if scope.deadline is None:
        return None
    remaining = scope.deadline - time.monotonic()
    if remaining <= 0:
        raise httpcore.ReadTimeout(deadline_message(scope.seconds))
    return remaining


def _clamp(timeout: float | None) -> float | None:
    remaining = _check(_scope.get())
    if remaining is None:
        return timeout
    return remaining if timeout is None else min(timeout, remaining)


@contextlib.contextmanager
def _io() -> Iterator[None]:
    """Marks a blocking socket operation; a deadline that expired during it is named as such."""
    scope = _scope.get()
    previous = getattr(_blocking, "scope", None)
    _blocking.scope = scope
    try:
        yield
    except httpcore.TimeoutException as exc:
        deadline = scope.deadline if scope is not None else None
        if scope is not None and deadline is not None and time.monotonic() >= deadline:
            raise type(exc)(deadline_message(scope.seconds)) from exc
        raise
    finally:
        _blocking.scope = previous


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _io():
            return self._inner.read(max_bytes, _clamp(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        with _io():
            self._inner.write(buffer, _clamp(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        with _io():
            return _DeadlineStream(
                self._inner.start_tls(ssl_context, server_hostname, _clamp(timeout))
            )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        with _io():
            stream = self._inner.connect_tcp(
                host, port, _clamp(timeout), local_address, socket_options
            )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        with _io():
            stream = self._inner.connect_unix_socket(path, _clamp(timeout), socket_options)
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _install(http: httpx.Client) -> None:
    """Wrap the network backend of ``http``'s connection pool (once).

    Our clients may wrap the ``httpx.HTTPTransport`` (``AuthRetryTransport`` does): follow the
    ``_inner`` links down to the transport that owns the pool.
    """
    transport: Any = http._transport
    while not hasattr(transport, "_pool") and hasattr(transport, "_inner"):
        transport = transport._inner
    pool = transport._pool
    backend = pool._network_backend
    if not isinstance(backend, _DeadlineBackend):
        pool._network_backend = _DeadlineBackend(backend)


def _seconds(http: httpx.Client | httpx.AsyncClient) -> float | None:
    # Every client of ours is made with one number for all phases (http_client_options).
    return http.timeout.read


@contextlib.contextmanager
def overall_deadline(http: httpx.Client, seconds: float | None = None) -> Iterator[None]:
    """Run one exchange on ``http`` within ``seconds`` (default: the client's timeout)."""
    _install(http)
    budget = _seconds(http) if seconds is None else seconds
    deadline = time.monotonic() + budget if budget is not None else None
    token = _scope.set(_Scope(deadline, budget, _cancel.get()))
    try:
        _check(_scope.get())
        yield
    finally:
        _scope.reset(token)


@contextlib.asynccontextmanager
async def async_overall_deadline(
    http: httpx.AsyncClient, seconds: float | None = None
) -> AsyncIterator[None]:
    """The asyncio form of :func:`overall_deadline` (the event loop enforces it)."""
    # Imported here: only the asyncio client gets this far, and importing asyncio costs the
    # blocking client's commands ~20 ms of start-up (issue 23).
    import asyncio

    budget = _seconds(http) if seconds is None else seconds
    try:
        async with asyncio.timeout(budget):
            yield
    except TimeoutError:
        raise httpx.ReadTimeout(deadline_message(budget)) from None


@contextlib.contextmanager
def cancellable(event: threading.Event | None) -> Iterator[None]:
    """Exchanges started inside stop (raise :class:`RequestCancelled`) once ``event`` is set."""
    token = _cancel.set(event)
    try:
        if event is not None and event.is_set():
            raise RequestCancelled("stopped before the exchange with the server started")
        yield
    finally:
        _cancel.reset(token)


def interrupt_blocking_io() -> None:
    """For a signal handler: abandon the socket operation this thread is blocked in, if its
    exchange was made cancellable and has been cancelled (raises :class:`RequestCancelled`)."""
    scope: _Scope | None = getattr(_blocking, "scope", None)
    if scope is not None and scope.cancel is not None and scope.cancel.is_set():
        raise RequestCancelled("stopped while waiting for the server")
