"""Fixtures for the robustness tests: the shared throwaway PostgreSQL and data directories.

The PostgreSQL cluster is the one ``tests/ca/pg_fixture.py`` provides (one per session, a fresh
database per test); nothing about starting PostgreSQL is duplicated here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from ca.pg_fixture import PostgresServer, postgres_server, running_postgres

from .support import run_cli

__all__ = ["DataDir", "postgres_server", "running_postgres"]


@dataclass(frozen=True)
class DataDir:
    """A server data directory made by `estkit server init --json` (paths from its output)."""

    path: Path
    config: Path
    ca_certificates: Path
    device_certificate: Path
    device_key: Path
    database_url: str


def init_data_dir_cli(directory: Path, db_url: str | None = None) -> DataDir:
    """`estkit server init DIR [--db URL] --json`, exactly as an operator runs it."""
    args: list[str | Path] = ["server", "init", directory, "--json", "--key-type", "p256"]
    if db_url:
        args += ["--db", db_url]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    return DataDir(
        path=Path(info["data_dir"]),
        config=Path(info["config"]),
        ca_certificates=Path(info["ca_certificates"]),
        device_certificate=Path(info["device_certificate"]),
        device_key=Path(info["device_key"]),
        database_url=info["database_url"],
    )


@pytest.fixture
def pg_data_dir(postgres_server: PostgresServer, tmp_path: Path) -> DataDir:
    """A data directory whose store is a fresh database on the throwaway PostgreSQL."""
    return init_data_dir_cli(tmp_path / "data", postgres_server.create_database())


@pytest.fixture
def sqlite_data_dir(tmp_path: Path) -> DataDir:
    return init_data_dir_cli(tmp_path / "data")
