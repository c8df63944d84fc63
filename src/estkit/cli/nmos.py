"""``estkit nmos``: the NMOS node side of BCP-003-03 from the command line.

Thin on purpose: every command builds a :class:`estkit.nmos.NodeConfig`, hands it to
:class:`estkit.nmos.NmosNode` / :class:`estkit.nmos.RenewalAgent`, and renders the node's events
and results with rich (or JSON). No provisioning logic lives here.

The node's modules (and httpx, cryptography.x509, asn1crypto under them) are imported inside the
commands: ``workflow`` first starts making its keys in a background thread, then imports them, so
both happen at once (issue 23). This module itself imports only what its options and error
handling need, so that the thread starts as early as it can.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from estkit.cli.main import loading
from estkit.cli.options import (
    DEFAULT_DATA_DIR,
    DIRECTORY,
    EXISTING_FILE,
    FILE,
    certificate_and_key_options,
    limit_option,
    option_group,
)
from estkit.cli.output import (
    console,
    err_console,
    error_hint,
    escape,
    fail,
    friendly_errors,
    name_flags,
    print_json,
    print_table,
)
from estkit.client.errors import EstError, printable
from estkit.nmos.errors import NmosError
from estkit.protocol.limits import DEFAULT_MAX_ATTEMPTS

if TYPE_CHECKING:
    from cryptography import x509
    from rich.table import Table

    from estkit.nmos.agent import RenewalAgent
    from estkit.nmos.config import NodeConfig
    from estkit.nmos.node import NodeEvent
    from estkit.nmos.workflow import WorkflowResult

# Where `estkit server serve` keeps its demo data (see estkit.cli.server): when it exists in the
# current directory, the workflow borrows its demo device credentials so that
# `estkit nmos workflow --ip localhost --port 8443` needs no other flags.
DEMO_DATA_DIR = DEFAULT_DATA_DIR
DEFAULT_OUT_DIR = Path("estkit-node")
DEFAULT_EST_PORT = 8443
EXPECTED_ERRORS = (NmosError, EstError, OSError)
# The node's settings (NodeConfig fields, install_by_hand parameters) as this command group's
# options: errors and warnings name the setting, the person at the terminal reads the flag.
NMOS_FLAGS = {
    "allow_dev_servers": "--allow-dev-servers",
    "dns_server": "--dns-server HOST[:PORT]",
    "domain": "--domain",
    "server": "--ip/--port",
    "config_path": "--config",
    "config_example": "`estkit nmos config-example` prints an example",
    "manufacturer_credentials": "--cert/--key",
    "key_path": "--key",
    "root_ca_file": "--cacert",
    "install_root": "`estkit nmos install --ca PEM`",
    "explicit_trust": "explicit_trust = true in the node configuration",
    "new_network_confirmed": "--new-network",
    "hostnames": "--hostname",
    "server_advertise": "`estkit server serve --advertise` on the server",
}

_EVENT_STYLE = {
    "step": ("bold cyan", "→"),
    "info": ("dim", " ·"),
    "warning": ("yellow", " !"),
    "success": ("green", " ✓"),
    "failure": ("bold red", " ✗"),
}

EXAMPLE_CONFIG = """\
# estkit NMOS node configuration (BCP-003-03). Relative paths are relative to this file.
[est]
enabled = true            # C2: EST on/off (IS-04 tag urn:x-nmos:tag:certprov follows it)
auto_renew = true         # C2: automatic renewal on/off
explicit_trust = true     # C4: trust the EST server for the first /cacerts without validation
renewal_fraction = 0.8    # C13: renew at 80% of the lifetime (0.5 .. 0.99)
min_renewal_interval_seconds = 3600  # never renew more often than this (except on revocation)
reprovision_on_new_network = true    # C15: only when the node's DNS domain or discovery domain
                                     # changed (or `agent --new-network`); never on a server's word
max_attempts = 5
check_revocation = true   # C16: OCSP (AIA) first, CRL distribution point as fallback
revocation_check_seconds = 3600

# [server]                # C3: uncomment to configure the EST server by hand (else DNS-SD)
# host = "est.example.com"
# port = 443
# label = "nmos"

[discovery]               # D1-D5: unicast DNS-SD of _nmos-certs._tcp
# domain = "example.com"  # default: the system's search domain
# dns_server = "192.0.2.53:53"
mdns = false              # D1: only if you trust the link
allow_dev_servers = false # D3: pri >= 100

