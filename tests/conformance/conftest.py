"""Fixtures for the conformance-suite tests: a correctly configured estkit server, purpose-built
faulty servers, and helpers that point a :class:`~estkit.conformance.Target` at them.

The estkit server here is made with a DNS host name only: BCP-003-01 T4 forbids IP addresses in
server certificates, and estkit's default "localhost" data directory adds 127.0.0.1 and ::1 for
the demo, which the suite (rightly) flags. The suite still connects to 127.0.0.1.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from estkit.ca.store import CertificateStore, Event, open_store
from estkit.conformance import Status, SuiteReport, Target
from estkit.conformance.suites import local_catalogue
from estkit.server.config import add_label, add_user
from estkit.server.datadir import InitResult, init_data_dir
from estkit.server.runner import RunningServer, start_server_thread

from .fake_est import FakeEstServer, Faults
from .pki import FakePki, make_pki

try:
    from tests.system_packages import ensure_program
except ImportError:  # pragma: no cover - depends on how pytest put tests/ on sys.path
    from system_packages import ensure_program  # type: ignore[no-redef]

SERVER_HOSTNAME = "est.conformance.test"
DNS_CASES = ("dns-advertised", "dns-srv-target", "dns-txt-pri", "dns-api-selector")
HTTP_USER, HTTP_PASSWORD = "alice", "wonderland"
LABELS: dict[str, dict[str, Any]] = {
    "http": {"auth_mode": "rfc7030"},
    "noclient": {"ekus": ("serverAuth",)},
    "pop": {"require_pop": True},
    "manual": {"approval": "manual", "retry_after_seconds": 1},
}


REVOCATION_CASES = ("revocation-pointers", "ocsp-good", "crl-good", "ocsp-revoked", "crl-revoked")


def expected_statuses(
    *, offers_tls_exporter: bool = False, names_status_urls: bool = False
) -> dict[str, Status]:
    """What a compliant server gets for the cases that are not a plain ``pass``, and why.

    pop-wrong-challenge: n/a unless the label requires PoP. pop-tls13-exporter: n/a unless the
    server offers the estkit tls-exporter extension (estkit's server does: pass it
    ``offers_tls_exporter=True``). retry-after: n/a when nothing is deferred. tls-3des-refused:
    skip when the local OpenSSL has no 3DES (OpenSSL 3 default). dns-*: n/a without a DNS domain
    to look in (tests/conformance/test_dns_cases.py gives one). Revocation cases: n/a when the
    issued certificates name no OCSP responder or CRL (the purpose-built servers); with them
    (estkit's, ``names_status_urls=True``) the two that need a revocation are skipped, since a
    full run is given no way to revoke (tests/conformance/test_revocation_cases.py gives one).
    """
    expected = {"pop-wrong-challenge": Status.NA, "retry-after": Status.NA}
    if not offers_tls_exporter:
        expected["pop-tls13-exporter"] = Status.NA
    expected |= {case: Status.NA for case in DNS_CASES}
    if names_status_urls:
        expected |= {case: Status.SKIP for case in REVOCATION_CASES[3:]}
    else:
        expected |= {case: Status.NA for case in REVOCATION_CASES}
    if not local_catalogue().groups["3des"]:
        expected["tls-3des-refused"] = Status.SKIP
    return expected


def non_passing(report: SuiteReport) -> dict[str, Status]:
    """Each case that did not plainly pass, with its status (compare with expected_statuses)."""
    return {r.id: r.status for r in report.results if r.status is not Status.PASS}


@dataclass
class ConformanceServer:
    running: RunningServer
    paths: InitResult

    @property
    def port(self) -> int:
        return self.running.port

    def target(self, label: str | None = None, **fields: Any) -> Target:
        return Target.from_files(
            host="127.0.0.1",
            port=self.running.port,
            cacert=self.paths.ca_certificates,
            cert=self.paths.device_certificate,
            key=self.paths.device_key,
            label=label,
            **fields,
        )

    def store(self) -> CertificateStore:
        return open_store(self.paths.database_url)

    def refusals_since(self, event_id: int) -> list[Event]:
        store = self.store()
        try:
            return store.list_events("refused", since_id=event_id)
        finally:
            store.close()

    def last_event_id(self) -> int:
        store = self.store()
        try:
            events = store.list_events()
            return events[-1].id if events else 0
        finally:
            store.close()


def start_conformance_server(directory: Path, **init: Any) -> ConformanceServer:
    paths = init_data_dir(directory, hostnames=(SERVER_HOSTNAME,), **init)
    for label, fields in LABELS.items():
        add_label(paths.config, label, **fields)
    add_user(paths.config, HTTP_USER, HTTP_PASSWORD)
    return ConformanceServer(start_server_thread(paths.data_dir), paths)


@pytest.fixture(scope="session")
def conformance_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConformanceServer]:
    """A correctly configured estkit server (the labels in :data:`LABELS`)."""
    ensure_program("openssl", "openssl")  # the TLS 1.3 suite probes use openssl s_client
    server = start_conformance_server(tmp_path_factory.mktemp("conformance-server"))
    try:
        yield server
    finally:
        server.running.stop()


@pytest.fixture(scope="session")
def fake_pki(tmp_path_factory: pytest.TempPathFactory) -> FakePki:
    directory = tmp_path_factory.mktemp("fake-pki")
    pki = make_pki(directory)
    openssl = ensure_program("openssl", "openssl")
    # The named RFC 7919 group, so the fake server offers the DHE-RSA suites of T3 too.
    subprocess.run(
        [openssl, "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe2048",
         "-out", str(directory / "ffdhe2048.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return pki


FakeFactory = Callable[..., FakeEstServer]


@pytest.fixture
def fake_server(fake_pki: FakePki, tmp_path: Path) -> Iterator[FakeFactory]:
    """Factory: ``fake_server(Faults(...))`` → a started purpose-built server, stopped after."""
    started: list[FakeEstServer] = []

    def factory(faults: Faults | None = None, **kwargs: Any) -> FakeEstServer:
        workdir = tmp_path / f"fake{len(started)}"
        workdir.mkdir()
        dh = fake_pki.directory / "ffdhe2048.pem"
        (workdir / "ffdhe2048.pem").write_bytes(dh.read_bytes())
        server = FakeEstServer(fake_pki, workdir, faults or Faults(), **kwargs)
        started.append(server)
        return server.start()

    try:
        yield factory
    finally:
        for server in started:
            server.stop()


def fake_target(pki: FakePki, server: FakeEstServer, **fields: Any) -> Target:
    return Target.from_files(
        host="127.0.0.1",
        port=server.port,
        cacert=pki.cacert,
        cert=pki.device_cert,
        key=pki.device_key_path,
        **fields,
    )
