"""Helpers for the web console tests: a data directory with a real EST server and its console,
an EST device client, and small parsing helpers."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estkit.ca.store import CertificateStore, open_store
from estkit.console import ConsoleHandle, start_console
from estkit.protocol.csr import build_csr, encode_csr_body
from estkit.protocol.keys import PrivateKey, generate_private_key
from estkit.server.config import add_label, load_config, set_limits
from estkit.server.datadir import InitResult, init_data_dir
from estkit.server.runner import RunningServer, start_server_thread

try:
    from tests.system_packages import ensure_program
except ImportError:  # tests/ itself on sys.path (plain `pytest` from the repository root)
    from system_packages import ensure_program  # type: ignore[no-redef]

__all__ = [
    "ARTIFACTS",
    "ConsoleEnv",
    "csrf_from",
    "ensure_program",
    "new_key",
    "spki_pins",
    "start_console_env",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "console"
# The console polls this often in tests, so live updates show up quickly.
TEST_POLL_MS = 400
CSRF_PATTERN = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


@dataclass
class ConsoleEnv:
    """A data directory with an EST server and its console both running on loopback."""

    paths: InitResult
    server: RunningServer
    console: ConsoleHandle

    @property
    def data_dir(self) -> Path:
        return self.paths.data_dir

    @property
    def ca_file(self) -> str:
        return str(self.paths.ca_certificates)

    def store(self) -> CertificateStore:
        return open_store(load_config(self.data_dir).database_url)

    def device_context(self) -> ssl.SSLContext:
        """TLS for the demo device: trusts our CA, presents the manufacturer-issued certificate."""
        context = ssl.create_default_context(cafile=self.ca_file)
        context.load_cert_chain(self.paths.device_certificate, self.paths.device_key)
        return context

    def enroll(self, key: PrivateKey, common_name: str, label: str = "manual") -> httpx.Response:
        """One ``simpleenroll`` by the demo device, exactly as a BCP-003-03 node sends it."""
        csr = build_csr(key, common_name=common_name, dns_names=[common_name])
        with httpx.Client(verify=self.device_context(), timeout=30) as client:
            return client.post(
                f"{self.server.url}/.well-known/est/{label}/simpleenroll",
                content=encode_csr_body(csr),
                headers={"Content-Type": "application/pkcs10"},
            )

    def pending_request(self, common_name: str) -> int:
        with self.store() as store:
            for request in store.list_requests(status="pending"):
                if request.common_name == common_name:
                    return request.id
        raise AssertionError(f"no pending request for {common_name}")

    def trust(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def stop(self) -> None:
        self.console.stop()
        self.server.stop()

    def console_client(self) -> httpx.Client:
        return httpx.Client(verify=self.trust(), timeout=30, follow_redirects=True)

    @contextlib.contextmanager
    def signed_in_client(self, operator: str | None = None) -> Iterator[httpx.Client]:
        """A client holding a console session from a fresh single-use sign-in token."""
        url = self.console.new_login_url(operator) if operator else self.console.new_login_url()
        with self.console_client() as client:
            response = client.get(url)
            assert response.status_code == 200, response.text
            yield client


def csrf_from(html: str) -> str:
    match = CSRF_PATTERN.search(html)
    assert match, "the page carries no CSRF token"
    return match.group(1)


def new_key() -> PrivateKey:
    return generate_private_key("p256")


def spki_pins(certificate_paths: list[Path]) -> list[str]:
    """Base64 SHA-256 of each server key, for Chromium's --ignore-certificate-errors-spki-list:
    the browser accepts exactly our server's keys instead of every certificate."""
    pins = []
    for path in certificate_paths:
        cert = x509.load_pem_x509_certificates(Path(path).read_bytes())[0]
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        pins.append(base64.b64encode(hashlib.sha256(spki).digest()).decode())
    return pins


def start_console_env(data_dir: Path) -> ConsoleEnv:
    """Create ``data_dir`` with a manual-approval label, start the server and its console."""
    paths = init_data_dir(data_dir)
    add_label(paths.config, "manual", approval="manual", retry_after_seconds=1)
    # One test device queues a request per test of a module (more than the default of 4 per
    # requester); the queue caps have their own tests (tests/robustness/test_hostile_load.py).
    set_limits(paths.config, queue_per_requester=100, queue_per_address=100)
    server = start_server_thread(data_dir)
    try:
        console = start_console(data_dir, poll_ms=TEST_POLL_MS)
    except BaseException:
        server.stop()
        raise
    return ConsoleEnv(paths, server, console)
