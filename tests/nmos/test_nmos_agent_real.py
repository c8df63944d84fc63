"""The renewal agent and its commands against real estkit servers over TLS (C5, C6, C13-C17)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from estkit.cli.main import cli
from estkit.nmos.agent import RenewalAgent
from estkit.nmos.clock import ManualClock
from estkit.nmos.config import save_node_config
from estkit.nmos.node import NmosNode
from estkit.protocol.certs import load_pem_certificates, sha256_fingerprint
from estkit.server.config import load_config, save_config

from .conftest import EventLog, config_for_server
from .dns_fixture import free_port
from .witnesses import openssl_verify

# Generous bound for the one real-time renewal (10-second certificates renew after 8 s).
REAL_RENEWAL_TIMEOUT_SECONDS = 40


def serial_on_disk(path: Path) -> int:
    return load_pem_certificates(path.read_bytes())[0].serial_number


def test_short_lived_certificate_is_really_renewed_end_to_end(
    estkit_server: Any, tmp_path: Path, events: EventLog
) -> None:
    """`short` label: ~10-second certificates; the agent renews at 80% on the wall clock."""
    # The renewal floor (default one hour) is lowered for this one real-time renewal.
    config = config_for_server(
        estkit_server,
        tmp_path / "node",
        label="short",
        key_types=("p256",),
        min_renewal_interval_seconds=0,
    )
    agent = RenewalAgent(NmosNode(config, on_event=events))
    worker = threading.Thread(target=agent.run, daemon=True)
    worker.start()
    cert_file = tmp_path / "node" / "ecdsa-cert.pem"
    deadline = time.monotonic() + REAL_RENEWAL_TIMEOUT_SECONDS
    while time.monotonic() < deadline and not any(
        m.startswith("renewed ") for m in events.messages("success")
    ):
        time.sleep(0.2)
    agent.stop()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the agent did not stop"
    renewed = [m for m in events.messages("success") if m.startswith("renewed ")]
    assert renewed, events.text()
    first = next(m for m in events.messages("success") if m.startswith("installed "))
    current = serial_on_disk(cert_file)
    assert format(current, "x") in renewed[-1]
    assert format(current, "x") not in first
    record = estkit_server.open_store().get_issued(format(current, "x"))
    assert record is not None and record.operation == "simplereenroll" and record.label == "short"


def test_revoked_certificate_is_dropped_and_replaced_via_the_crl_c16(
    fresh_server: Any, tmp_path: Path, events: EventLog
) -> None:
    server = fresh_server()
    server_config = load_config(server.paths.config)
    save_config(
        dataclasses.replace(server_config, crl_url=f"https://localhost:{server.port}/crl"),
        server.paths.config,
    )
    clock = ManualClock(datetime.now(UTC))
    config = config_for_server(server, tmp_path / "node", key_types=("p256",))
    agent = RenewalAgent(NmosNode(config, clock=clock, on_event=events))
    agent.run_once()
    cert_file = tmp_path / "node" / "ecdsa-cert.pem"
    revoked_serial = serial_on_disk(cert_file)
    result = CliRunner().invoke(
        cli,
        ["server", "revoke", str(server.data_dir), format(revoked_serial, "x"), "--reason",
         "keyCompromise"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    clock.advance(3601)  # the hourly revocation check is due
    step = agent.run_once()
    assert "revoked, dropped: ecdsa" in step.actions, events.text()
    assert "ecdsa: provisioned" in step.actions
    replacement = serial_on_disk(cert_file)
    assert replacement != revoked_serial
    store = server.open_store()
    assert store.get_issued(format(revoked_serial, "x")).status == "revoked"
    assert store.get_issued(format(replacement, "x")).operation == "simpleenroll"
    assert any("revoked" in m and "/crl" in m for m in events.messages("warning"))


def test_root_rollover_on_a_real_server_moves_trust_without_a_gap_c5(
    fresh_server: Any, tmp_path: Path, events: EventLog
) -> None:
    server = fresh_server()
    # The certificate is moved to the new issuer right after the rollover: no minimum interval.
    config = config_for_server(
        server, tmp_path / "node", key_types=("p256",), min_renewal_interval_seconds=0
    )
    RenewalAgent(NmosNode(config, on_event=events)).run_once()
    old_root = load_pem_certificates((tmp_path / "node" / "root-ca.pem").read_bytes())[0]
    old_serial = serial_on_disk(tmp_path / "node" / "ecdsa-cert.pem")

    result = CliRunner().invoke(cli, ["server", "rollover", str(server.data_dir), "--json"])
    assert result.exit_code == 0, result.output
    new_fingerprint = json.loads(result.stdout)["new_root_fingerprint"]

    # A restart of the agent re-checks /cacerts (still over TLS verified by the old root).
    step = RenewalAgent(NmosNode(config, on_event=events)).run_once()
    assert "root CA: rollover" in step.actions, events.text()
    anchors = load_pem_certificates((tmp_path / "node" / "root-ca.pem").read_bytes())
    assert sha256_fingerprint(anchors[0]) == new_fingerprint
    assert old_root in anchors  # the old root stays trusted: no gap
    assert "ecdsa: renewed" in step.actions
    cert_file = tmp_path / "node" / "ecdsa-cert.pem"
    assert serial_on_disk(cert_file) != old_serial
    verdict = openssl_verify(tmp_path / "node" / "root-ca.pem", cert_file)
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr


def write_config(server: Any, tmp_path: Path, **changes: object) -> Path:
    config = config_for_server(server, tmp_path / "node", key_types=("p256",), **changes)
    path = tmp_path / "node.toml"
    save_node_config(config, path)
    return path


def test_agent_once_status_and_is04_tag_cli_c17(estkit_server: Any, tmp_path: Path) -> None:
    path = write_config(estkit_server, tmp_path)
    runner = CliRunner()
    once = runner.invoke(cli, ["nmos", "agent", "--config", str(path), "--once"])
    assert once.exit_code == 0, once.output
    assert "done: ecdsa: provisioned" in once.stdout
    status = runner.invoke(cli, ["nmos", "status", "--config", str(path), "--json"])
    assert status.exit_code == 0, status.output
    data = json.loads(status.stdout)
    assert data["tags"] == {"urn:x-nmos:tag:certprov": ["v1.0"]}
    [entry] = data["certificates"]
    assert entry["state"] == "valid" and entry["key_type"] == "ecdsa"
    assert entry["dns_names"] == ["node1.nmos.test"]
    assert data["next_action"] == "renew the ecdsa certificate"
    assert datetime.fromisoformat(data["next_action_at"]) < datetime.fromisoformat(
        entry["not_after"]
    )
    human = runner.invoke(cli, ["nmos", "status", "--config", str(path)])
    assert human.exit_code == 0 and "urn:x-nmos:tag:certprov" in human.stdout


def test_agent_once_failure_exits_non_zero_with_the_reason(
    estkit_server: Any, tmp_path: Path
) -> None:
    config = config_for_server(estkit_server, tmp_path / "node", key_types=("p256",))
    config = config.with_changes(server=dataclasses.replace(config.server, port=free_port()))
    path = tmp_path / "node.toml"
    save_node_config(config, path)
    result = CliRunner().invoke(cli, ["nmos", "agent", "--config", str(path), "--once"])
    assert result.exit_code == 1
    assert "root CA check failed" in result.stderr
    assert "Traceback" not in result.output + result.stderr
    status = json.loads(
        CliRunner().invoke(cli, ["nmos", "status", "--config", str(path), "--json"]).stdout
    )
    assert "cannot connect" in status["last_error"]


def test_agent_exits_cleanly_on_sigterm(estkit_server: Any, tmp_path: Path) -> None:
    path = write_config(estkit_server, tmp_path)
    env = dict(os.environ, COLUMNS="200")
    process = subprocess.Popen(
        [sys.executable, "-m", "estkit.cli.main", "nmos", "agent", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        cert_file = tmp_path / "node" / "ecdsa-cert.pem"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not cert_file.exists():
            time.sleep(0.1)
        assert cert_file.exists(), "the agent did not provision"
        time.sleep(0.3)  # let it reach its long sleep until the renewal time
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, out + err
    assert "SIGTERM: stopping" in err
    assert "agent stopped; state saved" in out
    state = json.loads((tmp_path / "node" / "state.json").read_text())
    assert state["next_action"] == "renew the ecdsa certificate"


def test_install_root_and_certificate_by_hand_c6(estkit_server: Any, tmp_path: Path) -> None:
    # Certificates obtained elsewhere (here: by a one-shot workflow into another directory).
    source = tmp_path / "elsewhere"
    elsewhere = NmosNode(config_for_server(estkit_server, source, key_types=("p256",)))
    elsewhere.fetch_root_ca()
    elsewhere.enroll("ecdsa")
    path = write_config(estkit_server, tmp_path)
    result = CliRunner().invoke(
        cli,
        ["nmos", "install", "--config", str(path), "--ca", str(source / "root-ca.pem"),
         "--cert", str(source / "ecdsa-cert.pem"), "--key", str(source / "ecdsa-key.pem")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    installed = tmp_path / "node" / "ecdsa-cert.pem"
    assert serial_on_disk(installed) == serial_on_disk(source / "ecdsa-cert.pem")
    assert oct((tmp_path / "node" / "ecdsa-key.pem").stat().st_mode & 0o777) == "0o600"
    status = json.loads(
        CliRunner().invoke(cli, ["nmos", "status", "--config", str(path), "--json"]).stdout
    )
    assert status["certificates"][0]["state"] == "valid"
    assert status["root_ca"]["path"] == str(tmp_path / "node" / "root-ca.pem")


def test_install_refuses_a_key_of_another_certificate_c6(
    estkit_server: Any, tmp_path: Path
) -> None:
    source = tmp_path / "elsewhere"
    other = NmosNode(config_for_server(estkit_server, source, key_types=("rsa2048", "p256")))
    other.fetch_root_ca()
    other.enroll("ecdsa")
    other.enroll("rsa")
    path = write_config(estkit_server, tmp_path)
    result = CliRunner().invoke(
        cli,
        ["nmos", "install", "--config", str(path), "--ca", str(source / "root-ca.pem"),
         "--cert", str(source / "ecdsa-cert.pem"), "--key", str(source / "rsa-key.pem")],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "does not belong" in result.stderr
    assert not (tmp_path / "node" / "ecdsa-cert.pem").exists()
