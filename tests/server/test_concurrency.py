"""Concurrent enrollments: N requests at once give N distinct serials, all in the store — in one
process, and with `estkit server serve --workers 2` sharing one socket and one database."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from estkit.ca.store import open_store
from estkit.protocol.csr import build_csr, encode_csr_body
from estkit.protocol.keys import generate_private_key
from estkit.server.datadir import init_data_dir

from .witness import certificate_from_response, client_context, post

if TYPE_CHECKING:
    from conftest import EstkitTestServer

CONCURRENT_ENROLLMENTS = 20
SERVE_START_TIMEOUT_SECONDS = 60


def _enroll_many(
    host: str, port: int, cafile: Path, cert: Path, key: Path, count: int
) -> list[int]:
    csrs = [
        encode_csr_body(build_csr(generate_private_key("p256"), common_name=f"n{i}.example.com"))
        for i in range(count)
    ]
    context = client_context(cafile, cert=cert, key=key)

    def one(body: bytes) -> int:
        response = post(host, port, "/.well-known/est/simpleenroll", body, context)
        assert response.status == 200, response.text
        return certificate_from_response(response.body).serial_number

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, csrs))


def test_concurrent_enrollments_get_distinct_serials(
    estkit_server: EstkitTestServer,
) -> None:
    paths = estkit_server.paths
    # Connect by the name in the server's URL (its certificate names no address, T4).
    hostname = urlsplit(estkit_server.url).hostname
    assert hostname == "localhost" and estkit_server.host == "127.0.0.1"
    serials = _enroll_many(
        hostname,
        estkit_server.port,
        paths.ca_certificates,
        paths.device_certificate,
        paths.device_key,
        CONCURRENT_ENROLLMENTS,
    )
    assert len(set(serials)) == CONCURRENT_ENROLLMENTS
    store = estkit_server.open_store()
    for serial in serials:
        assert store.get_issued(format(serial, "x")) is not None


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def test_workers_share_one_socket_and_store(tmp_path: Path) -> None:
    paths = init_data_dir(tmp_path / "data")
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "estkit.cli.main",
            "server",
            "serve",
            str(paths.data_dir),
            "--port",
            "0",
            "--workers",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        port = None
        assert process.stdout is not None
        for line in process.stdout:
            # Bound to 127.0.0.1 (the default), shown as the name its certificate carries.
            match = re.search(r"listening on https://localhost:(\d+) \(2 workers\)", line)
            if match:
                port = int(match.group(1))
                break
        assert port, "the server did not print its banner"
        assert len(_children(process.pid)) == 2
        serials = _enroll_many(
            "localhost",
            port,
            paths.ca_certificates,
            paths.device_certificate,
            paths.device_key,
            CONCURRENT_ENROLLMENTS,
        )
        assert len(set(serials)) == CONCURRENT_ENROLLMENTS
        store = open_store(paths.database_url)
        try:
            recorded = {int(record.serial, 16) for record in store.list_issued()}
        finally:
            store.close()
        assert set(serials) <= recorded
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            output, errors = process.communicate(timeout=SERVE_START_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, errors
    assert "server stopped" in output
    assert "Traceback" not in errors
