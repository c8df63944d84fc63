"""fsyncs of estkit.fileio (issue 23): durable by default, none for scratch files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import estkit.fileio
from estkit.fileio import write_file_atomic, write_private_file_atomic


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    synced: list[int] = []
    original = os.fsync

    def counting(fd: int) -> None:
        synced.append(fd)
        original(fd)

    monkeypatch.setattr(estkit.fileio.os, "fsync", counting)
    return synced


def test_a_write_is_synced_file_then_directory_by_default(
    tmp_path: Path, fsyncs: list[int]
) -> None:
    write_private_file_atomic(tmp_path / "key.pem", b"secret")
    assert len(fsyncs) == 2  # the file's data, then the directory entry of the rename
    write_file_atomic(tmp_path / "cert.pem", b"public")
    assert len(fsyncs) == 4


def test_a_scratch_file_is_complete_and_private_without_any_fsync(
    tmp_path: Path, fsyncs: list[int]
) -> None:
    target = tmp_path / "scratch.pem"
    write_private_file_atomic(target, b"throwaway key", durable=False)
    assert fsyncs == []
    assert target.read_bytes() == b"throwaway key"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["scratch.pem"]  # no temporary left


def test_the_tls_exporter_self_check_writes_its_scratch_credentials_without_fsync(
    tmp_path: Path, fsyncs: list[int]
) -> None:
    from estkit import tlsbind

    cert_path, key_path, _ = tlsbind._self_check_credentials(tmp_path)
    assert fsyncs == []
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key_path.read_bytes() and cert_path.is_file()


def test_files_written_together_share_one_directory_sync(tmp_path: Path, fsyncs: list[int]) -> None:
    """Root, chain and origin record (or a key and its certificate): each file synced, then
    one directory sync for all of them, instead of one per file (issue 23)."""
    from estkit.fileio import write_files_atomic

    write_files_atomic(
        [(tmp_path / "root.pem", b"root", 0o644), (tmp_path / "chain.pem", b"chain", 0o644)]
    )
    assert len(fsyncs) == 3
    assert (tmp_path / "root.pem").read_bytes() == b"root"
    assert (tmp_path / "chain.pem").read_bytes() == b"chain"


def test_nothing_is_renamed_when_one_file_of_a_batch_cannot_be_written(tmp_path: Path) -> None:
    from estkit.fileio import MissingDirectoryError, write_files_atomic

    (tmp_path / "root.pem").write_bytes(b"old root")
    with pytest.raises(MissingDirectoryError):
        write_files_atomic(
            [
                (tmp_path / "root.pem", b"new root", 0o644),
                (tmp_path / "missing" / "chain.pem", b"chain", 0o644),
            ],
            create_parents=False,
        )
    assert (tmp_path / "root.pem").read_bytes() == b"old root"
    assert [p.name for p in tmp_path.iterdir()] == ["root.pem"]  # no temporary left
