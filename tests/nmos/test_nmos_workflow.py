"""The one-shot provisioning workflow against a real estkit server over TLS (C1, C4-C13)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from estkit.ca.manufacturer import ManufacturerCA, issue_device_certificate
from estkit.cli.main import cli
from estkit.nmos.clock import ManualClock
from estkit.nmos.config import DiscoverySettings, ServerSettings
from estkit.nmos.errors import ManufacturerCredentialError, ProvisioningError, TrustError
from estkit.nmos.node import NmosNode
from estkit.nmos.workflow import run_workflow
from estkit.protocol.certs import dns_names, load_pem_certificates

from .conftest import EventLog, config_for_server
from .dns_fixture import DOMAIN, Zone, free_port
from .witnesses import openssl_verify


def test_workflow_gets_root_rsa_and_ecdsa_and_renews_them(
    estkit_server: Any, tmp_path: Path, events: EventLog
) -> None:
    config = config_for_server(estkit_server, tmp_path / "node")
    node = NmosNode(config, on_event=events)
    result = run_workflow(node)

    # C4/C5: the root came from /cacerts with explicit trust and is the server's root.
    server_root = load_pem_certificates(estkit_server.paths.root_ca.read_bytes())[0]
    assert load_pem_certificates(result.root_ca.read_bytes())[0] == server_root
    assert any("explicitly for this first /cacerts (C4)" in m for m in events.messages())

    store = estkit_server.open_store()
    assert [c.slot for c in result.certificates] == ["rsa", "ecdsa"]
    for outcome in result.certificates:
        cert = load_pem_certificates(outcome.cert_path.read_bytes())[0]
        assert outcome.renewed and cert == outcome.certificate
        # C7: CN and SAN = hostname, serialNumber of the manufacturer certificate.
        assert (
            cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node1.nmos.test"
        )
        assert dns_names(cert) == ["node1.nmos.test"]
        serial = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
        assert serial and serial[0].value == "ESTKIT-DEMO-0001"
        ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(ekus)
        # Keys are private, written atomically, no temp files left behind.
        assert stat.S_IMODE(outcome.key_path.stat().st_mode) == 0o600
        assert not list(outcome.cert_path.parent.glob(".*.tmp"))
        verdict = openssl_verify(result.root_ca, outcome.cert_path)
        assert verdict.returncode == 0, verdict.stdout + verdict.stderr
        # C13: the renewal went through /simplereenroll, and the server recorded both steps.
        record = store.get_issued(format(cert.serial_number, "x"))
        assert record is not None and record.operation == "simplereenroll"
    assert isinstance(result.certificates[0].certificate.public_key(), rsa.RSAPublicKey)
    assert isinstance(result.certificates[1].certificate.public_key(), ec.EllipticCurvePublicKey)
    # The first (pre-renewal) certificates are gone from disk but were issued by /simpleenroll.
    enrolled = [m for m in events.messages("success") if m.startswith("installed ")]
    renewed = [m for m in events.messages("success") if m.startswith("renewed ")]
    assert len(enrolled) == 2 and len(renewed) == 2


def test_renewal_uses_a_new_key_pair_and_removes_the_old_one_c9_c13(
    estkit_server: Any, tmp_path: Path
) -> None:
    config = config_for_server(estkit_server, tmp_path / "node", key_types=("p256",))
    node = NmosNode(config)
    node.fetch_root_ca()
    first = node.enroll("ecdsa")
    first_key = first.key_path.read_bytes()
    second = node.renew("ecdsa")
    assert second.cert_path == first.cert_path
    assert second.key_path.read_bytes() != first_key
    assert second.certificate.public_key() != first.certificate.public_key()
    assert second.certificate.serial_number != first.certificate.serial_number
    on_disk = load_pem_certificates(second.cert_path.read_bytes())[0]
    assert on_disk == second.certificate
    assert sorted(p.name for p in (tmp_path / "node").iterdir()) == [
        "ca-chain.pem",
        "ecdsa-cert.pem",
        "ecdsa-key.pem",
        "root-ca.pem",
        "trust-origin.json",
    ]


def test_cli_workflow_json_has_the_documented_shape(estkit_server: Any, tmp_path: Path) -> None:
    paths = estkit_server.paths
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        [
            "nmos", "workflow", "--ip", "localhost", "--port", str(estkit_server.port),
            "--cert", str(paths.device_certificate), "--key", str(paths.device_key),
            "--hostname", "node1.nmos.test", "--out-dir", str(out),
            "--cacert", str(tmp_path / "root.pem"), "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"root_ca", "certificates"}
    assert data["root_ca"] == str(tmp_path / "root.pem")
    assert [c["key_type"] for c in data["certificates"]] == ["rsa", "ecdsa"]
    for entry in data["certificates"]:
        assert set(entry) == {"key_type", "certificate", "key", "not_after", "renewed"}
        assert entry["renewed"] is True
        assert Path(entry["certificate"]).is_file() and Path(entry["key"]).is_file()
        cert = load_pem_certificates(Path(entry["certificate"]).read_bytes())[0]
        assert datetime.fromisoformat(entry["not_after"]) == cert.not_valid_after_utc


def test_cli_no_renew_and_human_table(estkit_server: Any, tmp_path: Path) -> None:
    paths = estkit_server.paths
    result = CliRunner().invoke(
        cli,
        [
            "nmos", "workflow", "--ip", "localhost", "--port", str(estkit_server.port),
            "--cert", str(paths.device_certificate), "--key", str(paths.device_key),
            "--hostname", "node1.nmos.test", "--out-dir", str(tmp_path), "--no-renew",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "NMOS node certificates" in result.stdout
    assert "/simplereenroll" not in result.stdout
    assert "node1.nmos.test" in result.stdout


def test_cli_defaults_to_the_demo_data_directory(
    estkit_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`estkit nmos workflow --ip localhost --port N` with ./estkit-data present needs no flags."""
    demo = tmp_path / "estkit-data" / "manufacturer"
    demo.mkdir(parents=True)
    shutil.copy(estkit_server.paths.device_certificate, demo / "device.pem")
    shutil.copy(estkit_server.paths.device_key, demo / "device.key")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        cli, ["nmos", "workflow", "--ip", "localhost", "--port", str(estkit_server.port)]
    )
    assert result.exit_code == 0, result.output
    assert "using the demo device credentials" in result.stdout
    assert (tmp_path / "estkit-node" / "root-ca.pem").is_file()
    assert (tmp_path / "estkit-node" / "ecdsa-cert.pem").is_file()


