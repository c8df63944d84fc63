"""The plain-HTTP revocation listener: OCSP (RFC 6960 App. A, RFC 5019 §5) and CRLs over http.

Why plain HTTP beside the HTTPS port: relying parties fetch OCSP answers and CRLs over http. An
https revocation URL needs a revocation check of the https server's own certificate first (a
loop), and many relying parties (browsers, Windows CryptoAPI, the CA/Browser Forum baseline
requirements) refuse or cannot follow one. The answers and CRLs are signed, so TLS adds nothing
to their integrity. It is off unless ``[revocation] port`` or ``serve --revocation-port`` asks for
it; when on, issued certificates point at it (see ``public_url.py``).

What it serves, and only that: ``POST /ocsp``, ``GET /ocsp/<base64 request>``, ``GET``/``HEAD``
``/crl`` and ``/crl/<generation>``. Anything else gets a 404 or 405 saying what this port is for.
The answers come from the worker's :class:`RevocationCache`, the one the HTTPS port uses:
pre-signed, never signed on the request path, except for requests with a nonce. A request seen
before without a nonce is looked up by its exact bytes (:meth:`RevocationCache.cached_answer`).

Why an ``asyncio.Protocol`` over httptools (llhttp, uvicorn's parser) rather than a second
aiohttp site on the EST app: it costs a quarter of the CPU. Measured with
benchmarks/bench_ocsp.py (16 clients, 2 workers, P-256 CA, 2-core machine, server CPU per
answer from /proc):

* keep-alive: a plain aiohttp site on the app cost 76 µs per answer, this protocol 17 µs;
* a new connection per request: 181 µs against 42 µs.

aiohttp builds a request object, runs the middlewares, builds a response object and a stream
writer for each request. Here an answer is a dictionary lookup and one write.

Bounds (what a hostile client could send; docs/security.md, "Plain-HTTP revocation listener"):

* the request target over MAX_TARGET_BYTES: 414; a head over MAX_HEAD_BYTES or more than
  MAX_HEADERS fields: 431. The connection is closed after either.
* a body over MAX_OCSP_REQUEST_BYTES: 413 before it is read (Content-Length), or as soon as a
  chunked body grows past it. The connection is closed.
* ``[limits]`` timeouts, checked by one sweep every SWEEP_SECONDS: ``header_timeout`` for a
  request head (408), ``body_timeout`` and ``body_min_rate`` for a body (408), ``idle_timeout``
  between requests and for a client that does not read its answers.
* at most ``max_connections``, lowered to this listener's share of the descriptors
  (``connection_budget("revocation")``). At the cap the oldest connection that is not being
  answered is closed. If every connection is being answered, the new one is closed.
* pipelined requests are answered in order, at most MAX_PIPELINED per read (then 429 and
  close). Reading pauses while an answer is being signed or the client leaves answers unread.
* malformed HTTP: 400 and close. A method other than GET, HEAD or POST: 405. An upgrade or
  CONNECT is answered (404: no resource is named) and the connection closed, never switched.
* malformed OCSP requests get ``malformedRequest`` and another CA's certificates
  ``unauthorized``, as on the HTTPS port.
* refusals are logged rate-limited, not written to the store's audit log: the listener is
  unauthenticated and a refusal costs microseconds, so a store write per refusal would turn a
  flood into database load.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import http
import logging
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any, cast

import httptools

from estkit.ca.ocsp import MAX_OCSP_REQUEST_BYTES, OCSP_RESPONSE_MEDIA_TYPE
from estkit.errors import EstkitError
from estkit.protocol.media import TEXT_PLAIN
from estkit.protocol.paths import CRL_PATH
from estkit.server.accesslog import access, access_logger, refusals
from estkit.server.app import (
    CRL_CACHE_CONTROL,
    CRL_MEDIA_TYPE,
    CRL_METHODS,
    MAX_OCSP_GET_PATH_CHARS,
    OCSP_GET_CACHE_CONTROL,
    OCSP_METHODS,
    OCSP_PATH,
    SERVER_HEADER,
    artifact_headers,
    check_ocsp_post,
    crl_artifact,
    etag_matches,
    method_not_allowed,
    ocsp_get_der,
)
from estkit.server.guard import format_peer
from estkit.server.limits import (
    MAX_HEADER_FIELD_BYTES,
    MAX_HEADERS,
    ConnectionLimits,
    body_deadline,
)
from estkit.server.refusal import Refusal
from estkit.server.revocation_cache import Artifact, RevocationCache
from estkit.server.state import ServerState

logger = logging.getLogger("estkit.server")

# Longest request target: the OCSP GET path limit (4096 characters) with room for a query a
# client may add. Beyond that, 414 from this listener (the HTTPS port answers 414 the same way).
MAX_TARGET_BYTES = MAX_OCSP_GET_PATH_CHARS + 256
# Bytes of all header fields of one request (names, values and separators): the HTTPS port's
# per-field limit (8 KiB) for the whole head. An OCSP client sends three or four short headers.
MAX_HEAD_BYTES = MAX_HEADER_FIELD_BYTES
# Requests one read may carry before the connection is refused with 429: relying parties send
# one request and wait. Thirty-two lets a pipelining client through and bounds the answers
# queued per read.
MAX_PIPELINED = 32
# Seconds between deadline checks of all connections. One sweep costs less than a timer per
# request, and a deadline is then kept to within this much.
SWEEP_SECONDS = 1.0
# Answer heads kept per (answer length, close): the answers of one responder differ in length
# by a few bytes (serial and signature lengths), so a few dozen entries cover them all.
MAX_POST_HEADS = 256
# Pending connections the kernel queues (as the HTTPS port).
LISTEN_BACKLOG = 1024
# Connection phases, as the HTTPS port's guard names them.
FRESH, HEAD, BODY, BUSY, IDLE, STALLED = "fresh", "head", "body", "busy", "idle", "stalled"
_REUSABLE = frozenset({FRESH, HEAD, BODY, IDLE, STALLED})
_NOT_HERE = (
    "this port serves only revocation status: POST /ocsp, GET /ocsp/<base64 request>, GET /crl "
    "and /crl/<generation>; everything else is on the HTTPS port"
)
_STATUS_LINES = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n" for status in http.HTTPStatus
}


_OCSP, _CRL = OCSP_PATH.encode(), CRL_PATH.encode()
_OCSP_SLASH, _CRL_SLASH = _OCSP + b"/", _CRL + b"/"
# The (path, status) of an OCSP answer to a POST, the most counted pair (RevocationListener.count).
_OCSP_ANSWERED = ("ocsp", 200)


def _origin_path(target: bytes) -> bytes:
    """The path of a request target without its query. An absolute-form target
    (``http://host/crl``), which RFC 9112 §3.2.2 says a server must accept, is reduced to its
    path; the authority is not looked at (this listener answers the same whatever host is named)."""
    path = target.partition(b"?")[0]
    scheme = path[:8].lower()
    if scheme.startswith((b"http://", b"https://")):
        authority_and_path = path.split(b"//", 1)[1]
        slash = authority_and_path.find(b"/")
        path = authority_and_path[slash:] if slash >= 0 else b"/"
    return path


def _path_kind(request: _Request | None) -> str:
    """The ``path`` a metric counts an answer under: ocsp, crl or other (a fixed set, never
    what the client sent)."""
    if request is None:
        return "other"
    target = _origin_path(request.target)
    if target == _OCSP or target.startswith(_OCSP_SLASH):
        return "ocsp"
    if target == _CRL or target.startswith(_CRL_SLASH):
        return "crl"
    return "other"


class _Refused(EstkitError):
    """Raised from a parser callback to stop parsing; the refusal is on the protocol."""


class _Request:
    """One parsed request (what the callbacks collected)."""

    __slots__ = ("body", "content_type", "if_none_match", "keep_alive", "method", "target")

    def __init__(self) -> None:
        self.target = b""
        self.content_type = ""
        self.if_none_match: str | None = None
        self.body: list[bytes] = []
        self.method = b""
        self.keep_alive = True


class _Clock:
    """The HTTP Date header, formatted once per second (RFC 9110 §6.6.1: an origin server with a
    clock sends it)."""

    def __init__(self) -> None:
        self._second = 0
        self._header = b""

    def date_header(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._header = f"Date: {email.utils.formatdate(now, usegmt=True)}\r\n".encode()
        return self._header


def _encode_response(
    status: int,
    headers: dict[str, str],
    body: bytes,
    date: bytes,
    *,
    close: bool,
    head_only: bool = False,
) -> bytes:
    lines = [_STATUS_LINES[status], f"Server: {SERVER_HEADER}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
    if status != http.HTTPStatus.NOT_MODIFIED:
        # RFC 9110 §8.6: a 304's Content-Length could only be the 200's; a 0 there would be
        # copied by an RFC 7234 cache into the stored answer's headers (§4.3.4). None is sent.
        lines.append(f"Content-Length: {len(body)}\r\n")
    if close:
        lines.append("Connection: close\r\n")
    return "".join(lines).encode("latin-1") + date + b"\r\n" + (b"" if head_only else body)


class RevocationProtocol(asyncio.Protocol):
    """One plain-HTTP connection of the revocation listener."""

    def __init__(self, listener: RevocationListener) -> None:
        self._listener = listener
        self._cache = listener.cache
        self._loop = listener.loop
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._queue: collections.deque[_Request] = collections.deque()
        self._request = _Request()
        self._head_bytes = 0
        self._headers = 0
        self._body_bytes = 0
        self._body_started = 0.0
        self._parsed_in_read = 0
        self._refusal: Refusal | None = None
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._reading_paused = False
        self._writing_paused = False
        self.phase = FRESH
        self.deadline = 0.0

    # -- asyncio callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self.deadline = self._loop.time() + self._listener.limits.header_timeout
        if not self._listener.admit(self):
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._listener.release(self)
        self._transport = None
        if self._task is not None:
            self._task.cancel()

    def pause_writing(self) -> None:
        # The client leaves its answers unread: stop reading its requests until it catches up.
        self._writing_paused = True
        self.phase = STALLED
        self.deadline = self._loop.time() + self._listener.limits.idle_timeout
        self._pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self.phase = BUSY
        self._drain()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._parsed_in_read = 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._closing = True  # the request was parsed and is answered; never switched
        except httptools.HttpParserCallbackError:
            self._closing = True
            if self._refusal is None:  # not ours: a bug in a callback
                logger.exception("revocation listener: request parsing failed")
                self._refusal = Refusal(400, "the request could not be parsed")
        except httptools.HttpParserError as exc:
            self._closing = True
            self._refusal = Refusal(400, f"malformed HTTP request: {exc}")
        self._drain()

    def eof_received(self) -> bool:
        """The client sent all it will send: answer what is queued, then close."""
        self._closing = True
        return bool(self._queue or self._task is not None)  # True: keep the write side open

    # -- parser callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._request = _Request()
        self._head_bytes = self._headers = self._body_bytes = 0
        self.phase = HEAD
        self.deadline = self._loop.time() + self._listener.limits.header_timeout

    def on_url(self, url: bytes) -> None:
        self._request.target += url
        if len(self._request.target) > MAX_TARGET_BYTES:
            self._refuse(
                414,
                f"request target over {MAX_TARGET_BYTES} bytes; an OCSP GET request is a few "
                "hundred",
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        self._headers += 1
        if self._head_bytes > MAX_HEAD_BYTES or self._headers > MAX_HEADERS:
            self._refuse(
                431,
                f"request head over {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} header fields; an "
                "OCSP client sends a few short headers",
            )
        if not 12 <= len(name) <= 14:  # none of the three fields read below
            return
        lowered = name.lower()
        if lowered == b"content-type":
            self._request.content_type = value.decode("latin-1")
        elif lowered == b"if-none-match":
            self._request.if_none_match = value.decode("latin-1")
        elif (
            lowered == b"content-length" and value.isdigit() and int(value) > MAX_OCSP_REQUEST_BYTES
        ):
            self._refuse(
                413,
                f"request body of {int(value)} bytes is over the limit of "
                f"{MAX_OCSP_REQUEST_BYTES} bytes; an OCSP request is a few hundred bytes",
            )

    def on_headers_complete(self) -> None:
        self.phase = BODY
        self._body_started = self._loop.time()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > MAX_OCSP_REQUEST_BYTES:
            self._refuse(
                413,
                f"request body is over the limit of {MAX_OCSP_REQUEST_BYTES} bytes; an OCSP "
                "request is a few hundred bytes",
            )
        self._request.body.append(body)

    def on_message_complete(self) -> None:
        request = self._request
        request.method = self._parser.get_method()
        request.keep_alive = self._parser.should_keep_alive()
        self.phase = BUSY
        self._parsed_in_read += 1
        if self._parsed_in_read > MAX_PIPELINED:
            self._refuse(
                429,
                f"more than {MAX_PIPELINED} pipelined requests at once; send a request and "
                "wait for its answer",
            )
        self._queue.append(request)

    def _refuse(self, status: int, reason: str) -> None:
        self._refusal = Refusal(status, reason)
        raise _Refused

    # -- answering -----------------------------------------------------------------------------

    def _drain(self) -> None:
        """Answer queued requests in order, as far as they can be answered now."""
        while self._queue and self._task is None and not self._writing_paused:
            if self._transport is None:
                return
            request = self._queue.popleft()
            self._answer(request)
            if not request.keep_alive:  # answered with Connection: close; nothing after it
                self._queue.clear()
                self._refusal = None  # about bytes after it (RFC 9112 §9.6): not answered
                self._closing = True
        if self._queue or self._task is not None or self._writing_paused:
            self._pause_reading()
            return
        if self._closing:
            if self._refusal is not None:  # once: resume_writing drains again while closing
                self._write_refusal(self._refusal, None, close=True)
                self._refusal = None
            self._close()
            return
        if self.phase == BUSY:  # no next request begun in the bytes read so far
            self.phase = IDLE
            self.deadline = self._loop.time() + self._listener.limits.idle_timeout
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            # A request begun in the bytes read before the pause: its clock starts now, as
            # nothing more of it was read while the earlier ones were answered.
            if self.phase == HEAD:
                self.deadline = self._loop.time() + self._listener.limits.header_timeout
            elif self.phase == BODY:
                self._body_started = self._loop.time()
            self._transport.resume_reading()

    def _answer(self, request: _Request) -> None:
        target = _origin_path(request.target)
        try:
            if target == _OCSP or target.startswith(_OCSP_SLASH):
                der = self._ocsp_der(request, target.decode("latin-1"))
                artifact = self._cache.cached_answer(der)
                if artifact is not None:
                    self._write_ocsp(request, artifact.body, artifact)
                    return
                self._later(request, self._ocsp_later(request, der))
            elif target == _CRL or target.startswith(_CRL_SLASH):
                if request.method.decode("latin-1") not in CRL_METHODS:
                    raise method_not_allowed(request.method.decode("latin-1"), CRL_METHODS, "crl")
                generation = target[len(CRL_PATH) + 1 :].decode("latin-1") or None
                self._later(request, self._crl_later(request, generation))
            else:
                raise Refusal(404, _NOT_HERE)
        except Refusal as refusal:
            self._write_refusal(refusal, request, close=not request.keep_alive)

    def _ocsp_der(self, request: _Request, target: str) -> bytes:
        if request.method == b"POST":
            check_ocsp_post(target, request.content_type)
            return b"".join(request.body)
        if request.method == b"GET":
            return ocsp_get_der(target)
        raise method_not_allowed(request.method.decode("latin-1"), OCSP_METHODS, "ocsp")

    def _later(self, request: _Request, coroutine: Any) -> None:
        """Answer on a task (a signature, a CRL); the next request waits for it."""
        self._task = self._loop.create_task(coroutine)
        self._task.add_done_callback(self._answered)

    def _answered(self, task: asyncio.Task[None]) -> None:
        self._task = None
        if not task.cancelled():
            self._drain()

    async def _ocsp_later(self, request: _Request, der: bytes) -> None:
        await self._guarded(request, self._ocsp_answer(request, der))

    async def _ocsp_answer(self, request: _Request, der: bytes) -> None:
        answer = await self._cache.ocsp(der)
        self._write_ocsp(request, answer.body, answer.artifact)

    async def _crl_later(self, request: _Request, generation: str | None) -> None:
        await self._guarded(request, self._crl_answer(request, generation))

    async def _crl_answer(self, request: _Request, generation: str | None) -> None:
        artifact = await crl_artifact(self._listener.state, self._cache, generation)
        self._write_artifact(request, artifact, CRL_MEDIA_TYPE, CRL_CACHE_CONTROL)

    async def _guarded(self, request: _Request, answer: Any) -> None:
        """Run ``answer``; a Refusal becomes its text answer, a bug a 500 with an incident."""
        try:
            await answer
        except Refusal as refusal:
            self._write_refusal(refusal, request, close=not request.keep_alive)
        except Exception:
            incident = secrets.token_hex(6)
            logger.exception("incident %s: revocation listener %s", incident, request.target[:80])
            text = f"internal server error (incident {incident}); the server log has the details"
            self._write_refusal(Refusal(500, text), request, close=True)
            self._closing = True

    def _write_ocsp(self, request: _Request, body: bytes, artifact: Artifact | None) -> None:
        if artifact is not None and request.method == b"GET":
            self._write_artifact(
                request, artifact, OCSP_RESPONSE_MEDIA_TYPE, OCSP_GET_CACHE_CONTROL
            )
            return
        if self._transport is None:
            return
        # The answer to a POST: its head depends only on the length and the Connection header,
        # so it is made once per length (a fifth of the listener's Python time per answer).
        listener = self._listener
        head = listener.post_head(len(body), not request.keep_alive)
        self._transport.write(head + listener.clock.date_header() + b"\r\n" + body)
        answers = listener.answers  # listener.count("ocsp", 200), without the call
        answers[_OCSP_ANSWERED] = answers.get(_OCSP_ANSWERED, 0) + 1
        if access_logger.isEnabledFor(logging.INFO):
            self._access(request, 200)

    def _write_artifact(
        self, request: _Request, artifact: Artifact, content_type: str, cache_control: str
    ) -> None:
        headers = artifact_headers(artifact, cache_control)
        if etag_matches(request.if_none_match, artifact.etag):
            self._write(request, 304, headers, b"", head_only=True)
            return
        headers["Content-Type"] = content_type
        self._write(request, 200, headers, artifact.body, head_only=request.method == b"HEAD")

    def _write(
        self,
        request: _Request | None,
        status: int,
        headers: dict[str, str],
        body: bytes,
        *,
        close: bool = False,
        head_only: bool = False,
    ) -> None:
        if self._transport is None:
            return
        close = close or request is None or not request.keep_alive
        # RFC 9110 §9.3.2: no content after the head of an answer to HEAD, refusals included;
        # a body would be read as the start of the next answer on this connection.
        head_only = head_only or (request is not None and request.method == b"HEAD")
        date = self._listener.clock.date_header()
        self._transport.write(
            _encode_response(status, headers, body, date, close=close, head_only=head_only)
        )
        self._listener.count(_path_kind(request), status)
        if access_logger.isEnabledFor(logging.INFO) and request is not None:
            self._access(request, status)

    def _access(self, request: _Request, status: int) -> None:
        access(
            "request",
            listener="revocation",
            peer=self._peer(),
            method=request.method.decode("latin-1"),
            path=request.target[:200].decode("latin-1"),
            status=status,
        )

    def _write_refusal(self, refusal: Refusal, request: _Request | None, *, close: bool) -> None:
        refusals.log(
            "revocation listener refusals",
            logging.WARNING,
            "refused %s %s %s on the revocation listener: %d %s",
            self._peer(),
            request.method.decode("latin-1") if request else "-",
            request.target[:80].decode("latin-1") if request else "-",
            refusal.status,
            refusal.reason,
        )
        headers = {"Content-Type": TEXT_PLAIN, **dict(refusal.headers)}
        body = (refusal.reason.rstrip("\n") + "\n").encode("utf-8")
        self._write(request, refusal.status, headers, body, close=close)

    def _peer(self) -> str:
        return format_peer(self._transport.get_extra_info("peername") if self._transport else None)

    # -- connection control --------------------------------------------------------------------

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()

    def _close(self) -> None:
        self._closing = True
        # What is buffered goes out before the socket closes, if the client reads it: until
        # then the connection is no longer being answered (evictable at the cap) and is dropped
        # after idle_timeout (expire), never kept for a client that does not read.
        self.phase = STALLED
        self.deadline = self._loop.time() + self._listener.limits.idle_timeout
        if self._transport is not None:
            self._transport.close()

    def reusable(self) -> bool:
        return self.phase in _REUSABLE and self._task is None

    def expire(self, now: float, limits: ConnectionLimits) -> None:
        """Close the connection if its phase's deadline has passed (the listener's sweep)."""
        if self.phase == BUSY or self._task is not None:
            # Being answered (the next request's head or body may have begun in the same read):
            # the cache bounds the signing it may wait for; a 408 now would go out ahead of it.
            return
        if self.phase == BODY:
            deadline = body_deadline(self._body_started, self._body_bytes, limits)
        else:
            deadline = self.deadline
        if now < deadline:
            return
        if self.phase in (HEAD, BODY):
            what = "request head" if self.phase == HEAD else "request body"
            limit = (
                f"header_timeout={limits.header_timeout:g} s"
                if self.phase == HEAD
                else f"body_timeout={limits.body_timeout:g} s at body_min_rate="
                f"{limits.body_min_rate:g} bytes/s"
            )
            self._queue.clear()
            text = f"{what} not received within {limit}; send the whole request at once"
            self._write_refusal(Refusal(408, text), None, close=True)
        elif self.phase == STALLED:
            # It has not read its answers for idle_timeout: a graceful close would wait for it to
            # read what is buffered (up to megabytes in the kernel), which it may never do.
            self.abort()
            return
        self._close()

    def abort(self) -> None:
        """Drop the connection now (eviction, shutdown): its descriptor is freed at once."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()


