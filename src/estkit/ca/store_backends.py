"""Database connections for the certificate store: SQLite (default) and PostgreSQL.

Why a thin backend layer: the store's queries are written once (``?`` placeholders); a backend
only opens the connection, runs a transaction, converts times, and turns driver exceptions into the
store's own errors, so callers (the server) need to know exactly three of them:
``StoreUnavailableError`` (answer 503 + Retry-After), ``DuplicateSerialError`` and ``StoreError``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from estkit.ca.store_schema import POSTGRESQL, SQLITE, Dialect
from estkit.errors import StoreError

# How long a writer waits for another process's write transaction before giving up with
# StoreUnavailableError (→ 503). Writes here take milliseconds; 10 s absorbs bursts from several
# workers without leaving a client hanging indefinitely.
SQLITE_BUSY_TIMEOUT_MS = 10_000
# NORMAL in WAL mode: a committed transaction survives the process being killed (kill -9) at any
# moment; only an OS crash or power cut can lose the last commits. FULL also fsyncs every commit,
# which bounds a store to a few hundred commits per second on ordinary disks (measured ~230/s vs
# ~7000/s with NORMAL on the 2-core CI machine), below the server's enrollment-rate target.
# Choose FULL with the URL option ?synchronous=full where power-loss durability matters more.
SQLITE_DEFAULT_SYNCHRONOUS = "NORMAL"
SQLITE_SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
# Seconds to wait for a TCP connection to PostgreSQL before reporting it unreachable.
POSTGRES_CONNECT_TIMEOUT_SECONDS = 5
# The store holds every issued certificate, the approval queue and the authentication state
# (Digest nonce key, console sign-in token hashes): owner-only, like a private key file.
SQLITE_FILE_MODE = 0o600
# The files SQLite keeps next to the database in WAL mode (created with the database's mode).
SQLITE_SIDE_SUFFIXES = ("-wal", "-shm")
# A constant key for pg_advisory_xact_lock: serialises schema migrations between instances.
POSTGRES_MIGRATION_LOCK_KEY = 0x657374_6B6974  # "estkit"


logger = logging.getLogger("estkit.ca.store")


class StoreUnavailableError(StoreError):
    """The database cannot be reached or written right now (unreachable, locked, disk full,
    read-only). A server answers 503 with Retry-After; nothing was recorded."""


class DuplicateSerialError(StoreError):
    """A certificate with this serial number is already recorded."""


class UniqueViolation(StoreError):
    """Internal: a UNIQUE/PRIMARY KEY constraint refused a row (the caller says what it means)."""


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable database URL>"
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostinfo}"
    query = "&".join(
        f"{key}=***" if key.lower() == "password" else f"{key}={value}"
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class Transaction(Protocol):
    """What the store's queries need from a transaction."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    @property
    def rowcount(self) -> int: ...


class Backend(Protocol):
    dialect: Dialect
    display_url: str

    def transaction(self) -> contextlib.AbstractContextManager[Transaction]: ...

    def read(self) -> contextlib.AbstractContextManager[Transaction]: ...

    def to_db_time(self, value: datetime) -> Any: ...

    def from_db_time(self, value: Any) -> datetime: ...

    def migration_lock(self, tx: Transaction) -> None: ...

    def close(self) -> None: ...


def _time_from_text_or_datetime(value: Any) -> datetime:
    result = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if result.tzinfo is None:
        result = result.replace(tzinfo=UTC)
    return result.astimezone(UTC)


# ----- SQLite ---------------------------------------------------------------------------------


class _SqliteTransaction:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._rowcount = -1

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self._connection.execute(sql, tuple(params))
        rows = cursor.fetchall()
        self._rowcount = cursor.rowcount
        return rows

    @property
    def rowcount(self) -> int:
        return self._rowcount


def _create_private_file(path: str) -> None:
    """Create the database file owner-only before SQLite opens it.

    Why not ``os.umask``: the umask is process-wide, and the server opens stores on worker threads
    while other threads write files; ``os.open`` with an explicit mode sets the permissions of
    this one file atomically at creation (the umask can only remove bits from 0600). SQLite gives
    its -wal and -shm files the database file's mode.
    """
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SQLITE_FILE_MODE))