def test_require_server_validation_uses_the_given_root_c4(
    estkit_server: Any, tmp_path: Path, events: EventLog
) -> None:
    root = tmp_path / "root.pem"
    shutil.copy(estkit_server.paths.root_ca, root)
    config = config_for_server(
        estkit_server, tmp_path / "node", explicit_trust=False, root_ca_file=root
    )
    result = run_workflow(NmosNode(config, on_event=events), renew=False)
    assert len(result.certificates) == 2
    assert not any("explicitly" in m for m in events.messages())


def test_require_server_validation_refuses_a_server_of_another_ca_c4(
    estkit_server: Any, fresh_server: Any, tmp_path: Path
) -> None:
    other = fresh_server()
    root = tmp_path / "root.pem"
    shutil.copy(other.paths.root_ca, root)  # a root that did not issue estkit_server's TLS cert
    config = config_for_server(
        estkit_server, tmp_path / "node", explicit_trust=False, root_ca_file=root
    )
    with pytest.raises(ProvisioningError, match="does not verify against the installed root"):
        run_workflow(NmosNode(config.with_changes(max_attempts=1)))
    assert not (tmp_path / "node" / "rsa-cert.pem").exists()


def test_explicit_trust_disabled_and_no_root_is_refused_c4(
    estkit_server: Any, tmp_path: Path
) -> None:
    config = config_for_server(estkit_server, tmp_path / "node", explicit_trust=False)
    with pytest.raises(TrustError, match="explicit trust of the EST server is disabled"):
        run_workflow(NmosNode(config.with_changes(max_attempts=1)))


def test_server_down_backs_off_exponentially_from_one_second_c12(
    tmp_path: Path, manual_clock: ManualClock, estkit_server: Any
) -> None:
    dead_port = free_port()
    config = config_for_server(estkit_server, tmp_path / "node", max_attempts=5).with_changes(
        server=ServerSettings(host="localhost", port=dead_port)
    )
    events = EventLog()
    with pytest.raises(ProvisioningError) as info:
        run_workflow(NmosNode(config, clock=manual_clock, on_event=events))
    assert manual_clock.sleeps == [1, 2, 4, 8]
    assert info.value.attempts == 5
    assert f"localhost:{dead_port}" in str(info.value)
    assert "running and reachable" in (info.value.hint or "")


