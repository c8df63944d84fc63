"""The node's TOML configuration (C2, C3, C4, C13) and the IS-04 tag (C17)."""

from __future__ import annotations

from pathlib import Path

import pytest

from estkit.nmos.config import (
    NodeConfig,
    load_node_config,
    parse_host_port,
    save_node_config,
)
from estkit.nmos.errors import NodeConfigError
from estkit.nmos.is04 import CERTPROV_TAG, certprov_tag


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_defaults_follow_bcp_003_03(tmp_path: Path) -> None:
    config = load_node_config(write(tmp_path, '[node]\noutput_dir = "certs"\nhostnames = ["n1"]\n'))
    assert config.est_enabled and config.auto_renew  # C2: both default on
    assert config.explicit_trust  # C4: default enabled
    assert config.server.host is None  # C3: unset -> discover
    assert config.renewal_fraction == 0.8  # C13
    assert config.slots == {"rsa": "rsa2048", "ecdsa": "p256"}  # C7: one RSA, one ECDSA
    assert config.output_dir == tmp_path / "certs"  # relative to the file
    assert config.root_ca_path == tmp_path / "certs" / "root-ca.pem"


def test_full_file_round_trips_through_save(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[est]
enabled = false
auto_renew = false
explicit_trust = false
renewal_fraction = 0.66
max_attempts = 3
[server]
host = "est.example.com"
port = 9443
label = "nmos"
[discovery]
domain = "example.com"
dns_server = "127.0.0.1:5353"
allow_dev_servers = true
[node]
hostnames = ["a.example.com", "b.example.com"]
key_types = ["rsa3072", "p384"]
manufacturer_certificate = "m/device.pem"
manufacturer_key = "m/device.key"
output_dir = "/var/lib/node"
on_change = ["systemctl", "reload", "node"]
""",
    )
    config = load_node_config(path)
    assert not config.est_enabled and not config.auto_renew and not config.explicit_trust
    assert config.server.host == "est.example.com" and config.server.label == "nmos"
    assert config.manufacturer_certificate == tmp_path / "m" / "device.pem"
    assert config.output_dir == Path("/var/lib/node")
    assert config.on_change == ("systemctl", "reload", "node")
    copy = tmp_path / "copy.toml"
    save_node_config(config, copy)
    again = load_node_config(copy)
    assert again.with_changes(source=None) == config.with_changes(source=None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[node]\noutput_dir = "c"\nauto_renewal = false\n', "unknown setting"),
        ('[est]\nauto_renew = false\n[node]\nhostnames=["n"]\n', "output_dir is required"),
        ('[est]\nrenewal_fraction = 0.3\n[node]\noutput_dir = "c"\n', "50%"),
        ('[server]\nport = true\n[node]\noutput_dir = "c"\n', "should be a int"),
        (
            '[node]\noutput_dir = "c"\nkey_types = ["rsa2048", "rsa4096"]\n',
            "two of the same algorithm",
        ),
        ('[node]\noutput_dir = "c"\nkey_types = ["dsa"]\n', "unknown key type"),
        ('[node]\noutput_dir = "c"\nmanufacturer_key = "k"\n', "together"),
        ("[node\n", "not valid TOML"),
    ],
)
def test_mistakes_are_refused_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(NodeConfigError, match=message) as info:
        load_node_config(write(tmp_path, text))
    assert info.value.hint


def test_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(NodeConfigError, match="does not exist") as info:
        load_node_config(tmp_path / "absent.toml")
    assert "example" in (info.value.hint or "")


def test_host_port_parsing() -> None:
    assert parse_host_port("127.0.0.1:5353", 53) == ("127.0.0.1", 5353)
    assert parse_host_port("dns.example", 53) == ("dns.example", 53)
    assert parse_host_port("[::1]:5353", 53) == ("::1", 5353)
    assert parse_host_port("::1", 53) == ("::1", 53)
    with pytest.raises(NodeConfigError):
        parse_host_port("host:99999", 53)


def test_is04_tag_lists_v1_0_when_enabled_and_nothing_when_disabled_c17() -> None:
    assert certprov_tag(True) == {"urn:x-nmos:tag:certprov": ["v1.0"]}
    assert certprov_tag(False) == {CERTPROV_TAG: []}


def test_hostnames_are_required(tmp_path: Path) -> None:
    with pytest.raises(NodeConfigError, match="hostname"):
        NodeConfig(output_dir=tmp_path, hostnames=())
