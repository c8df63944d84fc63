"""Fixtures for the web console tests: one EST server and its console per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .helpers import ConsoleEnv, start_console_env


@pytest.fixture(scope="module")
def console_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleEnv]:
    env = start_console_env(tmp_path_factory.mktemp("console") / "data")
    try:
        yield env
    finally:
        env.stop()
