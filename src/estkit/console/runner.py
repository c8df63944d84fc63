"""Running the console: its TLS context, an in-loop site for ``estkit server serve``, and a
background-thread variant for tests and embedding.

The console is a separate HTTPS listener (default 127.0.0.1) so it can be firewalled apart from
the EST port devices reach; it presents the EST server's own TLS certificates. Those name DNS
names only (BCP-003-01 T4), so its URLs use the certificate's name, ``https://localhost:8444``
for a console listening on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import threading
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from estkit.ca.store import open_store
from estkit.console import auth
from estkit.console.admin_ca import console_dir, ensure_admin_ca
from estkit.console.app import console_url_host, make_console_app
from estkit.console.context import BACKEND_KEY, DEFAULT_POLL_MS, TOKEN_KEY
from estkit.errors import EstkitError
from estkit.fileio import write_private_file_atomic
from estkit.server import (
    CONFIG_FILE_NAME,
    LISTEN_BACKLOG,
    CertificatePair,
    ConnectionGuard,
    ConnectionLimits,
    GuardedSite,
    build_server_context,
    connection_budget,
    load_config,
    within_budget,
)

DEFAULT_CONSOLE_HOST = "127.0.0.1"
DEFAULT_CONSOLE_PORT = 8444
CONSOLE_CONFIG_TABLE = "console"
STARTUP_TIMEOUT_SECONDS = 30
SHUTDOWN_TIMEOUT_SECONDS = 10
# Open console connections (live-refresh polls) get this long to finish when the server stops.
SHUTDOWN_GRACE_SECONDS = 1.0
# Where a running console leaves its base URL, for `estkit server console-login`.
CONSOLE_URL_FILE = "url"


def console_url_path(data_dir: Path) -> Path:
    return console_dir(Path(data_dir)) / CONSOLE_URL_FILE


def new_login_url(data_dir: Path, operator: str, base_url: str | None = None) -> str:
    """A fresh single-use sign-in URL for ``operator`` (the base URL defaults to the one the
    running console recorded). Raises :class:`ConsoleStartError` when no console URL is known."""
    data_dir = Path(data_dir)
    if base_url is None:
        try:
            base_url = console_url_path(data_dir).read_text("utf-8").strip()
        except OSError:
            raise ConsoleStartError(
                f"no console has run on {data_dir} yet (no {console_url_path(data_dir)}); "
                "start the server with the console first"
            ) from None
    with open_store(load_config(data_dir).database_url) as store:
        token = auth.issue_login_token(store, operator)
    return auth.login_url(base_url, token, operator)


class ConsoleStartError(EstkitError, RuntimeError):
    """The console could not start; the message says why and what to change."""


@dataclass(frozen=True)
class ConsoleSettings:
    """The optional ``[console]`` table of ``estkit.toml`` (off unless ``enabled = true``)."""

    enabled: bool = False
    host: str = DEFAULT_CONSOLE_HOST
    port: int = DEFAULT_CONSOLE_PORT


def console_settings(data_dir: Path) -> ConsoleSettings:
    """Read ``[console]`` from the data directory's config; defaults when absent.

    Example::

        [console]
        enabled = true
        host = "127.0.0.1"
        port = 8444
    """
    path = Path(data_dir) / CONFIG_FILE_NAME
    try:
        table = tomllib.loads(path.read_text("utf-8")).get(CONSOLE_CONFIG_TABLE, {})
    except (OSError, tomllib.TOMLDecodeError):
        return ConsoleSettings()
    if not isinstance(table, dict):
        raise ConsoleStartError(f"{path}: [{CONSOLE_CONFIG_TABLE}] must be a table")
    enabled = table.get("enabled", False)
    host = table.get("host", DEFAULT_CONSOLE_HOST)
    port = table.get("port", DEFAULT_CONSOLE_PORT)
    if not isinstance(enabled, bool):
        raise ConsoleStartError(f"{path}: console.enabled must be true or false")
    if not isinstance(host, str) or not host:
        raise ConsoleStartError(f"{path}: console.host must be a host name or address")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConsoleStartError(f"{path}: console.port must be 0-65535, got {port!r}")
    return ConsoleSettings(enabled=enabled, host=host, port=port)


def console_ssl_context(data_dir: Path) -> ssl.SSLContext:
    """The server's BCP-003-01 TLS context and certificates, asking for operator certificates.

    Whether the handshake verifies the client certificate (against the operators CA) or lets the
    application do it, :func:`~estkit.console.admin_ca.verify_operator_certificate` always runs,
    so a device certificate never signs anyone in.
    """
    data_dir = Path(data_dir)
    config = load_config(data_dir)
    pairs = [CertificatePair(t.certificate, t.key) for t in config.tls_certificates]
    operators_ca = ensure_admin_ca(data_dir).read_text("ascii")
    # reload: after `estkit server rollover` the console presents the new chain at its next
    # handshake, as the EST listener does (no restart).
    return build_server_context(pairs, fallback_roots_pem=operators_ca, reload=True).context


def _base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"https://{shown}:{port}"


@dataclass
class ConsoleSite:
    """A console listening inside an existing event loop (what ``serve`` mounts).

    ``host`` is the address it listens on; ``hostname`` the name its URLs use, the one its TLS
    certificate carries (``localhost`` for a console on 127.0.0.1).
    """

    runner: web.AppRunner
    site: web.BaseSite
    host: str
    port: int
    token: str
    hostname: str
    token_operator: str = auth.DEFAULT_TOKEN_OPERATOR
    data_dir: Path | None = None

    @property
    def url(self) -> str:
        return _base_url(self.hostname, self.port)

    @property
    def login_url(self) -> str:
        """The start-up sign-in URL (works once, for 10 minutes)."""
        return auth.login_url(self.url, self.token, self.token_operator)

    def new_login_url(self, operator: str = auth.DEFAULT_TOKEN_OPERATOR) -> str:
        """A fresh single-use sign-in URL for ``operator``."""
        if self.data_dir is None:
            raise ConsoleStartError("this console was not started from a data directory")
        return new_login_url(self.data_dir, operator, self.url)

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_console_site(
    runner_or_app: web.AppRunner | web.Application | Path,
    *,
    host: str = DEFAULT_CONSOLE_HOST,
    port: int = DEFAULT_CONSOLE_PORT,
    ssl_context: ssl.SSLContext | None = None,
    token: str | None = None,
) -> ConsoleSite:
    """Start the console on the running loop; give it an app, a runner, or the data directory.

    With a data directory the app and the TLS context are built here. Port 0 picks a free port
    (read it back from the result).
    """
    if isinstance(runner_or_app, Path | str):
        data_dir = Path(runner_or_app)
        runner_or_app = make_console_app(data_dir, token=token, host=host)
        ssl_context = ssl_context or console_ssl_context(data_dir)
    if ssl_context is None:
        raise ConsoleStartError("the console only serves HTTPS: pass the TLS context to use")
    site: web.BaseSite
    if isinstance(runner_or_app, web.Application):
        # The same guard as the EST port (issue 14): its own share of the process's descriptors,
        # the [limits] timeouts, eviction of the oldest reusable connection.
        guard = _console_guard(runner_or_app)
        runner_or_app.middlewares.insert(0, guard.middleware)
        runner = web.AppRunner(
            runner_or_app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_SECONDS
        )
        await runner.setup()
        site = GuardedSite(
            runner, guard, ssl_context=ssl_context, host=host, port=port, backlog=LISTEN_BACKLOG
        )
    else:
        runner = runner_or_app
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConsoleStartError(
            f"the console cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="choose another port for the console",
            params=("admin_port",),
        ) from exc
    bound_port = port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            bound_port = int(address[1])
            break
    backend = runner.app.get(BACKEND_KEY)
    console_site = ConsoleSite(
        runner,
        site,
        host,
        bound_port,
        runner.app[TOKEN_KEY],
        _url_hostname(runner.app, host),
        data_dir=backend.data_dir if backend else None,
    )
    if backend is not None:
        # 0600 like everything in the console directory; it names no secret.
        write_private_file_atomic(
            console_url_path(backend.data_dir), (console_site.url + "\n").encode()
        )
    return console_site


def _console_guard(app: web.Application) -> ConnectionGuard:
    backend = app.get(BACKEND_KEY)
    limits = backend.config.limits if backend is not None else ConnectionLimits()
    budget = connection_budget("console")
    return ConnectionGuard(lambda: within_budget(limits, budget), name="console")


def _url_hostname(app: web.Application, bind_host: str) -> str:
    """The name for the console's URLs, from the certificates of the app's server."""
    backend = app.get(BACKEND_KEY)
    certificates = [pair.certificate for pair in backend.config.tls_certificates] if backend else []
    return console_url_host(bind_host, certificates)


class ConsoleHandle:
    """A console running on its own event loop in a background thread (tests, embedding)."""

    def __init__(
        self, site: ConsoleSite, loop: asyncio.AbstractEventLoop, thread: threading.Thread
    ) -> None:
        self._site = site
        self._loop = loop
        self._thread = thread
        self.host = site.host
        self.hostname = site.hostname
        self.port = site.port
        self.token = site.token

    @property
    def url(self) -> str:
        return self._site.url

    @property
    def login_url(self) -> str:
        return self._site.login_url

    def new_login_url(self, operator: str = auth.DEFAULT_TOKEN_OPERATOR) -> str:
        return self._site.new_login_url(operator)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self._site.close(), self._loop)
        try:
            future.result(SHUTDOWN_TIMEOUT_SECONDS)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(SHUTDOWN_TIMEOUT_SECONDS)

    def __enter__(self) -> ConsoleHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_console(
    data_dir: Path,
    *,
    host: str = DEFAULT_CONSOLE_HOST,
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    token: str | None = None,
    poll_ms: int = DEFAULT_POLL_MS,
    clock: Callable[[], dt.datetime] | None = None,
) -> ConsoleHandle:
    """Start the console in a background thread and return once it listens."""
    data_dir = Path(data_dir)
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    started = threading.Event()

    async def boot() -> ConsoleSite:
        app = make_console_app(data_dir, token=token, host=host, poll_ms=poll_ms, clock=clock)
        return await start_console_site(
            app, host=host, port=port, ssl_context=ssl_context or console_ssl_context(data_dir)
        )

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            ready["site"] = loop.run_until_complete(boot())
        except BaseException as exc:  # handed to the caller's thread below
            ready["error"] = exc
            started.set()
            loop.close()
            return
        started.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="estkit-console", daemon=True)
    thread.start()
    if not started.wait(STARTUP_TIMEOUT_SECONDS):
        raise ConsoleStartError("the console did not start in time")
    if "error" in ready:
        error = ready["error"]
        if isinstance(error, ConsoleStartError):
            raise error
        raise ConsoleStartError(f"the console could not start: {error}") from error
    return ConsoleHandle(ready["site"], loop, thread)
