"""Start the EST server: in a background thread (tests, demos) or in the foreground (CLI).

Why the same code path for both: what the tests exercise is what `estkit server serve` runs.

``--workers N`` forks N processes after binding one listening socket: the kernel hands each new
connection to one of them, every worker has its own event loop, store connection and store thread,
and the store's PRIMARY KEY on the serial keeps serials unique across all of them. Without
``--workers`` there is one worker per CPU (:func:`default_workers`): a TLS handshake is CPU work,
and one Python process uses one core (issue 16 measured 1.5x the enrollments/s with 2 workers on
2 cores). Event loops are uvloop's where it is installed (:func:`new_event_loop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import ipaddress
import logging
import os
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict

from aiohttp import web
from cryptography import x509

from estkit.protocol.certs import sha256_fingerprint
from estkit.server import metrics
from estkit.server.app import REVOCATION_KEY, create_app, record_throttled
from estkit.server.config import ConfigError, ServerConfig
from estkit.server.guard import ConnectionGuard, GuardedSite
from estkit.server.limits import (
    MAX_HEADER_FIELD_BYTES,
    MAX_HEADERS,
    connection_budget,
    within_budget,
)
from estkit.server.ra import ra_trust_pem
from estkit.server.revocation_http import RevocationListener
from estkit.server.state import DIGEST_SECRET_BYTES, ServerState
from estkit.server.tls import CertificatePair, ServerTlsContext, build_server_context

logger = logging.getLogger("estkit.server")

# Seconds to wait for a background server to come up before declaring failure.
STARTUP_TIMEOUT_SECONDS = 30.0
# Seconds open connections get to finish on shutdown (foreground: a deploy should not hang).
SHUTDOWN_TIMEOUT_SECONDS = 5.0
# Background servers (tests) close faster: idle keep-alive connections are simply dropped.
THREAD_SHUTDOWN_TIMEOUT_SECONDS = 1.0
# Pending connections the kernel queues; enrollment bursts (a rack of devices powering up) are
# short and a deep queue costs nothing.
LISTEN_BACKLOG = 1024
MAX_WORKERS = 64
# Seconds aiohttp keeps reading (and discarding) a body it answered early, e.g. with 408/413,
# so the client sees the answer rather than a reset (aiohttp: 10 s, which let a refused slow body
# hold its descriptor 10 s more).
LINGERING_SECONDS = 1.0
# aiohttp's keep-alive timeout as a multiple of the guard's idle/header timeouts (a backstop).
KEEPALIVE_BACKSTOP_FACTOR = 2
# Environment variable that picks the event loop: "uvloop" (the default when it is installed) or
# "asyncio" (the standard library's; for comparing, or if uvloop misbehaves on a platform).
EVENT_LOOP_ENV = "ESTKIT_EVENT_LOOP"
# prctl(2) option: the signal a process gets when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


def default_workers(data_dir: Path | None = None) -> int:
    """Worker processes when none are asked for: one per CPU this process may run on (1 on a
    1-core machine, where a second process would only add a fork and a store connection),
    capped at :data:`MAX_WORKERS`. One when the CA keys of ``data_dir`` live in a PKCS#11
    token: several worker processes signing through one SoftHSM2 token intermittently lost
    connections in our tests, so more than one token worker must be asked for explicitly."""
    if data_dir is not None and any((data_dir / "ca").glob("generations/*/*.uri")):
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when installed (and not turned off with ESTKIT_EVENT_LOOP=asyncio),
    else asyncio's. Why: the server's time goes to many short TLS connections, and uvloop's
    transports and TLS layer are compiled: one worker at 16 clients spent 3.3 instead of 3.7 ms
    of CPU per enrollment (issue 16, shared 2-core machine)."""
    if os.environ.get(EVENT_LOOP_ENV, "uvloop").strip().lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _run_loop(coroutine: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` on :func:`new_event_loop`."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(coroutine)


def format_url(host: str, port: int) -> str:
    """``https://host:port`` with IPv6 literals bracketed, no trailing slash."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"https://{shown}:{port}"


def url_host(bind_host: str, certificate_pem_path: Path) -> str:
    """The host name clients should use to reach a server bound to ``bind_host``.

    Why: the server certificate names DNS names, not addresses (BCP-003-01 T4), so a server bound
    to 127.0.0.1 is reached as ``localhost`` when its certificate says so; a URL with the address
    would fail hostname verification.
    """
    try:
        cert = x509.load_pem_x509_certificates(certificate_pem_path.read_bytes())[0]
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return bind_host
    dns = san.get_values_for_type(x509.DNSName)
    addresses = {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    try:
        address = ipaddress.ip_address(bind_host)
    except ValueError:
        return bind_host  # already a name
    if bind_host in addresses:
        return bind_host
    if (address.is_loopback or address.is_unspecified) and "localhost" in dns:
        return "localhost"
    return dns[0] if dns else bind_host


@dataclass(frozen=True)
class ServerInfo:
    """What a started server tells its caller (used for the CLI banner)."""

    url: str
    host: str
    port: int
    data_dir: Path
    workers: int
    ca_fingerprint: str
    verify_in_app: bool
    labels: tuple[str, ...] = ()
    metrics_url: str | None = None
    # The plain-HTTP revocation listener (http://host:port), None when it is off.
    revocation_url: str | None = None


@dataclass(frozen=True)
class RevocationAddress:
    """Where the plain-HTTP revocation listener listens (revocation_http.py): ``host`` and
    ``port``, or a socket the supervisor bound for its workers."""

    host: str
    port: int
    sock: socket.socket | None = None


def revocation_address(
    config: ServerConfig,
    host: str | None = None,
    port: int | None = None,
    est_host: str | None = None,
) -> RevocationAddress | None:
    """The listener's address from flags (``host``/``port``) over ``[revocation]``, None when
    it is off; its host defaults to the EST port's (``est_host``, else the configuration's)."""
    port = config.revocation_port if port is None else port
    if port is None:
        return None
    if config.upstream is not None:
        raise ConfigError(
            "this server is a registration authority ([upstream]): the upstream CA answers OCSP "
            "and publishes the CRL, so it has no revocation listener"
        )
    return RevocationAddress(host or config.revocation_host or est_host or config.host, port)


def _tls_context(state: ServerState) -> ServerTlsContext:
    config = state.config
    pairs = [CertificatePair(t.certificate, t.key) for t in config.tls_certificates]
    fallback = (
        "".join(root.certificate.read_text() for root in config.trusted_client_roots)
        + state.authority.cacerts_path.read_text()
        + ra_trust_pem(config)  # foreign RA certificates (issue 21)
    )
    return build_server_context(pairs, fallback_roots_pem=fallback, reload=True)


def _info(
    state: ServerState,
    host: str,
    port: int,
    workers: int,
    tls: ServerTlsContext,
    revocation: RevocationAddress | None = None,
) -> ServerInfo:
    return ServerInfo(
        url=format_url(url_host(host, state.config.tls_certificates[0].certificate), port)
        if state.config.tls_certificates
        else format_url(host, port),
        host=host,
        port=port,
        data_dir=state.data_dir,
        workers=workers,
        ca_fingerprint=sha256_fingerprint(state.authority.root_certificate),
        verify_in_app=tls.verify_in_app,
        labels=tuple(sorted(state.config.labels)),
        revocation_url=None
        if revocation is None
        else "http" + format_url(revocation.host, revocation.port)[5:],
    )


# Audit writes started from synchronous callbacks (the failure throttle), kept referenced until
# done (the event loop holds tasks weakly).
_BACKGROUND: set[asyncio.Task[None]] = set()


def _in_background(coroutine: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(coroutine)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


async def _start(
    state: ServerState,
    *,
    host: str,
    port: int,
    sock: socket.socket | None,
    shutdown_timeout: float,
    revocation: RevocationAddress | None = None,
) -> tuple[web.AppRunner, int, ServerTlsContext, RevocationAddress | None]:
    """Start the EST site (and the revocation listener when ``revocation`` is given); the
    runner, the bound EST port, the TLS context and the revocation listener's bound address."""
    tls = _tls_context(state)
    if metrics.active():
        metrics.watch_handshakes(tls.context)
    await state.run(state.check_store)
    limits = state.config.limits
    # Header/idle timeouts and the connection cap (see guard.py); it reads the limits from the
    # configuration each time, so an edited [limits] table applies without a restart.
    # max_connections is capped by this listener's share of RLIMIT_NOFILE (raised to the hard
    # limit here), so the console port and the store always keep theirs.
    budget = connection_budget("est", revocation_listener=revocation is not None)
    guard = ConnectionGuard(
        lambda: within_budget(state.config.limits, budget),
        name="est",
        on_throttle=lambda address, failures, backoff: _in_background(
            record_throttled(state, address, failures, backoff)
        ),
    )
    app = create_app(state)
    app.middlewares.insert(0, guard.middleware)  # outermost: marks the connection busy
    listeners: list[RevocationListener] = []

    async def stop_listeners(_app: web.Application) -> None:
        for listener in listeners:  # before the revocation cache stops (on_cleanup)
            await listener.stop()

    app.on_shutdown.append(stop_listeners)
    if metrics.active():
        app.middlewares.insert(1, metrics.middleware)  # times what the handlers answer
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=shutdown_timeout,
        # The guard closes idle and slow connections (with a 408 where due); aiohttp's own
        # keep-alive timer, which would close them silently, is only a backstop behind it.
        keepalive_timeout=KEEPALIVE_BACKSTOP_FACTOR
        * max(limits.idle_timeout, limits.header_timeout),
        max_line_size=MAX_HEADER_FIELD_BYTES,
        max_field_size=MAX_HEADER_FIELD_BYTES,
        max_headers=MAX_HEADERS,
        lingering_time=LINGERING_SECONDS,
        # EST bodies are never content-coded; decompressing would only invite zip bombs. The
        # handler refuses a Content-Encoding with 415.
        auto_decompress=False,
    )
    await runner.setup()
    site = GuardedSite(
        runner,
        guard,
        ssl_context=tls.context,
        host=host,
        port=port,
        sock=sock,
        backlog=LISTEN_BACKLOG,
    )
    await site.start()
    bound_port = port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            bound_port = int(address[1])
            break
    state.public_port = bound_port  # AIA/CDP URLs in issued certificates (public_url.py)
    if revocation is not None:
        revocation_budget = connection_budget("revocation")
        listener = RevocationListener(
            state,
            app[REVOCATION_KEY],
            lambda: within_budget(state.config.limits, revocation_budget),
            asyncio.get_running_loop(),
        )
        if metrics.active():
            listener.on_counts = metrics.count_revocation
        listeners.append(listener)
        try:
            revocation_port = await listener.start(
                revocation.host, revocation.port, revocation.sock
            )
        except BaseException:
            await runner.cleanup()
            raise
        revocation = RevocationAddress(revocation.host, revocation_port)
        state.revocation_port = revocation_port  # AIA/CDP point at it (public_url.py)
    return runner, bound_port, tls, revocation


# ------------------------------------------------------------------------------------------------
# background thread


@dataclass
class RunningServer:
    """A server running on its own event loop in a background thread; a context manager."""

    url: str
    host: str
    port: int
    data_dir: Path
    info: ServerInfo
    _loop: asyncio.AbstractEventLoop = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _runner: web.AppRunner = field(repr=False)
    _state: ServerState = field(repr=False)
    _stopped: bool = field(default=False, repr=False)

    def stop(self) -> None:
        """Stop accepting, close connections, close the store; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        try:
            future.result(timeout=THREAD_SHUTDOWN_TIMEOUT_SECONDS + 10)
        except Exception as exc:  # keep shutting down; say what went wrong
            logger.warning("server cleanup failed: %s", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._state.close()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class _Started(TypedDict, total=False):
    """What the server thread hands back: the running server, or why it did not start."""

    started: tuple[web.AppRunner, int, ServerTlsContext, RevocationAddress | None]
    error: BaseException


def start_server_thread(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    revocation_port: int | None = None,
) -> RunningServer:
    """Start the real HTTPS server in a background thread; returns once it listens. With
    ``revocation_port`` (0: any free port) the plain-HTTP revocation listener listens too, on
    ``host`` (its URL is ``info.revocation_url``)."""
    state = ServerState(Path(data_dir))
    revocation = revocation_address(state.config, port=revocation_port, est_host=host)
    loop = new_event_loop()
    ready = threading.Event()
    outcome: _Started = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            outcome["started"] = loop.run_until_complete(
                _start(
                    state,
                    host=host,
                    port=port,
                    sock=None,
                    shutdown_timeout=THREAD_SHUTDOWN_TIMEOUT_SECONDS,
                    revocation=revocation,
                )
            )
        except BaseException as exc:
            outcome["error"] = exc
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run, name=f"estkit-server-{host}", daemon=True)
    thread.start()
    if not ready.wait(STARTUP_TIMEOUT_SECONDS):
        raise TimeoutError(f"the EST server did not start within {STARTUP_TIMEOUT_SECONDS} s")
    if "error" in outcome:
        state.close()
        raise outcome["error"]
    runner, bound_port, tls, bound_revocation = outcome["started"]
    info = _info(state, host, bound_port, 1, tls, bound_revocation)
    return RunningServer(
        url=info.url,
        host=host,
        port=bound_port,
        data_dir=state.data_dir,
        info=info,
        _loop=loop,
        _thread=thread,
        _runner=runner,
        _state=state,
    )


# ------------------------------------------------------------------------------------------------
# foreground


async def _serve_until_signalled(
    state: ServerState,
    *,
    host: str,
    port: int,
    sock: socket.socket | None,
    workers: int,
    on_ready: Callable[[ServerInfo], None] | None,
    revocation: RevocationAddress | None = None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner, bound_port, tls, bound_revocation = await _start(
        state,
        host=host,
        port=port,
        sock=sock,
        shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
        revocation=revocation,
    )
    try:
        if on_ready is not None:
            on_ready(_info(state, host, bound_port, workers, tls, bound_revocation))
        await stop.wait()
    finally:
        await runner.cleanup()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server(
        (host.strip("[]"), port), family=family, backlog=LISTEN_BACKLOG, reuse_port=False
    )


def _run_worker(
    data_dir: Path,
    sock: socket.socket,
    host: str,
    secret: bytes,
    revocation: RevocationAddress | None = None,
) -> int:
    """Body of one forked worker process; returns its exit status."""
    state = ServerState(data_dir, digest_secret=secret)
    try:
        _run_loop(
            _serve_until_signalled(
                state,
                host=host,
                port=0,
                sock=sock,
                workers=1,
                on_ready=None,
                revocation=revocation,
            )
        )
        return 0
    except Exception:
        logger.exception("worker %d failed", os.getpid())
        return 1
    finally:
        state.close()


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this worker when the supervising process dies, however it dies.

    Why: a supervisor killed with SIGKILL (the OOM killer, ``kill -9``) cannot stop its workers,
    and orphaned workers would go on serving the port and holding the store, so a restarted
    server would share the port with them. With this, the server's processes share one fate:
    killing the supervisor is killing the server (what tests/robustness/test_crash_safety.py
    does). Elsewhere this does nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os._exit(1)


class _Supervisor:
    """The supervising process's SIGINT/SIGTERM handling, from right after the fork.

    Why that early: the sidecar and ``on_ready`` (mDNS registration takes a second) run before
    the workers are waited for; a SIGTERM arriving then must stop the workers and let the
    supervisor finish its output and exit cleanly, not kill it mid-print with the default action.
    """

    def __init__(self, children: list[int]) -> None:
        self.children = children
        self.stopping = threading.Event()
        self._previous = {
            signum: signal.signal(signum, self._forward)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }

    def _forward(self, signum: int, _frame: object) -> None:
        self.stopping.set()
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def wait(self) -> int:
        """Wait for the workers; on SIGINT/SIGTERM (or a worker dying) stop them all."""
        status = 0
        remaining = set(self.children)
        while remaining:
            try:
                pid, wait_status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if pid not in remaining:
                continue
            remaining.discard(pid)
            code = os.waitstatus_to_exitcode(wait_status)
            if not self.stopping.is_set():
                logger.error("worker %d exited unexpectedly (status %d); stopping", pid, code)
                status = status or (code or 1)
                self._forward(signal.SIGTERM, None)
        return status

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def serve(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8443,
    workers: int | None = None,
    on_ready: Callable[[ServerInfo], None] | None = None,
    sidecar: Callable[[], Callable[[], None]] | None = None,
    metrics_address: tuple[str, int] | None = None,
    revocation: RevocationAddress | None = None,
) -> int:
    """Like :func:`_serve` (``workers`` None: :func:`default_workers`); with ``metrics_address``
    (host, port) also serves Prometheus ``/metrics`` there, once per server (in the supervising
    process), summed over the workers; with ``revocation`` the plain-HTTP revocation listener
    listens there in every worker."""
    if workers is None:
        workers = default_workers(data_dir)
    if metrics_address is None:
        return _serve(
            data_dir,
            host=host,
            port=port,
            workers=workers,
            on_ready=on_ready,
            sidecar=sidecar,
            revocation=revocation,
        )
    exporters: list[metrics.Exporter] = []

    def start_sidecars() -> Callable[[], None]:
        exporter = metrics.start_exporter(Path(data_dir), *metrics_address)
        exporters.append(exporter)
        try:
            stop_inner = sidecar() if sidecar is not None else None
        except BaseException:
            exporter.stop()
            raise

        def stop() -> None:
            if stop_inner is not None:
                stop_inner()
            exporter.stop()

        return stop

    def ready(info: ServerInfo) -> None:
        if on_ready is not None:
            exporter = exporters[0]
            url = f"http://{format_url(exporter.host, exporter.port)[8:]}/metrics"
            on_ready(dataclasses.replace(info, metrics_url=url))

    with metrics.multiprocess_directory() as directory:
        metrics.enable(directory)
        return _serve(
            data_dir,
            host=host,
            port=port,
            workers=workers,
            on_ready=ready,
            sidecar=start_sidecars,
            revocation=revocation,
        )


def _serve(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8443,
    workers: int = 1,
    on_ready: Callable[[ServerInfo], None] | None = None,
    sidecar: Callable[[], Callable[[], None]] | None = None,
    revocation: RevocationAddress | None = None,
) -> int:
    """Serve in the foreground until SIGINT/SIGTERM; returns the exit status.

    ``on_ready`` is called once with the listening address (the CLI prints its banner there).
    ``sidecar`` starts a companion service that runs once per server, not once per worker (the
    web console): it is called before ``on_ready`` in the process that supervises, after any
    fork (threads and fork do not mix), and returns the function that stops it. If it raises,
    the workers are stopped and the error propagates.
    """
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers must be between 1 and {MAX_WORKERS}, got {workers}")
    data_dir = Path(data_dir).expanduser().absolute()
    if workers == 1:
        state = ServerState(data_dir)
        stop_sidecar: Callable[[], None] | None = None
        try:
            if sidecar is not None:
                stop_sidecar = sidecar()
            _run_loop(
                _serve_until_signalled(
                    state,
                    host=host,
                    port=port,
                    sock=None,
                    workers=1,
                    on_ready=on_ready,
                    revocation=revocation,
                )
            )
        finally:
            if stop_sidecar is not None:
                stop_sidecar()
            state.close()
        return 0

    # Check the configuration and certificates in the parent, so errors show once, clearly.
    probe = ServerState(data_dir)
    try:
        tls = _tls_context(probe)
        probe.check_store()  # before fork: the database is reachable
    finally:
        probe.close()
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    # The revocation listener's socket too: every worker accepts on it, as on the EST port.
    revocation_sock = _bind(revocation.host, revocation.port) if revocation is not None else None
    if revocation is not None and revocation_sock is not None:
        revocation = RevocationAddress(
            revocation.host, revocation_sock.getsockname()[1], revocation_sock
        )
    secret = secrets.token_bytes(DIGEST_SECRET_BYTES)
    children: list[int] = []
    supervisor_pid = os.getpid()
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # worker
            code = 1
            try:
                _die_with_parent(supervisor_pid)
                code = _run_worker(data_dir, sock, host, secret, revocation)
            finally:
                os._exit(code)
        children.append(pid)
    sock.close()
    if revocation_sock is not None:
        revocation_sock.close()
    supervisor = _Supervisor(children)
    try:
        try:
            stop_sidecar = sidecar() if sidecar is not None else None
        except BaseException:
            _stop_workers(children)
            raise
        try:
            if on_ready is not None:
                on_ready(_info(probe, host, bound_port, workers, tls, revocation))
            return supervisor.wait()
        finally:
            if stop_sidecar is not None:
                stop_sidecar()
    finally:
        supervisor.restore()


def _stop_workers(children: list[int]) -> None:
    """SIGTERM every worker and reap it (the supervisor is not running yet)."""
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