[node]
hostnames = ["node1.example.com"]       # CN and DNS SANs (C7)
key_types = ["rsa2048", "p256"]         # one RSA and one ECDSA certificate
manufacturer_certificate = "manufacturer/device.pem"
manufacturer_key = "manufacturer/device.key"
output_dir = "certs"
# on_change = "systemctl reload my-nmos-node"   # ESTKIT_CERT, ESTKIT_KEY, ... in the environment
"""


def render_event(event: NodeEvent, *, quiet: bool) -> None:
    """Progress lines; under --json only warnings and failures, and on stderr."""
    if quiet and event.kind not in ("warning", "failure"):
        return
    style, mark = _EVENT_STYLE.get(event.kind, ("", " ·"))
    slot = f"{event.slot.upper()}: " if event.slot else ""
    target = err_console if quiet else console
    message = name_flags(event.message, NMOS_FLAGS)
    target.print(f"[{style}]{mark}[/] {escape(slot + message)}", soft_wrap=True)


def _name(name: x509.Name) -> str:
    """The CN alone when there is one: full RFC 4514 subjects do not fit a terminal table."""
    from cryptography.x509.oid import NameOID

    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else name.rfc4514_string()


def _certificate_rows(result: WorkflowResult) -> list[list[str]]:
    from estkit.protocol.certs import dns_names

    rows = []
    for outcome in result.certificates:
        cert: x509.Certificate = outcome.certificate
        rows.append(
            [
                outcome.slot.upper() + (" (renewed)" if outcome.renewed else ""),
                _name(cert.subject),
                ", ".join(dns_names(cert)),
                _name(cert.issuer),
                f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S}",
                f"{Path(outcome.cert_path).name}\n{Path(outcome.key_path).name}",
            ]
        )
    return rows


def show_workflow_result(result: WorkflowResult) -> None:
    # File names only: full paths would fold mid-name in a terminal table; the directories are
    # printed under it and --json has the absolute paths.
    print_table(
        "NMOS node certificates",
        ("key type", "subject", "SANs", "issuer", "notAfter (UTC)", "files"),
        _certificate_rows(result),
        no_wrap=5,
    )
    directories = sorted({str(Path(o.cert_path).parent) for o in result.certificates})
    console.print(f"certificate and key files in: {', '.join(directories)}", soft_wrap=True)
    console.print(f"root CA: {result.root_ca}", soft_wrap=True)


def _demo_credentials() -> tuple[Path | None, Path | None]:
    """The demo device credentials of ./estkit-data, when that directory exists."""
    if not DEMO_DATA_DIR.is_dir():
        return None, None
    manufacturer = DEMO_DATA_DIR / "manufacturer"
    cert, key = manufacturer / "device.pem", manufacturer / "device.key"
    if cert.is_file() and key.is_file():
        return cert.absolute(), key.absolute()
    return None, None


# Where and how to look for the EST server by DNS-SD (BCP-003-03 D1-D5).
_discovery_options = option_group(
    click.option("--domain", help="DNS domain to browse (default: system search domain)."),
    click.option("--dns-server", metavar="HOST[:PORT]", help="Ask this DNS server only."),
    click.option("--mdns", is_flag=True, help="Browse mDNS instead (D1: opt-in only)."),
    click.option(
        "--allow-dev-servers", is_flag=True, help="Also use adverts with pri >= 100 (D3)."
    ),
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def nmos() -> None:
    """NMOS node (BCP-003-03): discovery, provisioning workflow, renewal agent."""


@nmos.command()
@click.option("--ip", "host", metavar="HOST", help="EST server host (else discover by DNS-SD).")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_EST_PORT, show_default=True)
@click.option("--discover", is_flag=True, help="Find the server by DNS-SD (the default).")
@_discovery_options
@click.option("--label", help="EST label (/.well-known/est/LABEL/...).")
@click.option(
    "--cacert",
    type=FILE,
    help="Where to write the root CA [default: OUT_DIR/root-ca.pem].",
)
@certificate_and_key_options(
    "--cert", "Manufacturer certificate [default: ./estkit-data demo device, if present].", "--key"
)
@click.option(
    "--hostname",
    "hostnames",
    multiple=True,
    help="Name for CN and SAN (repeatable) [default: this machine's FQDN].",
)
@click.option(
    "--out-dir",
    type=DIRECTORY,
    default=DEFAULT_OUT_DIR,
    show_default=True,
)
@limit_option("--max-attempts", click.IntRange(1, 100), DEFAULT_MAX_ATTEMPTS)
@click.option("--no-renew", is_flag=True, help="Skip the renewal demonstration.")
@click.option(
    "--require-server-validation",
    is_flag=True,
    help="Disable explicit trust (C4): the server must verify against --cacert.",
)
@click.option(
    "--new-network",
    is_flag=True,
    help="OUT_DIR holds the root of another network: accept this server's root and re-provision "
    "(C15); nothing is replaced until the new certificates are in hand.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@friendly_errors(*EXPECTED_ERRORS, flags=NMOS_FLAGS)
def workflow(
    host: str | None,
    port: int,
    discover: bool,
    domain: str | None,
    dns_server: str | None,
    mdns: bool,
    allow_dev_servers: bool,
    label: str | None,
    cacert: Path | None,
    cert: Path | None,
    key: Path | None,
    hostnames: Sequence[str],
    out_dir: Path,
    max_attempts: int,
    no_renew: bool,
    require_server_validation: bool,
    new_network: bool,
    as_json: bool,
) -> None:
    """Get the root CA, an RSA and an ECDSA certificate, and renew them once (the prototype's
    workflow, BCP-003-03 C4-C13)."""
    if host and discover:
        fail("--ip and --discover exclude each other", "give one of them", code=2)
    if (cert is None) != (key is None):
        fail("--cert and --key go together", "pass both, or neither to use the demo device", code=2)
    if cert is None:
        cert, key = _demo_credentials()
        if cert is not None and not as_json:
            console.print(f"[dim]using the demo device credentials of ./{DEMO_DATA_DIR}[/]")
    if require_server_validation and (cacert is None or not cacert.is_file()):
        fail(
            "--require-server-validation needs --cacert with the root CA to validate against",
            "pass --cacert PEM (e.g. estkit-data/ca/root.pem)",
            code=2,
        )
    # The keys are made in a background thread while the node's modules load and the node talks
    # to the server (issue 23); run_workflow takes them from here.
    with loading():
        from estkit.nmos.config import DEFAULT_KEY_TYPES
        from estkit.nmos.prefetch import KeyPrefetch, workflow_key_types

        keys = KeyPrefetch(workflow_key_types(DEFAULT_KEY_TYPES, renew=not no_renew))
        from estkit.nmos.config import DiscoverySettings, NodeConfig, ServerSettings
        from estkit.nmos.node import NmosNode
        from estkit.nmos.workflow import run_workflow

    out_dir = out_dir.absolute()
    config = NodeConfig(
        output_dir=out_dir,
        root_ca_file=cacert.absolute() if cacert else None,
        hostnames=tuple(hostnames) or (socket.getfqdn(),),
        manufacturer_certificate=cert,
        manufacturer_key=key,
        key_types=DEFAULT_KEY_TYPES,
        explicit_trust=not require_server_validation,
        new_network_confirmed=new_network,
        max_attempts=max_attempts,
        server=ServerSettings(host=host, port=port, label=label)
        if host
        else ServerSettings(label=label),
        discovery=DiscoverySettings(
            domain=domain, dns_server=dns_server, mdns=mdns, allow_dev_servers=allow_dev_servers
        ),
    )
    node = NmosNode(config, on_event=lambda event: render_event(event, quiet=as_json))
    try:
        result = run_workflow(node, renew=not no_renew, keys=keys)
    except NmosError as exc:
        fail(f"NMOS workflow failed: {exc}", error_hint(exc, NMOS_FLAGS))
    if as_json:
        print_json(result.to_json())
    else:
        show_workflow_result(result)


@nmos.command()
@_discovery_options
@click.option("--json", "as_json", is_flag=True)
@friendly_errors(*EXPECTED_ERRORS, flags=NMOS_FLAGS)
def discover(
    domain: str | None, dns_server: str | None, mdns: bool, allow_dev_servers: bool, as_json: bool
) -> None:
    """List the EST servers advertised by DNS-SD, in the order a node tries them (D1-D5)."""
    from rich.table import Table

    from estkit.nmos.discovery import discover_mdns, discover_unicast

    if mdns:
        result = discover_mdns(allow_dev_servers=allow_dev_servers)
    else:
        result = discover_unicast(
            domain, dns_server=dns_server, allow_dev_servers=allow_dev_servers
        )
    if as_json:
        print_json(
            {
                "domain": result.domain,
                "servers": [
                    {
                        "instance": advert.instance,
                        "host": advert.host,
                        "port": advert.port,
                        "priority": advert.priority,
                        "label": advert.label,
                        "addresses": list(advert.addresses),
                        "url": advert.est_url,
                        "source": advert.source,
                    }
                    for advert in result.adverts
                ],
                "warnings": [name_flags(warning, NMOS_FLAGS) for warning in result.warnings],
            }
        )
        return
    for warning in (name_flags(warning, NMOS_FLAGS) for warning in result.warnings):
        # DNS-SD records are whatever the network says: escaped like any server text.
        err_console.print(f"[yellow]warning:[/] {escape(printable(warning))}", soft_wrap=True)
    table = Table(title=f"EST servers ({result.domain})")
    for column in ("#", "pri", "URL", "addresses", "instance"):
        table.add_column(column)
    for index, advert in enumerate(result.adverts, 1):
        table.add_row(
            str(index),
            str(advert.priority),
            escape(printable(advert.est_url)),
            ", ".join(advert.addresses),
            escape(printable(advert.instance)),
        )
    console.print(table)


def _load(config_path: Path) -> NodeConfig:
    from estkit.nmos.config import load_node_config

    return load_node_config(config_path)


@contextmanager
def _stop_on_signals(agent: RenewalAgent) -> Iterator[None]:
    """SIGTERM/SIGINT stop the agent within moments: a sleep is cut short, an EST exchange the
    agent is blocked in is abandoned (never a file write: those are not socket operations), and
    the state of the last finished step stays on disk."""
    from estkit.client.deadline import interrupt_blocking_io

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, _frame: object) -> None:
        err_console.print(f"[dim]{signal.Signals(signum).name}: stopping[/]")
        agent.stop()
        interrupt_blocking_io()

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@nmos.command()
@click.option("--config", "config_path", type=FILE, required=True)
@click.option("--once", is_flag=True, help="Do what is due now, then exit (for cron/timers).")
@click.option(
    "--new-network",
    is_flag=True,
    help="This node was moved to another network: accept the root CA of the EST server found "
    "there and re-provision (C15). The current root and certificates are replaced only once "
    "the new certificates are in hand.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="With --once: print what was done as one JSON document (events go to stderr).",
)
@friendly_errors(*EXPECTED_ERRORS, flags=NMOS_FLAGS)
def agent(config_path: Path, once: bool, new_network: bool, as_json: bool) -> None:
    """Keep the node's root CA and certificates valid (renewal agent, C2-C17)."""
    from estkit.client.deadline import RequestCancelled
    from estkit.nmos.agent import RenewalAgent
    from estkit.nmos.node import NmosNode

    if as_json and not once:
        fail("--json needs --once (the agent itself runs until stopped)", code=2)
    config = _load(config_path)
    if new_network:
        config = config.with_changes(new_network_confirmed=True)
    node = NmosNode(config, on_event=lambda event: render_event(event, quiet=as_json))
    runner = RenewalAgent(node)
    if once:
        with _stop_on_signals(runner):
            try:
                step = runner.run_once()
            except RequestCancelled:
                if as_json:
                    print_json({"stopped": True, "actions": [], "errors": []})
                    raise SystemExit(1) from None
                console.print("agent stopped before finishing; state of the last step kept")
                return
        if as_json:
            state = node.store.load_state()
            print_json(
                {
                    "stopped": False,
                    "actions": list(step.actions),
                    "errors": list(step.errors),
                    "next_action": state.get("next_action"),
                    "next_action_at": step.next_at.isoformat() if step.next_at else None,
                }
            )
            if step.errors:
                raise SystemExit(1)
            return
        for action in step.actions:
            console.print(f"[green]done:[/] {action}")
        when = step.next_at.isoformat() if step.next_at else "nothing scheduled"
        console.print(f"next: {node.store.load_state().get('next_action')} at {when}")
        if step.errors:
            fail(step.errors[-1], "see `estkit nmos status --config ...` and the messages above")
        return
    console.print(f"[bold]estkit nmos agent[/] ({config_path}); SIGTERM or Ctrl-C stops it")
    with _stop_on_signals(runner):
        runner.run()
    console.print("agent stopped; state saved")


