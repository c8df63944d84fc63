"""Shared fixtures: real estkit EST servers over real TLS on loopback.

``estkit_server`` (one per test session) is what most tests talk to; ``fresh_server`` makes a
server with its own CA for tests whose side effects (revocations, rollover, config edits) must not
leak into others. Both run the same code as `estkit server serve` (see docs/internal-api.md,
"Test fixtures").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from estkit.ca.store import CertificateStore, open_store
from estkit.server.config import add_label, add_user
from estkit.server.datadir import InitResult, init_data_dir
from estkit.server.runner import RunningServer, start_server_thread

# The labels every session server has (docs/internal-api.md, "Test fixtures").
SESSION_LABELS: dict[str, dict[str, Any]] = {
    "manual": {"approval": "manual", "retry_after_seconds": 1},
    "untrusted": {"approval": "untrusted", "retry_after_seconds": 1},
    "pop": {"require_pop": True},
    "http": {"auth_mode": "rfc7030"},
    "short": {"validity_seconds": 10},
}
HTTP_USER = "alice"
HTTP_PASSWORD = "wonderland"


@dataclass
class EstkitTestServer:
    """A running server plus the paths of its data directory.

    Has every attribute of :class:`estkit.server.runner.RunningServer` (``url``, ``host``,
    ``port``, ``data_dir``, ``stop()``), the :class:`InitResult` as ``paths``, and
    ``open_store()`` for looking at what the server recorded.
    """

    running: RunningServer
    paths: InitResult
    _stores: list[CertificateStore] = field(default_factory=list, repr=False)

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def host(self) -> str:
        return self.running.host

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def data_dir(self) -> Path:
        return self.running.data_dir

    def est_url(self, operation: str, label: str | None = None) -> str:
        """Full URL of an EST operation, e.g. ``est_url("simpleenroll", "manual")``."""
        middle = f"/{label}" if label else ""
        return f"{self.url}/.well-known/est{middle}/{operation}"

    def open_store(self) -> CertificateStore:
        """A new connection to the server's store (closed at teardown)."""
        store = open_store(self.paths.database_url)
        self._stores.append(store)
        return store

    def stop(self) -> None:
        self.running.stop()
        for store in self._stores:
            store.close()
        self._stores.clear()

    def __enter__(self) -> EstkitTestServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def make_server(
    directory: Path,
    labels: dict[str, dict[str, Any]],
    *,
    users: dict[str, str] | None = None,
    key_type: str = "p384",
) -> EstkitTestServer:
    """Create a data directory with ``labels`` (and HTTP ``users``) and start a server on it."""
    paths = init_data_dir(directory, key_type=key_type)
    for label, fields in labels.items():
        add_label(paths.config, label, **fields)
    for user, password in (users or {}).items():
        add_user(paths.config, user, password)
    return EstkitTestServer(running=start_server_thread(paths.data_dir), paths=paths)


@pytest.fixture(scope="session")
def estkit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EstkitTestServer]:
    """One EST server for the whole session, with the labels in :data:`SESSION_LABELS`."""
    server = make_server(
        tmp_path_factory.mktemp("estkit-server"),
        SESSION_LABELS,
        users={HTTP_USER: HTTP_PASSWORD},
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., EstkitTestServer]]:
    """Factory: ``fresh_server(label=dict(profile fields), ...)`` → a server with its own CA.

    Keyword ``users={"name": "password"}`` adds HTTP users. Every server is stopped at teardown.
    """
    started: list[EstkitTestServer] = []

    def factory(
        *, users: dict[str, str] | None = None, **labels: dict[str, Any]
    ) -> EstkitTestServer:
        server = make_server(tmp_path_factory.mktemp("estkit-fresh"), labels, users=users)
        started.append(server)
        return server

    try:
        yield factory
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def ocsp_impostor() -> Iterator[Any]:
    """A plain-HTTP OCSP responder answering what the test sets (tests/ocsp_impostor.py)."""
    try:
        from tests.ocsp_impostor import Responder
    except ImportError:  # pragma: no cover - depends on how pytest put tests/ on sys.path
        from ocsp_impostor import Responder  # type: ignore[no-redef]

    server = Responder()
    try:
        yield server
    finally:
        server.stop()
