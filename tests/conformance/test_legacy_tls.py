"""TLS faults no estkit option produces, on an ``openssl s_server``: TLS 1.0/1.1 enabled, TLS 1.3
suites missing.

estkit's server has no option that enables TLS 1.0/1.1 (its minimum is hard-wired to TLS 1.2), so
the faulty server is OpenSSL's own test server with ``-min_protocol TLSv1.1`` and a cipher list at
security level 0. Only the TLS cases run against it (it speaks no EST). TLS 1.1 has no AEAD suites,
so enabling it necessarily enables a CBC-SHA1 suite for TLS 1.2 too: two faults, two cases.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
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


SServer = Callable[..., int]


@pytest.fixture
def s_server(fake_pki: FakePki, tmp_path: Path) -> Iterator[SServer]:
    """Factory: ``s_server(*options)`` → the port of a started ``openssl s_server`` with RSA and
    ECDSA certificates from the fake PKI and the given protocol/cipher options."""
    openssl = ensure_program("openssl", "openssl")
    rsa_cert, rsa_key = fake_pki.server_pair("rsa", ("est.fake.test",), tmp_path)
    ec_cert, ec_key = fake_pki.server_pair("ec", ("est.fake.test",), tmp_path)
    processes: list[subprocess.Popen[bytes]] = []

    def start(*options: str) -> int:
        port = _free_port()
        process = subprocess.Popen(
            [openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(rsa_cert),
             "-key", str(rsa_key), "-dcert", str(ec_cert), "-dkey", str(ec_key), *options,
             "-www", "-quiet"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        processes.append(process)
        _wait_for(port, process)
        return port

    try:
        yield start
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture
def legacy_server(s_server: SServer) -> int:
    return s_server("-min_protocol", "TLSv1.1", "-cipher", LEGACY_CIPHERS)


def _target(fake_pki: FakePki, port: int) -> Target:
    return Target.from_files(
        host="127.0.0.1",
        port=port,
        cacert=fake_pki.cacert,
        cert=fake_pki.device_cert,
        key=fake_pki.device_key_path,
    )


def test_tls11_enabled_is_caught(fake_pki: FakePki, legacy_server: int) -> None:
    # openssl s_client, an independent client, confirms the server really speaks TLS 1.1.
    openssl = ensure_program("openssl", "openssl")
    witness = subprocess.run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{legacy_server}", "-tls1_1",
         "-cipher", "DEFAULT:@SECLEVEL=0", "-brief"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "Protocol version: TLSv1.1" in witness.stdout + witness.stderr

    report = run_suite(_target(fake_pki, legacy_server), only=TLS_CASES)
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


def test_tls10_enabled_is_caught(fake_pki: FakePki, s_server: SServer) -> None:
    # TLS 1.0 on, TLS 1.1 off: only TLS 1.0 (and the CBC-SHA1 suite it needs) must be flagged.
    port = s_server("-min_protocol", "TLSv1", "-no_tls1_1", "-cipher", LEGACY_CIPHERS)
    openssl = ensure_program("openssl", "openssl")
    witness = subprocess.run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-tls1",
         "-cipher", "DEFAULT:@SECLEVEL=0", "-brief"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "Protocol version: TLSv1\n" in witness.stdout + witness.stderr
    report = run_suite(_target(fake_pki, port), only=TLS_CASES)
    by_id = {r.id: r for r in report.results}
    assert {i for i, r in by_id.items() if r.status is Status.FAIL} == {
        "tls10-refused",
        "tls12-cbc-sha1-refused",
    }, {i: r.message for i, r in by_id.items()}
    assert "T1" in by_id["tls10-refused"].message and "TLS 1.0" in by_id["tls10-refused"].message
    assert by_id["tls10-refused"].evidence["probe"]["version"] == "TLSv1"
    assert by_id["tls11-refused"].status is Status.PASS


TLS13_CASES = ["tls12", "tls13", "tls13-mandatory-suite", "tls13-listed-suites"]


@pytest.mark.parametrize(
    ("ciphersuites", "expected", "missing"),
    [
        pytest.param(
            "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
            {"tls13-mandatory-suite": Status.FAIL},
            ("TLS_AES_128_GCM_SHA256", "T2"),
            id="mandatory-tls13-suite-missing",
        ),
        pytest.param(
            "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384",
            {"tls13-listed-suites": Status.WARN},
            ("TLS_CHACHA20_POLY1305_SHA256", "T2"),
            id="recommended-tls13-suite-missing",
        ),
    ],
)
def test_tls13_suite_missing_is_caught(
    fake_pki: FakePki,
    s_server: SServer,
    ciphersuites: str,
    expected: dict[str, Status],
    missing: tuple[str, str],
) -> None:
    port = s_server("-cipher", "ECDHE-RSA-AES128-GCM-SHA256", "-ciphersuites", ciphersuites)
    report = run_suite(_target(fake_pki, port), only=TLS13_CASES)
    statuses = {r.id: r.status for r in report.results}
    assert statuses == {**dict.fromkeys(TLS13_CASES, Status.PASS), **expected}, {
        r.id: r.message for r in report.results
    }
    suite, requirement = missing
    (case_id,) = expected
    message = report.result(case_id).message
    assert requirement in message and suite in message
    # Only the missing suite is named: the ones the server has were accepted.
    assert all(s not in message for s in ciphersuites.split(":"))
    assert report.result("tls13").evidence["probe"]["version"] == "TLSv1.3"
