"""The node's configuration: one TOML file a device vendor or an operator edits.

Why a file and these defaults: BCP-003-03 asks for switches that must exist on every device
(EST on/off and automatic renewal on/off, C2; server host/port/label settable by hand but unset by
default so the node discovers, C3; explicit trust on by default, C4). Unknown keys are refused
because a typo such as ``auto_renewal = false`` silently ignored would leave renewal on.

Example::

    [est]
    enabled = true            # C2
    auto_renew = true         # C2
    explicit_trust = true     # C4
    renewal_fraction = 0.8    # C13 (0.5 .. 0.99)
    reprovision_on_new_network = true   # C15, only on local evidence
    min_renewal_interval_seconds = 3600

    [server]                  # C3: leave out to discover by DNS-SD
    host = "est.example.com"
    port = 443
    label = "nmos"

    [discovery]
    domain = "example.com"
    dns_server = "192.0.2.53:53"

    [node]
    hostnames = ["node1.example.com"]
    key_types = ["rsa2048", "p256"]
    manufacturer_certificate = "manufacturer/device.pem"
    manufacturer_key = "manufacturer/device.key"
    output_dir = "certs"
    on_change = "systemctl reload my-nmos-node"

Relative paths are resolved against the directory holding the TOML file.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from estkit.nmos.errors import NodeConfigError
from estkit.nmos.schedule import DEFAULT_RENEWAL_FRACTION, validate_renewal_fraction
from estkit.protocol.keys import KEY_TYPES
from estkit.protocol.limits import DEFAULT_MAX_ATTEMPTS
from estkit.protocol.paths import split_host_port
from estkit.tomlcheck import check_keys, expect, read_toml

# BCP-003-03 C7 asks for one certificate per signature algorithm: one RSA and one ECDSA.
DEFAULT_KEY_TYPES = ("rsa2048", "p256")
DEFAULT_EST_PORT = 443
# C16: how often the agent fetches CRLs for its certificates when nothing else is due.
DEFAULT_REVOCATION_CHECK_SECONDS = 3600
# A hard upper bound on attempts so a misconfigured node cannot loop on one server forever.
MAX_CONFIGURABLE_ATTEMPTS = 100
# Renewal floor (issue 20): a server issuing seconds-long certificates must not make the node
# re-enroll (a new key each time) in a loop; one hour keeps a fleet's load negligible.
DEFAULT_MIN_RENEWAL_INTERVAL_SECONDS = 3600
ROOT_CA_FILENAME = "root-ca.pem"


def slot_for_key_type(key_type: str) -> str:
    """``"rsa"`` or ``"ecdsa"``: the name a certificate is filed under (one per algorithm, C7)."""
    if key_type not in KEY_TYPES:
        raise NodeConfigError(
            f"unknown key type {key_type!r}",
            hint=f"use one of {', '.join(KEY_TYPES)}",
        )
    return "rsa" if key_type.startswith("rsa") else "ecdsa"


def parse_host_port(value: str, default_port: int) -> tuple[str, int]:
    """Split ``HOST[:PORT]``, ``[V6]:PORT`` or a bare IPv6 address (see split_host_port)."""
    try:
        return split_host_port(value, default_port)
    except ValueError as exc:
        raise NodeConfigError(str(exc), hint="use HOST or HOST:PORT, port 1..65535") from None


@dataclass(frozen=True)
class ServerSettings:
    """A hand-configured EST server (C3). ``host`` None means "discover"."""

    host: str | None = None
    port: int = DEFAULT_EST_PORT
    label: str | None = None


@dataclass(frozen=True)
class DiscoverySettings:
    """Where and how to look for ``_nmos-certs._tcp`` adverts (D1-D5)."""

    domain: str | None = None
    dns_server: str | None = None
    mdns: bool = False
    allow_dev_servers: bool = False


@dataclass(frozen=True)
class NodeConfig:
    """Everything the node and its agent need; build it in code or load it from TOML."""

    output_dir: Path
    hostnames: tuple[str, ...] = field(default_factory=lambda: (socket.getfqdn(),))
    manufacturer_certificate: Path | None = None
    manufacturer_key: Path | None = None
    key_types: tuple[str, ...] = DEFAULT_KEY_TYPES
    est_enabled: bool = True
    auto_renew: bool = True
    explicit_trust: bool = True
    renewal_fraction: float = DEFAULT_RENEWAL_FRACTION
    # C15: re-provision from scratch when local evidence shows a new network (False: only by
    # hand, `estkit nmos install`). See NmosNode.new_network_evidence.
    reprovision_on_new_network: bool = True
    # The operator's word that the node is in a new network (CLI --new-network; not in TOML,
    # so that it cannot stay switched on by accident).
    new_network_confirmed: bool = False
    min_renewal_interval_seconds: int = DEFAULT_MIN_RENEWAL_INTERVAL_SECONDS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    check_revocation: bool = True
    revocation_check_seconds: int = DEFAULT_REVOCATION_CHECK_SECONDS
    server: ServerSettings = field(default_factory=ServerSettings)
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    root_ca_file: Path | None = None
    on_change: str | tuple[str, ...] | None = None
    source: Path | None = None

    def __post_init__(self) -> None:
        if not self.hostnames or any(not name for name in self.hostnames):
            raise NodeConfigError(
                "at least one hostname is needed for the certificates' CN and SAN (C7)",
                hint='set [node] hostnames = ["node.example.com"]',
            )
        slots = [slot_for_key_type(kt) for kt in self.key_types]
        if not slots:
            raise NodeConfigError(
                "no key types configured", hint='e.g. key_types = ["rsa2048", "p256"]'
            )
        if len(set(slots)) != len(slots):
            raise NodeConfigError(
                f"key types {list(self.key_types)} hold two of the same algorithm",
                hint="configure at most one RSA and one ECDSA key type (one certificate each, C7)",
            )
        try:
            validate_renewal_fraction(self.renewal_fraction)
        except ValueError as exc:
            raise NodeConfigError(str(exc), hint="set [est] renewal_fraction = 0.8") from None
        if not 1 <= self.max_attempts <= MAX_CONFIGURABLE_ATTEMPTS:
            raise NodeConfigError(
                f"max_attempts {self.max_attempts} out of range",
                hint=f"use 1..{MAX_CONFIGURABLE_ATTEMPTS}",
            )
        if self.min_renewal_interval_seconds < 0:
            raise NodeConfigError(
                f"min_renewal_interval_seconds {self.min_renewal_interval_seconds} is negative",
                hint=f"use e.g. {DEFAULT_MIN_RENEWAL_INTERVAL_SECONDS}",
            )
        if (self.manufacturer_certificate is None) != (self.manufacturer_key is None):
            raise NodeConfigError(
                "the manufacturer certificate and key must be given together",
                hint="set both manufacturer_certificate and manufacturer_key, or neither",
            )

    @property
    def root_ca_path(self) -> Path:
        """Where the EST-obtained root CA lives (C5): the trust anchor for later connections."""
        return self.root_ca_file or self.output_dir / ROOT_CA_FILENAME

    @property
    def slots(self) -> dict[str, str]:
        """``{"rsa": "rsa2048", "ecdsa": "p256"}``: certificate slot -> key type."""
        return {slot_for_key_type(kt): kt for kt in self.key_types}

    def with_changes(self, **changes: Any) -> NodeConfig:
        return replace(self, **changes)


_SECTIONS: dict[str, dict[str, str]] = {
    "est": {
        "enabled": "est_enabled",
        "auto_renew": "auto_renew",
        "explicit_trust": "explicit_trust",
        "renewal_fraction": "renewal_fraction",
        "reprovision_on_new_network": "reprovision_on_new_network",
        "min_renewal_interval_seconds": "min_renewal_interval_seconds",
        "max_attempts": "max_attempts",
        "check_revocation": "check_revocation",
        "revocation_check_seconds": "revocation_check_seconds",
    },
    "node": {
        "hostnames": "hostnames",
        "key_types": "key_types",
        "manufacturer_certificate": "manufacturer_certificate",
        "manufacturer_key": "manufacturer_key",
        "output_dir": "output_dir",
        "root_ca": "root_ca_file",
        "on_change": "on_change",
    },
}
_PATH_FIELDS = ("manufacturer_certificate", "manufacturer_key", "output_dir", "root_ca_file")
_BOOL_FIELDS = (
    "est_enabled",
    "auto_renew",
    "explicit_trust",
    "check_revocation",
    "reprovision_on_new_network",
)


def _expect(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    return expect(value, kind, where, error=NodeConfigError)


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    check_keys(table, allowed, where, error=NodeConfigError)


def config_from_mapping(
    data: Mapping[str, Any], base_dir: Path, source: Path | None = None
) -> NodeConfig:
    """Build a :class:`NodeConfig` from parsed TOML; relative paths are taken from ``base_dir``."""
    _check_keys(data, {"est", "node", "server", "discovery"}, "top level")
    kwargs: dict[str, Any] = {}
    for section, mapping in _SECTIONS.items():
        table = _expect(data.get(section, {}), dict, f"[{section}]")
        _check_keys(table, set(mapping), section)
        for key, attr in mapping.items():
            if key not in table:
                continue
            value = table[key]
            where = f"[{section}] {key}"
            if attr in _BOOL_FIELDS:
                value = _expect(value, bool, where)
            elif attr in _PATH_FIELDS:
                path = Path(_expect(value, str, where)).expanduser()
                value = path if path.is_absolute() else (base_dir / path)
            elif attr in ("hostnames", "key_types"):
                items = _expect(value, list, where)
                value = tuple(_expect(item, str, where) for item in items)
            elif attr == "renewal_fraction":
                value = float(_expect(value, (int, float), where))
            elif attr in (
                "max_attempts",
                "revocation_check_seconds",
                "min_renewal_interval_seconds",
            ):
                value = _expect(value, int, where)
            elif attr == "on_change":
                if isinstance(value, list):
                    value = tuple(_expect(item, str, where) for item in value)
                else:
                    value = _expect(value, str, where)
            kwargs[attr] = value

    server_table = _expect(data.get("server", {}), dict, "[server]")
    _check_keys(server_table, {"host", "port", "label"}, "server")
    port = _expect(server_table.get("port", DEFAULT_EST_PORT), int, "[server] port")
    if not 0 < port < 65536:
        raise NodeConfigError(f"[server] port {port} out of range", hint="use 1..65535")
    label = server_table.get("label")
    kwargs["server"] = ServerSettings(
        host=_expect(server_table["host"], str, "[server] host")
        if "host" in server_table
        else None,
        port=port,
        label=_expect(label, str, "[server] label") if label is not None else None,
    )

    disc = _expect(data.get("discovery", {}), dict, "[discovery]")
    _check_keys(disc, {"domain", "dns_server", "mdns", "allow_dev_servers"}, "discovery")
    kwargs["discovery"] = DiscoverySettings(
        domain=_expect(disc["domain"], str, "[discovery] domain") if "domain" in disc else None,
        dns_server=(
            _expect(disc["dns_server"], str, "[discovery] dns_server")
            if "dns_server" in disc
            else None
        ),
        mdns=_expect(disc.get("mdns", False), bool, "[discovery] mdns"),
        allow_dev_servers=_expect(
            disc.get("allow_dev_servers", False), bool, "[discovery] allow_dev_servers"
        ),
    )
    if "output_dir" not in kwargs:
        raise NodeConfigError(
            "[node] output_dir is required: where certificates, keys and the state file live",
            hint='add output_dir = "certs" under [node]',
        )
    return NodeConfig(source=source, **kwargs)


def load_node_config(path: str | Path) -> NodeConfig:
    """Read and validate a node TOML file."""
    config_path = Path(path).expanduser().resolve()
    try:
        data = read_toml(config_path, error=NodeConfigError)
    except FileNotFoundError:
        raise NodeConfigError(
            f"node configuration {config_path} does not exist",
            hint="create it (the estkit.nmos.config module docstring has an example), or name "
            "another node configuration file",
            params=("config_path", "config_example"),
        ) from None
    return config_from_mapping(data, config_path.parent, source=config_path)


def config_to_mapping(config: NodeConfig) -> dict[str, Any]:
    """The TOML structure of ``config`` (absolute paths), for :func:`save_node_config`."""
    node: dict[str, Any] = {
        "hostnames": list(config.hostnames),
        "key_types": list(config.key_types),
        "output_dir": str(config.output_dir),
    }
    if config.manufacturer_certificate is not None and config.manufacturer_key is not None:
        node["manufacturer_certificate"] = str(config.manufacturer_certificate)
        node["manufacturer_key"] = str(config.manufacturer_key)
    if config.root_ca_file is not None:
        node["root_ca"] = str(config.root_ca_file)
    if config.on_change is not None:
        node["on_change"] = (
            config.on_change if isinstance(config.on_change, str) else list(config.on_change)
        )
    data: dict[str, Any] = {
        "est": {
            "enabled": config.est_enabled,
            "auto_renew": config.auto_renew,
            "explicit_trust": config.explicit_trust,
            "renewal_fraction": config.renewal_fraction,
            "reprovision_on_new_network": config.reprovision_on_new_network,
            "min_renewal_interval_seconds": config.min_renewal_interval_seconds,
            "max_attempts": config.max_attempts,
            "check_revocation": config.check_revocation,
            "revocation_check_seconds": config.revocation_check_seconds,
        },
        "node": node,
    }
    if config.server.host is not None:
        server: dict[str, Any] = {"host": config.server.host, "port": config.server.port}
        if config.server.label is not None:
            server["label"] = config.server.label
        data["server"] = server
    disc: dict[str, Any] = {
        "mdns": config.discovery.mdns,
        "allow_dev_servers": config.discovery.allow_dev_servers,
    }
    if config.discovery.domain is not None:
        disc["domain"] = config.discovery.domain
    if config.discovery.dns_server is not None:
        disc["dns_server"] = config.discovery.dns_server
    data["discovery"] = disc
    return data


def save_node_config(config: NodeConfig, path: str | Path) -> None:
    """Write ``config`` as TOML (atomically: a node reading it mid-write sees old or new)."""
    import tomli_w  # only for writing a configuration (issue 23: not on every start)

    from estkit.fileio import write_file_atomic

    write_file_atomic(Path(path), tomli_w.dumps(config_to_mapping(config)).encode("utf-8"))