def tighten_private_file(path: Path) -> int | None:
    """Make an existing file owner-only; log a warning naming it and its old mode. Returns the
    old mode when it had to change (None when it was fine or is missing)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    if not mode & 0o077:
        return None
    try:
        path.chmod(mode & 0o700)
    except OSError as exc:
        logger.warning(
            "%s is readable by others (mode %04o) and could not be tightened: %s",
            path,
            mode,
            exc,
        )
        return mode
    logger.warning(
        "%s was readable by others (mode %04o); changed to %04o: it holds the certificate store",
        path,
        mode,
        mode & 0o700,
    )
    return mode


def _enable_wal(connection: sqlite3.Connection, busy_timeout_ms: int) -> str:
    """Switch to WAL, retrying while another connection holds the lock.

    SQLite does not call the busy handler for a journal-mode change, so two processes opening a
    fresh database at the same moment would otherwise see "database is locked" at once; we retry
    for as long as the configured busy timeout allows.
    """
    deadline = time.monotonic() + busy_timeout_ms / 1000
    while True:
        try:
            return str(connection.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            message = str(exc).lower()
            if ("locked" not in message and "busy" not in message) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class SqliteBackend:
    """One connection per store object, guarded by a lock (safe from many threads); WAL mode and
    ``BEGIN IMMEDIATE`` with a busy timeout make it safe from many processes too."""

    dialect = SQLITE

    def __init__(self, path: str, *, display_url: str, synchronous: str, busy_timeout_ms: int):
        self.display_url = display_url
        self._lock = threading.RLock()
        if path != ":memory:":
            parent = Path(path).parent
            if not parent.is_dir():
                raise StoreUnavailableError(
                    f"cannot open the certificate store {display_url}: the directory {parent} "
                    "does not exist"
                )
            try:
                _create_private_file(path)
            except OSError as exc:
                raise StoreUnavailableError(
                    f"cannot create the certificate store {display_url}: {exc.strerror or exc}"
                ) from None
            for suffix in ("", *SQLITE_SIDE_SUFFIXES):
                tighten_private_file(Path(path + suffix))
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a write transaction
            # takes the write lock up front (BEGIN IMMEDIATE) instead of failing mid-way.
            self._connection = sqlite3.connect(
                path,
                timeout=busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            self._connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if path != ":memory:":
                mode = _enable_wal(self._connection, busy_timeout_ms)
                if str(mode).lower() != "wal":
                    raise StoreError(
                        f"the certificate store {display_url} cannot use WAL mode (got {mode}); "
                        "put it on a local file system"
                    )
            self._connection.execute(f"PRAGMA synchronous = {synchronous}")
        except sqlite3.Error as exc:
            raise _map_sqlite_error(exc, display_url, "open") from None

    def transaction(self) -> contextlib.AbstractContextManager[Transaction]:
        """A write transaction: BEGIN IMMEDIATE takes the write lock up front (waiting up to the
        busy timeout), so it cannot fail half-way on a lock held by another process."""
        return self._run("BEGIN IMMEDIATE", "write to")

    def read(self) -> contextlib.AbstractContextManager[Transaction]:
        """A read-only snapshot (deferred BEGIN): never blocks writers, works on read-only files."""
        return self._run("BEGIN", "read")

    @contextlib.contextmanager
    def _run(self, begin: str, action: str) -> Iterator[Transaction]:
        with self._lock:
            try:
                self._connection.execute(begin)
            except sqlite3.Error as exc:
                raise _map_sqlite_error(exc, self.display_url, action) from None
            try:
                yield _SqliteTransaction(self._connection)
                self._connection.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._connection.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise _map_sqlite_error(exc, self.display_url, action) from None
                raise

    def to_db_time(self, value: datetime) -> str:
        return value.astimezone(UTC).isoformat(timespec="microseconds")

    def from_db_time(self, value: Any) -> datetime:
        return _time_from_text_or_datetime(value)

    def migration_lock(self, tx: Transaction) -> None:
        """BEGIN IMMEDIATE already holds the database's single write lock."""

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._connection.close()


def _map_sqlite_error(exc: sqlite3.Error, url: str, action: str) -> StoreError:
    message = str(exc)
    if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in message.upper():
        return UniqueViolation(message)
    if isinstance(exc, sqlite3.OperationalError) and not message.startswith("no such "):
        return StoreUnavailableError(
            f"cannot {action} the certificate store {url}: {message} (check free disk space, "
            "file permissions, and that no other program holds a long lock)"
        )
    return StoreError(f"the certificate store {url} failed: {message}")


def parse_sqlite_url(url: str) -> tuple[str, dict[str, str]]:
    """``sqlite:///abs/path.db?synchronous=normal`` or a plain path → (path, options)."""
    if not url.startswith("sqlite:"):
        return url, {}
    rest = url[len("sqlite:") :]
    rest, _, query = rest.partition("?")
    if rest.startswith("//"):
        rest = rest[2:]  # drop the empty authority of sqlite:///path
    if rest.lstrip("/") == ":memory:":
        rest = ":memory:"
    elif rest.startswith("/"):
        # sqlite:///abs/path and sqlite:////abs/path (f"sqlite:///{absolute_path}") mean the same.
        rest = "/" + rest.lstrip("/")
    if not rest or rest == "/":
        raise StoreError(f"the store URL {url!r} names no file; use sqlite:///absolute/path.db")
    options = {key.lower(): value for key, value in parse_qsl(query, keep_blank_values=True)}
    return rest, options