def _status_table(status: dict[str, Any]) -> Table:
    from rich.table import Table

    table = Table(title="NMOS node certificates")
    columns = ("key type", "state", "subject", "notAfter", "renew at", "revocation", "failures")
    for column in (*columns, "file"):
        table.add_column(column)
    for entry in status["certificates"]:
        revocation = entry.get("revocation")
        table.add_row(
            entry["key_type"],
            entry["state"] + (" (pending approval)" if entry["pending_approval"] else ""),
            entry.get("subject") or "-",
            entry.get("not_after") or "-",
            entry.get("renew_at") or "-",
            f"{revocation['status']} ({revocation['method'] or 'no answer'}) "
            f"at {revocation['checked_at']}"
            if revocation
            else "not checked yet",
            str(entry["failures"]),
            entry["certificate"],
        )
    return table


@nmos.command()
@click.option("--config", "config_path", type=FILE, required=True)
@click.option("--json", "as_json", is_flag=True)
@friendly_errors(*EXPECTED_ERRORS, flags=NMOS_FLAGS)
def status(config_path: Path, as_json: bool) -> None:
    """Certificates, expiry, next action, last error and the IS-04 tag (C17). Offline."""
    from estkit.nmos.agent import node_status
    from estkit.nmos.node import NmosNode

    config = _load(config_path)
    info = node_status(NmosNode(config))
    if as_json:
        print_json(info)
        return
    console.print(f"EST enabled: {info['est_enabled']}   automatic renewal: {info['auto_renew']}")
    root = info["root_ca"]
    if root:
        console.print(f"root CA: {root['subject']} until {root['not_after']} ({root['path']})")
    else:
        console.print("root CA: [yellow]not installed[/]")
    console.print(_status_table(info))
    revocation = info["revocation"]
    if revocation["checked_at"]:
        console.print(
            f"revocation (C16): checked at {revocation['checked_at']}, next check at "
            f"{revocation['next_check_at'] or '-'}",
            markup=False,
        )
        for name, result in revocation["results"].items():
            console.print(f"  {name}: {result['detail']}", markup=False)
    else:
        console.print(f"revocation (C16): {revocation['note'] or 'not checked yet'}", markup=False)
    console.print(f"next action: {info['next_action'] or '-'} at {info['next_action_at'] or '-'}")
    if info["last_error"]:
        console.print(f"last error ({info['last_error_at']}): [red]{info['last_error']}[/]")
    console.print(f"manufacturer certificate: {info['manufacturer_certificate']['state']}")
    console.print(f"IS-04 tags: {info['tags']}")


