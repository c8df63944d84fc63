"""Nothing lost: kill -9 under load, a full disk, a read-only store (issue 6, "Nothing lost").

The server commits every certificate before it answers (docs/internal-api.md, store). These tests
check that promise from the outside, with real processes: every certificate a client received in a
200 response is in the store after the server was killed mid-load and restarted; when the store
cannot be written (disk full, read-only file system) clients get 503 + Retry-After and the log says
why, and the server recovers by itself once the disk is writable again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from estkit.ca.store import open_store

from .conftest import DataDir, init_data_dir_cli
from .support import ServeProcess, client_context, csr_body, enroll, request, serial_hex, wait_for

LOAD_THREADS = 4
BODIES_PER_THREAD = 60
# Kill once this many certificates were delivered: enough to be "under load", quick on 2 cores.
KILL_AFTER_DELIVERED = 24
TMPFS_SIZE = "2m"
FILLER_CHUNK_BYTES = 64 * 1024


def _load_until_killed(
    server: ServeProcess, data: DataDir
) -> tuple[list[str], list[BaseException], ServeProcess]:
    """Run LOAD_THREADS enrolling clients, SIGKILL the server mid-load, return what they got."""
    context = client_context(data.ca_certificates, data.device_certificate, data.device_key)
    bodies = [[csr_body()[0] for _ in range(BODIES_PER_THREAD)] for _ in range(LOAD_THREADS)]
    delivered: list[str] = []
    errors: list[BaseException] = []
    refusals: list[str] = []  # answers other than 200 before the kill: a failure of the test
    lock = threading.Lock()

    def client(index: int) -> None:
        for body in bodies[index]:
            try:
                reply = enroll(server.port, context, body, timeout=10)
            except (OSError, ConnectionError) as exc:  # the kill cut this request
                with lock:
                    errors.append(exc)
                return
            with lock:
                if reply.status != 200:
                    refusals.append(f"{reply.status} {reply.text}")
                    return
                delivered.append(serial_hex(reply.certificate()))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(LOAD_THREADS)]
    for thread in threads:
        thread.start()
    assert wait_for(lambda: len(delivered) >= KILL_AFTER_DELIVERED, timeout=120)
    server.kill()
    for thread in threads:
        thread.join(timeout=60)
    # Assertions inside the threads would only end the thread; check what they saw here.
    assert not refusals, refusals
    return delivered, errors, server


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_9_under_load_loses_no_delivered_certificate(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    fixture = "pg_data_dir" if backend == "postgresql" else "sqlite_data_dir"
    data: DataDir = request.getfixturevalue(fixture)
    server = ServeProcess(data.path, tmp_path / "serve.log").start()
    try:
        delivered, errors, server = _load_until_killed(server, data)
        assert server.process is not None and server.process.returncode == -9
        # The kill landed while requests were in flight (it really was "under load").
        assert errors, "no request was cut by the kill"
        assert len(delivered) >= KILL_AFTER_DELIVERED

        server.start()  # same data directory, same port
        context = client_context(data.ca_certificates, data.device_certificate, data.device_key)
        again = enroll(server.port, context, csr_body()[0])
        assert again.status == 200, again.text
    finally:
        server.stop()

    with open_store(data.database_url) as store:
        recorded = [record.serial for record in store.list_issued()]
    missing = set(delivered) - set(recorded)
    assert not missing, f"{len(missing)} delivered certificate(s) missing after kill -9"
    assert len(recorded) == len(set(recorded))
    assert serial_hex(again.certificate()) in recorded
    if backend == "sqlite":
        db_file = data.database_url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(db_file)) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# ------------------------------------------------------------------------------------------------
# full disk and read-only store, on a tiny tmpfs


@pytest.fixture
def tiny_tmpfs() -> Iterator[Path]:
    """A 2 MiB tmpfs, mounted for this test only (needs root; skipped elsewhere)."""
    mount_point = Path(tempfile.mkdtemp(prefix="estkit-tmpfs-"))
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a tmpfs to simulate a full disk: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
        with contextlib.suppress(OSError):
            mount_point.rmdir()


def _fill(directory: Path) -> Path:
    """Write a file until the file system says it is full; returns the filler file."""
    filler = directory / "filler"
    chunk = b"\0" * FILLER_CHUNK_BYTES
    # Unbuffered: a buffered writer keeps the part of a chunk that did not fit and raises ENOSPC
    # again when the file is closed, depending on how the free space aligns with the chunk size.
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    # A last partial block may still fit: top up byte by byte.
    with contextlib.suppress(OSError), filler.open("ab", buffering=0) as handle:
        for _ in range(FILLER_CHUNK_BYTES):
            handle.write(b"\0")
            handle.flush()
    return filler


def _assert_store_unavailable(reply_status: int, headers: dict[str, str], text: str) -> None:
    assert reply_status == 503, text
    assert int(headers.get("retry-after", "0")) >= 1
    assert "certificate store" in text
    assert "Traceback" not in text


def test_disk_full_gives_503_with_a_clear_log_line(tiny_tmpfs: Path, tmp_path: Path) -> None:
    data = init_data_dir_cli(tmp_path / "data", f"sqlite:///{tiny_tmpfs / 'estkit.db'}")
    context = client_context(data.ca_certificates, data.device_certificate, data.device_key)
    with ServeProcess(data.path, tmp_path / "serve.log").start() as server:
        first = enroll(server.port, context, csr_body()[0])
        assert first.status == 200, first.text
        filler = _fill(tiny_tmpfs)
        full = enroll(server.port, context, csr_body()[0])
        _assert_store_unavailable(full.status, full.headers, full.text)
        assert request(server.port, "GET", "/.well-known/est/cacerts", context).status == 200
        filler.unlink()
        after = enroll(server.port, context, csr_body()[0])
        assert after.status == 200, after.text + server.log_text()[-3000:]
        log = server.log_text()
    assert "disk is full" in log
    assert "503" in log and "Traceback" not in log
    with open_store(data.database_url) as store:
        recorded = sorted(record.serial for record in store.list_issued())
    assert recorded == sorted(serial_hex(r.certificate()) for r in (first, after))


@pytest.mark.parametrize("after_crash", [False, True], ids=["clean", "after-kill-9"])
def test_read_only_store_gives_503_with_a_clear_log_line(
    tiny_tmpfs: Path, tmp_path: Path, after_crash: bool
) -> None:
    """The store's file system is read-only when the server starts; it serves what needs no
    store, answers enrollments with 503, and recovers once the file system is writable again.

    ``after-kill-9``: a crashed server left its WAL files behind, so SQLite can open the
    database read-only (instead of not at all); the server must still recover afterwards.
    """
    data = init_data_dir_cli(tmp_path / "data", f"sqlite:///{tiny_tmpfs / 'estkit.db'}")
    context = client_context(data.ca_certificates, data.device_certificate, data.device_key)
    # One worker: after a kill -9 of the supervisor, its workers die a moment later (their
    # parent-death signal), and one still holding the store open makes the remount below fail
    # with "mount point is busy". Recovery with several workers: test_multi_instance.py.
    server = ServeProcess(data.path, tmp_path / "serve.log", extra_args=("--workers", "1"))
    delivered = []
    if after_crash:
        server.start()
        first = enroll(server.port, context, csr_body()[0])
        assert first.status == 200, first.text
        delivered.append(serial_hex(first.certificate()))
        server.kill()
        assert (tiny_tmpfs / "estkit.db-wal").exists()
    remount = subprocess.run(
        ["mount", "-o", "remount,ro", str(tiny_tmpfs)], capture_output=True, text=True
    )
    assert remount.returncode == 0, remount.stderr
    assert _is_read_only(tiny_tmpfs)
    with server.start():
        refused = enroll(server.port, context, csr_body()[0])
        _assert_store_unavailable(refused.status, refused.headers, refused.text)
        assert request(server.port, "GET", "/.well-known/est/cacerts", context).status == 200
        assert server.process is not None and server.process.poll() is None
        subprocess.run(["mount", "-o", "remount,rw", str(tiny_tmpfs)], check=True)
        after = enroll(server.port, context, csr_body()[0])
        assert after.status == 200, after.text + server.log_text()[-3000:]
        delivered.append(serial_hex(after.certificate()))
        log = server.log_text()
    assert "certificate store" in log and "503" in log and "Traceback" not in log
    with open_store(data.database_url) as store:
        assert sorted(r.serial for r in store.list_issued()) == sorted(delivered)


def _is_read_only(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
