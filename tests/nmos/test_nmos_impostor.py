"""A provisioned node against impostors (issue 20 item 1; C4, C5, C14, C15).

The attacker of the issue: another `estkit server` answering on the real server's address (after
the real one stopped) that even trusts the victim's manufacturer CA, or a spoofed unicast DNS-SD
answer pointing the node at it. Each test shows the node really talked to the impostor (the TLS
handshake was refused by the node for the stated reason) and that NOTHING on disk changed: every
file of the node's directory has the same bytes and mtime as before (state.json aside, which
records the failure), and the impostor issued nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from estkit.cli.main import cli
from estkit.nmos.agent import RenewalAgent
from estkit.nmos.config import DiscoverySettings, NodeConfig, ServerSettings, save_node_config
from estkit.nmos.node import NmosNode
from estkit.server.config import add_trusted_client_root
from estkit.server.datadir import InitResult, init_data_dir
from estkit.server.runner import RunningServer, start_server_thread

from .conftest import EventLog
from .dns_fixture import DOMAIN, Zone, free_port

Snapshot = dict[str, tuple[bytes, int]]


def snapshot(directory: Path) -> Snapshot:
    """Bytes and mtime of every file but the agent's state (which records the failure)."""
    return {
        path.name: (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(directory.iterdir())
        if path.name != "state.json"
    }


class Servers:
    """Real estkit servers started in a test, stopped at teardown."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.running: list[RunningServer] = []

    def start(self, name: str, port: int, *, trusts: Path | None = None) -> InitResult:
        paths = init_data_dir(self.base / name, key_type="p256")
        if trusts is not None:
            add_trusted_client_root(paths.data_dir, trusts, None)
        self.running.append(start_server_thread(paths.data_dir, port=port))
        return paths

    def stop_all(self) -> None:
        for server in self.running:
            server.stop()
        self.running.clear()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    started = Servers(tmp_path / "servers")
    try:
        yield started
    finally:
        started.stop_all()


def node_config(real: InitResult, out_dir: Path, **changes: object) -> NodeConfig:
    config = NodeConfig(
        output_dir=out_dir,
        hostnames=("node1.nmos.test",),
        key_types=("p256",),
        manufacturer_certificate=real.device_certificate,
        manufacturer_key=real.device_key,
        check_revocation=False,
    )
    return config.with_changes(**changes) if changes else config


def issued_by(paths: InitResult) -> int:
    from estkit.ca.store import open_store

    store = open_store(paths.database_url)
    try:
        return len(store.list_issued())
    finally:
        store.close()


def test_impostor_on_the_same_address_gets_nothing_c4_c14_c15(
    servers: Servers, tmp_path: Path
) -> None:
    port = free_port()
    real = servers.start("real", port)
    config = node_config(real, tmp_path / "node", server=ServerSettings("localhost", port))
    config_path = tmp_path / "node.toml"
    save_node_config(config, config_path)
    first = CliRunner().invoke(cli, ["nmos", "agent", "--config", str(config_path), "--once"])
    assert first.exit_code == 0, first.output + first.stderr
    before = snapshot(tmp_path / "node")
    assert {"root-ca.pem", "ecdsa-cert.pem", "ecdsa-key.pem"} <= set(before)

    # The real server goes away; an impostor with its own CA takes its address and trusts the
    # victim's (public) manufacturer CA, so it would happily enroll the node.
    servers.stop_all()
    impostor = servers.start("impostor", port, trusts=real.manufacturer_ca)
    issued_before = issued_by(impostor)

    result = CliRunner().invoke(cli, ["nmos", "agent", "--config", str(config_path), "--once"])
    assert result.exit_code == 1
    text = result.output + result.stderr
    assert "does not verify against the installed root CA" in text
    # The node reached the impostor and refused its TLS certificate (signed by another CA).
    assert "unable to get local issuer certificate" in text
    assert "trusting it explicitly" not in text
    assert snapshot(tmp_path / "node") == before
    assert issued_by(impostor) == issued_before  # no CSR ever reached it


def test_operator_flag_moves_the_node_only_with_new_certificates_in_hand_c15(
    servers: Servers, tmp_path: Path
) -> None:
    """`--new-network`: the person's word is the evidence; still nothing is replaced until the
    new certificate is issued and validated."""
    port = free_port()
    real = servers.start("real", port)
    config = node_config(real, tmp_path / "node", server=ServerSettings("localhost", port))
    config_path = tmp_path / "node.toml"
    save_node_config(config, config_path)
    assert CliRunner().invoke(cli, ["nmos", "agent", "--config", str(config_path), "--once"])
    before = snapshot(tmp_path / "node")
    servers.stop_all()
    # The new network's server does NOT trust this device's manufacturer: it refuses to enroll.
    servers.start("elsewhere", port)
    refused = CliRunner().invoke(
        cli, ["nmos", "agent", "--config", str(config_path), "--once", "--new-network"]
    )
    assert refused.exit_code == 1
    assert "NEW NETWORK (C15, the operator declared a new network)" in refused.output
    assert snapshot(tmp_path / "node") == before  # root and pair kept: the refusal came first

    servers.stop_all()
    elsewhere = servers.start("elsewhere-ok", port, trusts=real.manufacturer_ca)
    moved = CliRunner().invoke(
        cli, ["nmos", "agent", "--config", str(config_path), "--once", "--new-network"]
    )
    assert moved.exit_code == 0, moved.output + moved.stderr
    root = (tmp_path / "node" / "root-ca.pem").read_bytes()
    assert root == Path(elsewhere.root_ca).read_bytes()
    assert (tmp_path / "node" / "ecdsa-cert.pem").read_bytes() != before["ecdsa-cert.pem"][0]
    assert "moved to the new network" in moved.output


def test_spoofed_dns_sd_answer_gets_nothing_d1_c15(
    servers: Servers, dns_server: object, tmp_path: Path, events: EventLog
) -> None:
    real_port, impostor_port = free_port(), free_port()
    real = servers.start("real", real_port)
    genuine = Zone().host("localhost", "127.0.0.1")
    genuine.advert("est", "localhost", real_port, txt=("pri=10",))
    dns = dns_server(genuine)  # type: ignore[operator]
    config = node_config(
        real,
        tmp_path / "node",
        discovery=DiscoverySettings(domain=DOMAIN, dns_server=dns.address),
    )
    assert RenewalAgent(NmosNode(config, on_event=events)).run_once().errors == []
    before = snapshot(tmp_path / "node")

    # The attacker answers the node's DNS-SD query: SRV to its own server, TXT pri=0 (best).
    servers.start("impostor", impostor_port, trusts=real.manufacturer_ca)
    spoofed = Zone().host("localhost", "127.0.0.1")
    spoofed.advert("evil", "localhost", impostor_port, txt=("pri=0",))
    spoof = dns_server(spoofed)  # type: ignore[operator]
    config = config.with_changes(
        discovery=DiscoverySettings(domain=DOMAIN, dns_server=spoof.address)
    )
    events.clear()
    step = RenewalAgent(NmosNode(config, on_event=events)).run_once()
    assert step.errors and "does not verify against the installed root CA" in step.errors[0]
    assert f"localhost:{impostor_port}" in step.errors[0]
    assert f"query[SRV] evil._nmos-certs._tcp.{DOMAIN}" in spoof.queries()
    assert not any("explicitly" in m for m in events.messages())
    assert snapshot(tmp_path / "node") == before
