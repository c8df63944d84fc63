"""Writing helpers of estkit.fileio and missing directories (issue 15): created by default for
the layouts the library owns, refused with a clear error (and nothing written) when the caller
says a person named the path."""

from __future__ import annotations

from pathlib import Path

import pytest

from estkit.fileio import (
    MissingDirectoryError,
    replace_credential_pair,
    write_file_atomic,
    write_private_file_atomic,
)


def test_missing_directory_is_refused_when_asked(tmp_path: Path) -> None:
    target = tmp_path / "nosuch" / "dir" / "o.pem"
    with pytest.raises(MissingDirectoryError) as caught:
        write_file_atomic(target, b"x", create_parents=False)
    assert str(caught.value) == (
        f"the directory {tmp_path / 'nosuch' / 'dir'} does not exist (writing {target}); "
        "create it first"
    )
    assert isinstance(caught.value, FileNotFoundError)  # callers catching OSError still do
    assert not (tmp_path / "nosuch").exists()
    with pytest.raises(MissingDirectoryError):
        write_private_file_atomic(target, b"k", create_parents=False)
    assert not (tmp_path / "nosuch").exists()


def test_a_pair_with_one_missing_directory_leaves_nothing_behind(tmp_path: Path) -> None:
    key = tmp_path / "node.key"
    cert = tmp_path / "gone" / "node.pem"
    with pytest.raises(MissingDirectoryError):
        replace_credential_pair(cert, b"cert", key, b"key", create_parents=False)
    assert list(tmp_path.iterdir()) == []  # not even the key's temporary file


def test_default_still_creates_the_library_layout(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c.pem"
    write_file_atomic(target, b"x")
    assert target.read_bytes() == b"x"
    write_file_atomic(tmp_path / "d.pem", b"y", create_parents=False)  # existing directory
    assert (tmp_path / "d.pem").read_bytes() == b"y"