def test_cli_failure_says_what_and_why_without_traceback(
    tmp_path: Path, estkit_server: Any
) -> None:
    paths = estkit_server.paths
    result = CliRunner().invoke(
        cli,
        [
            "nmos", "workflow", "--ip", "localhost", "--port", str(free_port()),
            "--cert", str(paths.device_certificate), "--key", str(paths.device_key),
            "--out-dir", str(tmp_path), "--max-attempts", "1",
        ],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "NMOS workflow failed" in result.stderr and "fetching /cacerts" in result.stderr
    assert "hint:" in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_missing_manufacturer_file_is_an_error_not_anonymous_enrollment(
    estkit_server: Any, tmp_path: Path
) -> None:
    config = config_for_server(
        estkit_server,
        tmp_path / "node",
        manufacturer_certificate=tmp_path / "nope.pem",
        manufacturer_key=tmp_path / "nope.key",
    )
    with pytest.raises(ManufacturerCredentialError, match="does not exist"):
        run_workflow(NmosNode(config))


def _expired_device(estkit_server: Any, directory: Path) -> tuple[Path, Path]:
    """A device certificate from the server's trusted manufacturer CA that expired 20 minutes ago
    (the demo manufacturer CA itself is backdated by only an hour)."""
    manufacturer = ManufacturerCA.load(estkit_server.paths.manufacturer_ca.parent)
    device = issue_device_certificate(
        manufacturer,
        device_serial="EXPIRED-0001",
        validity_seconds=600,
        now=datetime.now(UTC) - timedelta(minutes=30),
    )
    cert, key = directory / "expired.pem", directory / "expired.key"
    device.write(cert, key)
    return cert, key


def test_expired_manufacturer_certificate_is_never_presented_c1(
    estkit_server: Any, tmp_path: Path, events: EventLog
) -> None:
    """C1: not presented; the server's `untrusted` label queues the anonymous request (S4)."""
    cert, key = _expired_device(estkit_server, tmp_path)
    config = config_for_server(
        estkit_server,
        tmp_path / "node",
        label="untrusted",
        key_types=("p256",),
        hostnames=("expired-node.nmos.test",),
        manufacturer_certificate=cert,
        manufacturer_key=key,
        max_attempts=1,
    )
    node = NmosNode(config, on_event=events)
    node.fetch_root_ca()
    with pytest.raises(ProvisioningError) as info:
        node.enroll("ecdsa")
    assert info.value.pending
    assert any("expired" in m and "not presenting it (C1)" in m for m in events.messages())
    # The request reached the server without any client certificate and waits for an operator.
    requests = [
        r
        for r in estkit_server.open_store().list_requests(status="pending")
        if r.common_name == "expired-node.nmos.test"
    ]
    assert len(requests) == 1
    assert requests[0].client_subject in (None, "")
    # The key of the queued request is kept for the retry (C10).
    assert (tmp_path / "node" / "ecdsa-pending-key.pem").is_file()


def test_expired_manufacturer_certificate_on_a_strict_label_is_refused_with_the_reason(
    estkit_server: Any, tmp_path: Path
) -> None:
    cert, key = _expired_device(estkit_server, tmp_path)
    config = config_for_server(
        estkit_server,
        tmp_path / "node",
        key_types=("p256",),
        hostnames=("refused-node.nmos.test",),
        manufacturer_certificate=cert,
        manufacturer_key=key,
        max_attempts=1,
    )
    node = NmosNode(config)
    node.fetch_root_ca()
    store = estkit_server.open_store()
    before = max((e.id for e in store.list_events()), default=0)
    with pytest.raises(ProvisioningError) as info:
        node.enroll("ecdsa")
    assert not info.value.pending
    assert "403" in str(info.value) or "401" in str(info.value)
    assert "client certificate" in str(info.value).lower()
    # The refusal reached the server and was recorded there with its reason.
    refusals = store.list_events(kind="refused", since_id=before)
    assert refusals, "the request did not reach the server"
    assert "certificate" in refusals[-1].message.lower()
    assert not (tmp_path / "node" / "ecdsa-pending-key.pem").exists()


def test_manual_approval_202_retry_after_then_issued_c10(
    estkit_server: Any, tmp_path: Path, events: EventLog
) -> None:
    config = config_for_server(
        estkit_server,
        tmp_path / "node",
        label="manual",
        key_types=("p256",),
        hostnames=("manual-node.nmos.test",),
        max_attempts=30,
    )
    node = NmosNode(config, on_event=events)
    node.fetch_root_ca()
    store = estkit_server.open_store()
    outcome: list[Any] = []
    worker = threading.Thread(target=lambda: outcome.append(node.enroll("ecdsa")), daemon=True)
    worker.start()
    deadline = time.monotonic() + 20
    pending: list[Any] = []
    while time.monotonic() < deadline and not pending:
        pending = [
            r
            for r in store.list_requests(status="pending")
            if r.common_name == "manual-node.nmos.test"
        ]
        time.sleep(0.1)
    assert pending, "the request never reached the approval queue"
    store.decide_request(pending[0].id, True, by="test operator")
    worker.join(timeout=30)
    assert outcome, "enrollment did not finish after approval"
    assert dns_names(outcome[0].certificate) == ["manual-node.nmos.test"]
    assert any("202" in m or "pending" in m for m in events.messages("info"))


def test_proof_of_possession_label_works_c7(estkit_server: Any, tmp_path: Path) -> None:
    config = config_for_server(estkit_server, tmp_path / "node", label="pop", key_types=("p256",))
    node = NmosNode(config)
    node.fetch_root_ca()
    outcome = node.enroll("ecdsa")
    assert outcome.cert_path.is_file()


def test_discovered_servers_are_tried_in_order_c12_d5(
    estkit_server: Any, dns_server: Any, tmp_path: Path, events: EventLog
) -> None:
    """Best advert is dead: the node moves on to the next one, without backing off first."""
    dead = free_port()
    zone = Zone().host("localhost", "127.0.0.1")
    zone.advert("dead", "localhost", dead, txt=("pri=1",))
    zone.advert("live", "localhost", estkit_server.port, txt=("pri=2",))
    dns = dns_server(zone)
    config = config_for_server(estkit_server, tmp_path / "node", key_types=("p256",)).with_changes(
        server=ServerSettings(),
        discovery=DiscoverySettings(domain=DOMAIN, dns_server=dns.address),
    )
    clock = ManualClock()
    result = run_workflow(NmosNode(config, on_event=events, clock=clock), renew=False)
    assert clock.sleeps == []  # another server was available: no backoff (C12)
    assert result.certificates[0].server.port == estkit_server.port
    warnings = events.messages("warning")
    assert any(f"localhost:{dead}" in w for w in warnings)
    assert f"query[PTR] _nmos-certs._tcp.{DOMAIN}" in dns.queries()


def test_configured_label_overrides_the_discovered_api_selector(
    estkit_server: Any, dns_server: Any, tmp_path: Path
) -> None:
    zone = Zone().host("localhost", "127.0.0.1")
    zone.advert("live", "localhost", estkit_server.port, txt=("pri=1",))  # no api_selector
    dns = dns_server(zone)
    config = config_for_server(estkit_server, tmp_path / "node", key_types=("p256",)).with_changes(
        server=ServerSettings(label="short"),
        discovery=DiscoverySettings(domain=DOMAIN, dns_server=dns.address),
    )
    result = run_workflow(NmosNode(config), renew=False)
    issued = result.certificates[0].certificate
    assert result.certificates[0].server.label == "short"
    # The "short" label issues ~10-second certificates: the server really used that profile.
    lifetime = issued.not_valid_after_utc - issued.not_valid_before_utc
    assert lifetime.total_seconds() < 3600


def test_agent_rediscovers_after_each_failure_d5(
    estkit_server: Any, dns_server: Any, tmp_path: Path
) -> None:
    """D5: a failed step forgets the adverts, so the next one asks DNS-SD again."""
    from estkit.nmos.agent import RenewalAgent

    zone = Zone().host("localhost", "127.0.0.1")
    zone.advert("dead", "localhost", free_port(), txt=("pri=1",))
    dns = dns_server(zone)
    config = config_for_server(estkit_server, tmp_path / "node", key_types=("p256",)).with_changes(
        server=ServerSettings(),
        discovery=DiscoverySettings(domain=DOMAIN, dns_server=dns.address),
        max_attempts=1,
    )
    clock = ManualClock()
    agent = RenewalAgent(NmosNode(config, clock=clock))
    lookups = f"query[PTR] _nmos-certs._tcp.{DOMAIN}"
    for step in range(1, 4):
        outcome = agent.run_once()
        assert outcome.next_at is not None  # it will try again
        assert dns.queries().count(lookups) == step
        clock.set(outcome.next_at)
    assert not (tmp_path / "node" / "ecdsa-cert.pem").exists()


def test_key_files_are_0600_even_with_a_permissive_umask(
    estkit_server: Any, tmp_path: Path
) -> None:
    old = os.umask(0)
    try:
        config = config_for_server(estkit_server, tmp_path / "node", key_types=("p256",))
        node = NmosNode(config)
        node.fetch_root_ca()
        outcome = node.enroll("ecdsa")
    finally:
        os.umask(old)
    assert stat.S_IMODE(outcome.key_path.stat().st_mode) == 0o600
