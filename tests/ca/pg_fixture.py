"""A real, throwaway PostgreSQL cluster on a loopback port, for store and multi-instance tests.

Why a real server: serial uniqueness, migrations racing between instances, and "the database went
away" behaviour are properties of PostgreSQL itself, not of a mock. The cluster is created with
Debian's ``initdb`` (run as the ``postgres`` user when the tests run as root, since PostgreSQL
refuses to run as root), listens on 127.0.0.1 only, and is deleted at teardown.

Reuse from other test folders::

    from tests.ca.pg_fixture import postgres_server  # noqa: F401  (a session fixture)
    # or, when tests/ is on sys.path instead of being a package:
    from ca.pg_fixture import postgres_server

    def test_x(postgres_server):
        url = postgres_server.create_database()   # a fresh, empty database
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

try:
    from tests.system_packages import ensure_program
except ModuleNotFoundError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from system_packages import ensure_program  # type: ignore[no-redef]

LOOPBACK = "127.0.0.1"
SUPERUSER = "postgres"
OS_USER = "postgres"
STARTUP_TIMEOUT_SECONDS = 30.0
SHUTDOWN_TIMEOUT_SECONDS = 15.0
POLL_INTERVAL_SECONDS = 0.05
# Durability settings only matter for power loss, which no test simulates; turning them off keeps
# a test cluster fast on a shared 2-core machine. Process kills (kill -9) are still survived.
_FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: switch to the postgres OS user when we are root."""
    if os.geteuid() != 0:
        return command
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", OS_USER, "--", *command]
    return ["su", OS_USER, "-s", "/bin/sh", "-c", " ".join(command)]


@dataclass
class PostgresServer:
    """A running test cluster: connect as the ``postgres`` superuser (trust auth, loopback)."""

    bin_dir: Path
    base_dir: Path
    port: int
    host: str = LOOPBACK
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def url(self) -> str:
        """URL of the maintenance database ``postgres``."""
        return self.url_for("postgres")

    def url_for(self, database: str, *, password: str | None = None) -> str:
        credentials = f"{SUPERUSER}:{password}" if password else SUPERUSER
        return f"postgresql://{credentials}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database and return its URL."""
        import psycopg

        name = name or f"estkit_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def start(self) -> None:
        """Start (or restart) the server and wait until it accepts connections."""
        if self.process is not None and self.process.poll() is None:
            return
        command = _as_postgres_user(
            [
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.data_dir),
                "-k",
                str(self.base_dir),
                "-h",
                self.host,
                "-p",
                str(self.port),
                *(item for setting in _FAST_SETTINGS for item in ("-c", setting)),
            ]
        )
        log = self.log_file.open("ab")
        try:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                break
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                last_error = exc
                time.sleep(POLL_INTERVAL_SECONDS)
        log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
        raise RuntimeError(f"PostgreSQL did not start on port {self.port}: {last_error}\n{log}")

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, disconnect clients)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        # Signal the postmaster itself: runuser (when we are root) does not pass SIGINT on.
        postmaster = self._postmaster_pid()
        if postmaster is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(postmaster, signal.SIGINT)
        else:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=SHUTDOWN_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _postmaster_pid(self) -> int | None:
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
            return int(first_line)
        except (OSError, ValueError, IndexError):
            return None


def _initdb(bin_dir: Path, base_dir: Path) -> None:
    command = _as_postgres_user(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(base_dir / "data"),
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ]
    )
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed: {(result.stderr or result.stdout)[-2000:]}")


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Create, start, yield and finally stop and delete a throwaway cluster."""
    initdb = ensure_program("initdb", "postgresql", extra_paths=("/usr/lib/postgresql/*/bin",))
    bin_dir = Path(initdb).resolve().parent
    # Not under pytest's tmp dirs: those are 0700 root, and the postgres user must reach its files.
    base_dir = Path(tempfile.mkdtemp(prefix="estkit-pg-"))
    try:
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam(OS_USER)
            except KeyError:
                pytest.skip(f"the '{OS_USER}' OS user is missing; reinstall Debian's postgresql")
            os.chown(base_dir, account.pw_uid, account.pw_gid)
        _initdb(bin_dir, base_dir)
        server = PostgresServer(bin_dir=bin_dir, base_dir=base_dir, port=_free_port())
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the whole session; use ``create_database()`` per test."""
    with running_postgres() as server:
        yield server


__all__ = ["PostgresServer", "postgres_server", "running_postgres"]
