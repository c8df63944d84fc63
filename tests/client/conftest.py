"""Fixtures for the client tests: a test PKI, quirky HTTPS servers and a sleep recorder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .pki import QuirkyPki
from .quirky import QuirkyServer, Route


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> QuirkyPki:
    return QuirkyPki.create(tmp_path_factory.mktemp("quirky-pki"))


@pytest.fixture
def quirky(pki: QuirkyPki) -> Iterator[Callable[..., QuirkyServer]]:
    """Factory: ``quirky(routes, **tls_options)`` starts a server, stopped at teardown."""
    started: list[QuirkyServer] = []

    def start(routes: dict[str, Route] | None = None, **options: Any) -> QuirkyServer:
        server = QuirkyServer(pki.files["server_chain"], pki.files["server_key"], routes, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


class SleepRecorder:
    """Stands in for ``time.sleep`` / ``asyncio.sleep``: records waits, never sleeps."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.progress: list[tuple[int, float, str]] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.waits.append(seconds)

    def on_wait(self, attempt: int, seconds: float, reason: str) -> None:
        self.progress.append((attempt, seconds, reason))


@pytest.fixture
def sleeper() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def trust_file(pki: QuirkyPki) -> Path:
    return pki.files["root"]
