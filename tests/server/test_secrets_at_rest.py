"""Secrets at rest (issue 24, item 5): the data directory is 0700, the SQLite store and its WAL
files are 0600 from creation on, older loose modes are tightened with a warning, and a key the
server generated (serverkeygen) is not left in the store once the client collected it."""

from __future__ import annotations

import base64
import email
import email.policy
import logging
import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from estkit.ca.store import open_store
from estkit.protocol.csr import build_csr, encode_csr_body
from estkit.protocol.keys import generate_private_key
from estkit.server.datadir import init_data_dir
from estkit.server.runner import start_server_thread

if TYPE_CHECKING:
    from conftest import EstkitTestServer

SQLITE_FILES = ("estkit.db", "estkit.db-wal", "estkit.db-shm")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _device_client(server: EstkitTestServer) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(server.paths.ca_certificates))
    context.load_cert_chain(server.paths.device_certificate, server.paths.device_key)
    return httpx.Client(verify=context, timeout=30)


def test_init_makes_an_owner_only_directory_and_store(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # the usual umask: it would give 0755 / 0644
    try:
        paths = init_data_dir(tmp_path / "data", key_type="p256")
    finally:
        os.umask(old_umask)
    assert _mode(paths.data_dir) == 0o700
    for name in SQLITE_FILES:
        if (paths.data_dir / name).exists():
            assert _mode(paths.data_dir / name) == 0o600, name
    assert _mode(paths.data_dir / "estkit.db") == 0o600


def test_the_store_file_is_created_0600_not_chmodded_afterwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With chmod unavailable, only a file *created* with mode 0600 can end up 0600.
    def no_chmod(*args: object, **kwargs: object) -> None:
        raise AssertionError("the store must be created owner-only, not chmodded afterwards")

    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(Path, "chmod", no_chmod)
    old_umask = os.umask(0o022)
    try:
        with open_store(tmp_path / "new.db") as store:
            store.log_event("test", "write something so the WAL exists")
            for suffix in ("", "-wal", "-shm"):
                path = tmp_path / f"new.db{suffix}"
                assert path.exists(), path
                assert _mode(path) == 0o600, (path, oct(_mode(path)))
    finally:
        os.umask(old_umask)


def test_serving_keeps_every_store_file_0600(estkit_server: EstkitTestServer) -> None:
    key = generate_private_key("p256")
    csr = build_csr(key, common_name="modes.example.com", dns_names=["modes.example.com"])
    with _device_client(estkit_server) as client:
        response = client.post(
            estkit_server.est_url("simpleenroll"),
            content=encode_csr_body(csr),
            headers={"Content-Type": "application/pkcs10"},
        )
    assert response.status_code == 200, response.text
    data_dir = estkit_server.data_dir
    assert _mode(data_dir) == 0o700
    for name in SQLITE_FILES:  # a running WAL-mode store has all three
        assert _mode(data_dir / name) == 0o600, name


def test_loose_modes_of_an_existing_store_are_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths = init_data_dir(tmp_path / "data", key_type="p256")
    database = paths.data_dir / "estkit.db"
    database.chmod(0o644)  # as an older estkit (or a copy with cp) left it
    paths.data_dir.chmod(0o755)
    with caplog.at_level(logging.WARNING):
        running = start_server_thread(paths.data_dir)
        running.stop()
    assert _mode(database) == 0o600
    assert _mode(paths.data_dir) == 0o700
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(database) in w and "0644" in w and "0600" in w for w in warnings), warnings
    assert any(str(paths.data_dir) in w and "0755" in w for w in warnings), warnings


def _serverkeygen_key(response: httpx.Response) -> bytes:
    message = email.message_from_bytes(
        b"Content-Type: " + response.headers["content-type"].encode() + b"\r\n\r\n"
        + response.content,
        policy=email.policy.HTTP,
    )  # fmt: skip
    for part in message.iter_parts():
        if part.get_content_type() == "application/pkcs8":
            return base64.b64decode(part.get_payload())
    raise AssertionError("no application/pkcs8 part in the serverkeygen answer")


def _store_bytes(data_dir: Path) -> bytes:
    """Every byte of the SQLite files, read by another process: closing a descriptor of the
    database in *this* process (which runs the server) would drop SQLite's POSIX locks on it."""
    files = [str(data_dir / name) for name in SQLITE_FILES if (data_dir / name).exists()]
    return subprocess.run(["cat", *files], capture_output=True, check=True, timeout=60).stdout


def _collect_generated_key(server: EstkitTestServer, tmp_path: Path) -> bytes:
    """serverkeygen on a manual-approval label: 202, approve with the CLI, collect the key."""
    key = generate_private_key("p256")
    csr = build_csr(key, common_name="keygen.example.com", dns_names=["keygen.example.com"])
    body = encode_csr_body(csr)
    headers = {"Content-Type": "application/pkcs10"}
    url = server.est_url("serverkeygen", "manual")
    with _device_client(server) as client:
        queued = client.post(url, content=body, headers=headers)
        assert queued.status_code == 202, queued.text
        request_id = int(queued.text.split("request ")[1].split()[0])
        approved = subprocess.run(
            [sys.executable, "-m", "estkit.cli.main", "server", "approve",
             str(server.data_dir), str(request_id)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert approved.returncode == 0, approved.stdout + approved.stderr
        delivered = client.post(url, content=body, headers=headers)
        assert delivered.status_code == 200, delivered.text
        again = client.post(url, content=body, headers=headers)
    # The key is not kept, so a repeat cannot be answered with it: 409 with what to do.
    assert again.status_code == 409, again.text
    assert "not kept" in again.text
    return _serverkeygen_key(delivered)


def test_a_generated_key_is_not_in_the_store_after_delivery(
    estkit_server: EstkitTestServer, tmp_path: Path
) -> None:
    der = _collect_generated_key(estkit_server, tmp_path)
    key = serialization.load_der_private_key(der, password=None)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    stored = _store_bytes(estkit_server.data_dir)
    for form in (der, base64.b64encode(der), pem, pem.splitlines()[1]):
        assert form not in stored
    assert b"PRIVATE KEY" not in stored