class RevocationListener:
    """The plain-HTTP revocation listener of one worker process (see the module docstring)."""

    def __init__(
        self,
        state: ServerState,
        cache: RevocationCache,
        limits: Callable[[], ConnectionLimits],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.state = state
        self.cache = cache
        self._limits = limits
        # Read once per sweep, not per request: an edited [limits] table applies within a
        # second (the HTTPS port reads it per connection).
        self.limits = limits()
        self.loop = loop
        self.clock = _Clock()
        # Open connections in the order they were accepted (the oldest is evicted first).
        self._connections: dict[RevocationProtocol, None] = {}
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.evictions = 0
        self.refused = 0
        self._post_heads: dict[tuple[int, bool], bytes] = {}
        # Answers by (path, status) since the last sweep, and what the sweep hands them to (the
        # Prometheus counters when metrics are on). Counted in a dict and handed over once per
        # sweep: a metric update per answer would be a tenth of an answer's cost.
        self.answers: dict[tuple[str, int], int] = {}
        self.on_counts: Callable[[dict[tuple[str, int], int], dict[str, int]], None] | None = None
        self._counted_drops = (0, 0)

    def count(self, path: str, status: int) -> None:
        key = (path, status)
        self.answers[key] = self.answers.get(key, 0) + 1

    def flush_counts(self) -> None:
        """Hand the answers and dropped connections since the last call to ``on_counts``."""
        answers, self.answers = self.answers, {}
        evicted, refused = self._counted_drops
        drops = {"evicted": self.evictions - evicted, "refused": self.refused - refused}
        self._counted_drops = (self.evictions, self.refused)
        if self.on_counts is not None and (answers or any(drops.values())):
            self.on_counts(answers, {reason: n for reason, n in drops.items() if n})

    def post_head(self, length: int, close: bool) -> bytes:
        """The head of a POST's OCSP answer of ``length`` bytes, up to the Date header."""
        key = (length, close)
        head = self._post_heads.get(key)
        if head is None:
            if len(self._post_heads) >= MAX_POST_HEADS:
                self._post_heads.clear()
            headers = {"Content-Type": OCSP_RESPONSE_MEDIA_TYPE, "Cache-Control": "no-store"}
            head = _encode_response(200, headers, b"", b"", close=close)[:-2]
            head = head.replace(b"Content-Length: 0\r\n", b"Content-Length: %d\r\n" % length)
            self._post_heads[key] = head
        return head

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def start(self, host: str, port: int, sock: socket.socket | None = None) -> int:
        """Listen on ``sock`` (bound by the supervisor, shared by the workers) or on
        ``host:port``; returns the bound port."""
        if sock is not None:
            server = await self.loop.create_server(
                lambda: RevocationProtocol(self), sock=sock, backlog=LISTEN_BACKLOG
            )
        else:
            server = await self.loop.create_server(
                lambda: RevocationProtocol(self),
                host=host.strip("[]"),
                port=port,
                backlog=LISTEN_BACKLOG,
                reuse_address=True,
            )
        self._server = server
        self._sweeper = self.loop.call_later(SWEEP_SECONDS, self._sweep)
        return int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._server is not None:
            self._server.close()
            for connection in list(self._connections):
                connection.abort()
            await self._server.wait_closed()
            self._server = None
        self.flush_counts()

    def admit(self, connection: RevocationProtocol) -> bool:
        """A connection arrived: make room at the cap; False means close it."""
        cap = self.limits.max_connections
        if len(self._connections) >= cap:
            oldest = next((c for c in self._connections if c.reusable()), None)
            if oldest is None:
                self.refused += 1
                refusals.log(
                    "revocation connections refused",
                    logging.WARNING,
                    "refused a revocation listener connection: max_connections=%d reached and "
                    "every connection is being answered",
                    cap,
                )
                return False
            self.evictions += 1
            refusals.log(
                "revocation connections evicted",
                logging.INFO,
                "revocation listener at max_connections=%d: closed the oldest %s connection",
                cap,
                oldest.phase,
            )
            self.release(oldest)
            oldest.abort()
        self._connections[connection] = None
        return True

    def release(self, connection: RevocationProtocol) -> None:
        self._connections.pop(connection, None)

    def _sweep(self) -> None:
        self._sweeper = self.loop.call_later(SWEEP_SECONDS, self._sweep)
        self.flush_counts()
        now, limits = self.loop.time(), self._limits()
        self.limits = limits
        for connection in list(self._connections):
            connection.expire(now, limits)


__all__ = [
    "MAX_HEAD_BYTES",
    "MAX_PIPELINED",
    "MAX_TARGET_BYTES",
    "RevocationListener",
    "RevocationProtocol",
]