@nmos.command()
@click.option("--config", "config_path", type=FILE, required=True)
@click.option("--ca", "ca_path", type=EXISTING_FILE, required=True)
@click.option("--cert", "cert_path", type=EXISTING_FILE)
@click.option("--key", "key_path", type=EXISTING_FILE)
@click.option("--json", "as_json", is_flag=True, help="Print what was installed as JSON.")
@friendly_errors(*EXPECTED_ERRORS, flags=NMOS_FLAGS)
def install(
    config_path: Path,
    ca_path: Path,
    cert_path: Path | None,
    key_path: Path | None,
    as_json: bool,
) -> None:
    """Install a root CA, and optionally a TLS certificate + key, by hand (C6)."""
    from estkit.nmos.install import install_by_hand
    from estkit.nmos.node import NmosNode

    if (cert_path is None) != (key_path is None):
        fail("--cert and --key go together", "pass both or neither", code=2)
    config = _load(config_path)
    node = NmosNode(config, on_event=lambda event: render_event(event, quiet=as_json))
    installed = install_by_hand(node, ca_path, cert_path, key_path)
    if as_json:
        print_json({"installed": list(installed)})
        return
    for line in installed:
        console.print(f"[green]installed:[/] {line}")


@nmos.command("config-example")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the example's settings as JSON instead."
)
def config_example(as_json: bool) -> None:
    """Print an example node.toml to start from."""
    if as_json:
        import tomllib

        print_json(tomllib.loads(EXAMPLE_CONFIG))
        return
    click.echo(EXAMPLE_CONFIG, nl=False)


__all__ = ["EXPECTED_ERRORS", "nmos", "render_event", "show_workflow_result"]
