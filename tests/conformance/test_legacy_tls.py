"""A legacy TLS setting is caught: TLS 1.1 enabled on an ``openssl s_server``.

estkit's server has no option that enables TLS 1.0/1.1 (its minimum is hard-wired to TLS 1.2), so
the faulty server is OpenSSL's own test server with ``-min_protocol TLSv1.1`` and a cipher list at
security level 0. Only the TLS cases run against it (it speaks no EST). TLS 1.1 has no AEAD suites,
so enabling it necessarily enables a CBC-SHA1 suite for TLS 1.2 too: two faults, two cases.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from estkit.conformance import Status, Target, run_suite

from .pki import FakePki

try:
    from tests.system_packages import ensure_program
except ImportError:  # pragma: no cover
    from system_packages import ensure_program  # type: ignore[no-redef]

LEGACY_CIPHERS = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-SHA:@SECLEVEL=0"
STARTUP_SECONDS = 10.0
TLS_CASES = ["tls12", "tls10-refused", "tls11-refused", "tls12-cbc-sha1-refused",
             "tls12-rsa-kex-refused", "tls12-mandatory-suite"]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"openssl s_server exited: {process.stderr.read()!r}")  # type: ignore[union-attr]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("openssl s_server did not start listening")


@pytest.fixture
def legacy_server(fake_pki: FakePki, tmp_path: Path) -> Iterator[int]:
    openssl = ensure_program("openssl", "openssl")
    cert, key = fake_pki.server_pair("rsa", ("est.fake.test",), tmp_path)
    port = _free_port()
    process = subprocess.Popen(
        [openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert),
         "-key", str(key), "-min_protocol", "TLSv1.1", "-cipher", LEGACY_CIPHERS, "-www",
         "-quiet"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_for(port, process)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_tls11_enabled_is_caught(fake_pki: FakePki, legacy_server: int) -> None:
    # openssl s_client, an independent client, confirms the server really speaks TLS 1.1.
    openssl = ensure_program("openssl", "openssl")
    witness = subprocess.run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{legacy_server}", "-tls1_1",
         "-cipher", "DEFAULT:@SECLEVEL=0", "-brief"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "Protocol version: TLSv1.1" in witness.stdout + witness.stderr

    target = Target.from_files(
        host="127.0.0.1",
        port=legacy_server,
        cacert=fake_pki.cacert,
        cert=fake_pki.device_cert,
        key=fake_pki.device_key_path,
    )
    report = run_suite(target, only=TLS_CASES)
    by_id = {r.id: r for r in report.results}
    assert {i for i, r in by_id.items() if r.status is Status.FAIL} == {
        "tls11-refused",
        "tls12-cbc-sha1-refused",
    }
    assert "T1" in by_id["tls11-refused"].message and "TLS 1.1" in by_id["tls11-refused"].message
    assert by_id["tls11-refused"].evidence["probe"]["version"] == "TLSv1.1"
    assert by_id["tls10-refused"].status is Status.PASS
    assert by_id["tls12"].status is Status.PASS
    assert "ECDHE-RSA-AES128-SHA" in by_id["tls12-cbc-sha1-refused"].message