# ----- PostgreSQL -----------------------------------------------------------------------------


class _PostgresTransaction:
    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._cursor.execute(sql.replace("?", "%s"), tuple(params))
        if self._cursor.description is None:
            return []
        return list(self._cursor.fetchall())

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)


class PostgresBackend:
    """One autocommit connection per store object (explicit transactions), reconnected after the
    database went away; psycopg is imported only here, so SQLite users never need it."""

    dialect = POSTGRESQL

    def __init__(self, url: str) -> None:
        self.display_url = redact_url(url)
        try:
            import psycopg
        except ImportError:
            raise StoreError(
                "PostgreSQL stores need the psycopg package: pip install 'estkit[postgres]'"
            ) from None
        self._psycopg = psycopg
        self._url = url
        self._lock = threading.RLock()
        self._connection: Any = None
        self._connect()

    def _connect(self) -> Any:
        kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in self._url:
            kwargs["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_SECONDS
        try:
            self._connection = self._psycopg.connect(self._url, **kwargs)
        except self._psycopg.Error as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreUnavailableError(
                f"cannot reach the PostgreSQL certificate store {self.display_url}: {detail}"
            ) from None
        return self._connection

    def _usable_connection(self) -> Any:
        connection = self._connection
        if connection is None or connection.closed or connection.broken:
            with contextlib.suppress(Exception):
                if connection is not None:
                    connection.close()
            connection = self._connect()
        return connection

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        psycopg = self._psycopg
        with self._lock:
            connection = self._usable_connection()
            try:
                with connection.transaction(), connection.cursor() as cursor:
                    yield _PostgresTransaction(cursor)
            except psycopg.errors.UniqueViolation as exc:
                raise UniqueViolation(str(exc)) from None
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                # The connection is unusable (server gone, network cut): drop it so the next
                # call reconnects, and report a temporary failure.
                with contextlib.suppress(Exception):
                    connection.close()
                self._connection = None
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "connection lost"
                raise StoreUnavailableError(
                    f"the PostgreSQL certificate store {self.display_url} is unavailable: {detail}"
                ) from None
            except psycopg.Error as exc:
                raise StoreError(
                    f"the PostgreSQL certificate store {self.display_url} failed: {exc}"
                ) from None

    def read(self) -> contextlib.AbstractContextManager[Transaction]:
        """Reads use an ordinary transaction (READ COMMITTED never blocks writers)."""
        return self.transaction()

    def to_db_time(self, value: datetime) -> datetime:
        return value.astimezone(UTC)

    def from_db_time(self, value: Any) -> datetime:
        return _time_from_text_or_datetime(value)

    def migration_lock(self, tx: Transaction) -> None:
        # Two instances starting together must not both create the tables.
        tx.execute("SELECT pg_advisory_xact_lock(?)", (POSTGRES_MIGRATION_LOCK_KEY,))

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                with contextlib.suppress(Exception):
                    self._connection.close()
                self._connection = None


def open_backend(url: str) -> Backend:
    """The backend for a store URL (see :func:`estkit.ca.store.open_store`)."""
    lowered = url.lower()
    if lowered.startswith(("postgresql://", "postgres://")):
        return PostgresBackend(url)
    if "://" in url and not lowered.startswith("sqlite:"):
        raise StoreError(
            f"unsupported certificate store URL {redact_url(url)}; use "
            "sqlite:///path/to/estkit.db, a plain file path, or postgresql://user@host/db"
        )
    path, options = parse_sqlite_url(url)
    synchronous = options.pop("synchronous", SQLITE_DEFAULT_SYNCHRONOUS).upper()
    if synchronous not in SQLITE_SYNCHRONOUS_MODES:
        raise StoreError(
            f"unknown synchronous={synchronous.lower()} in {url}; use one of "
            f"{', '.join(mode.lower() for mode in SQLITE_SYNCHRONOUS_MODES)}"
        )
    try:
        busy_timeout_ms = int(options.pop("busy_timeout", SQLITE_BUSY_TIMEOUT_MS))
    except ValueError:
        raise StoreError(f"busy_timeout in {url} must be a number of milliseconds") from None
    if options:
        raise StoreError(
            f"unknown option(s) {', '.join(sorted(options))} in {url}; "
            "SQLite stores accept synchronous and busy_timeout"
        )
    return SqliteBackend(
        path, display_url=url, synchronous=synchronous, busy_timeout_ms=busy_timeout_ms
    )


__all__ = [
    "SQLITE_FILE_MODE",
    "DuplicateSerialError",
    "StoreError",
    "StoreUnavailableError",
    "open_backend",
    "redact_url",
    "tighten_private_file",
]
