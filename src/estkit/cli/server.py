"""``estkit server …``: run and operate the EST server with its own CA (issue 2's CLI contract).

Only argument parsing and presentation live here; what the commands do is in
:mod:`estkit.server` and :mod:`estkit.ca`, so a library user gets exactly the same behaviour.
"""

from __future__ import annotations

import errno
import getpass
import ipaddress
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
from cryptography import x509
from rich.table import Table

from estkit.ca.authority import CaError, CertificateAuthority
from estkit.ca.profiles import ProfileError
from estkit.ca.store import CertificateStore, RequestStateError, StoreError, open_store
from estkit.cli.output import EXIT_USAGE, console, fail, friendly_errors, print_json
from estkit.console.cli import CONSOLE_COMMANDS
from estkit.console.runner import ConsoleStartError, console_settings, start_console
from estkit.protocol.certs import format_fingerprint, sha256_fingerprint
from estkit.protocol.errors import PathError
from estkit.server.approval import approve_if_allowed, judge
from estkit.server.config import (
    ConfigError,
    ServerConfig,
    add_label,
    add_trusted_client_root,
    add_user,
    load_config,
)
from estkit.server.datadir import DataDirExistsError, InitResult, init_data_dir
from estkit.server.revocation import revoke_certificate

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_DATA_DIR = Path("estkit-data")
# --key-type takes the short family names of the contract and the exact key types.
# ec means P-256: with OpenSSL 3.0, a P-384 signature costs ~40x a P-256 one (1.1 ms vs 0.025 ms,
# `openssl speed ecdsap256 ecdsap384`), paid on every issuance and every client's chain check.
_CA_KEY_TYPES = {"ec": "p256", "rsa": "rsa3072"}
_EXPECTED_ERRORS = (
    ConfigError,
    StoreError,
    CaError,
    ProfileError,
    PathError,
    DataDirExistsError,
    ConsoleStartError,
    ValueError,
    OSError,
)

data_dir_argument = click.argument(
    "data_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path)
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


def _command(func: F) -> F:
    """Expected failures become one clear message; KeyError text loses its quotes."""
    guarded = friendly_errors(*_EXPECTED_ERRORS)(func)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return guarded(*args, **kwargs)
        except KeyError as exc:
            fail(str(exc.args[0]) if exc.args else "not found")

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper  # type: ignore[return-value]


def _config(data_dir: Path) -> ServerConfig:
    return load_config(data_dir)


@contextmanager
def _store(data_dir: Path) -> Iterator[CertificateStore]:
    store = open_store(_config(data_dir).database_url)
    try:
        yield store
    finally:
        store.close()


def _operator() -> str:
    try:
        return f"{getpass.getuser()} (cli)"
    except (KeyError, OSError):
        return "operator (cli)"


@click.group("server", context_settings={"help_option_names": ["-h", "--help"]})
def server() -> None:
    """EST server with its own CA: init, serve, and operate (certs, revoke, approvals)."""


# --- init -------------------------------------------------------------------------------------


def _print_init(result: InitResult) -> None:
    console.print(f"[bold]Created an estkit server data directory in {result.data_dir}[/]")
    rows = [
        ("configuration", result.config),
        ("CA certificates (trust this)", result.ca_certificates),
        ("root CA", result.root_ca),
        ("server TLS certificates", ", ".join(str(p) for p in result.server_certificates)),
        ("demo manufacturer CA", result.manufacturer_ca),
        ("demo device certificate", result.device_certificate),
        ("demo device key", result.device_key),
        ("certificate store", result.database_url),
    ]
    table = Table(show_header=False, box=None, pad_edge=False)
    for name, value in rows:
        table.add_row(f"  {name}", str(value))
    console.print(table)
    console.print(f"  CA fingerprint: {result.ca_fingerprint}")


@server.command("init")
@data_dir_argument
@click.option(
    "--hostname",
    "hostnames",
    multiple=True,
    metavar="NAME",
    help="Host name for the server's TLS certificates; repeatable (default: localhost).",
)
@click.option(
    "--key-type",
    type=click.Choice([*sorted(_CA_KEY_TYPES), "p256", "p384", "p521", "rsa2048", "rsa3072"]),
    default="ec",
    show_default=True,
    help="CA key: ec (P-256) or rsa (RSA 3072), or an exact key type.",
)
@click.option("--db", "db_url", metavar="URL", help="Store URL (default: DIR/estkit.db).")
@click.option("--force", is_flag=True, help="Replace an existing CA (old keys stay on disk).")
@json_option
@_command
def init_command(
    data_dir: Path,
    hostnames: tuple[str, ...],
    key_type: str,
    db_url: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """Create DIR: root + issuing CA, TLS certificates, demo manufacturer and device, config."""
    result = init_data_dir(
        data_dir,
        hostnames=hostnames or ("localhost",),
        key_type=_CA_KEY_TYPES.get(key_type, key_type),
        db_url=db_url,
        force=force,
    )
    if as_json:
        print_json(result.to_json())
    else:
        _print_init(result)
        console.print(f"Start it with: estkit server serve {result.data_dir}")


# --- serve ------------------------------------------------------------------------------------


def _banner(info: Any, paths: InitResult, consoles: list[Any]) -> None:
    url = info.url
    cacert = paths.ca_certificates
    device, device_key = paths.device_certificate, paths.device_key
    workers = f" ({info.workers} workers)" if info.workers > 1 else ""
    console.print(f"[bold green]estkit EST server listening on {url}{workers}[/]")
    console.print(f"  data directory:  {info.data_dir}")
    authority = CertificateAuthority.load(load_config(info.data_dir).ca_directory)
    console.print(
        f"  CA fingerprint:  SHA-256 {format_fingerprint(authority.root_certificate)}",
        soft_wrap=True,
    )
    console.print(f"  trust anchor:    {cacert}")
    labels = ", ".join(info.labels) if info.labels else "(none besides the default)"
    console.print(f"  labels:          {labels}")
    console.print(f"  CRL:             {url}/crl")
    for handle in consoles:  # the web console, when it is on
        console.print(f"  web console:     {handle.url}", soft_wrap=True)
        # Never the token itself: this banner ends up in logs (issue 24).
        console.print(
            f"  console sign-in: estkit server console-login {info.data_dir} --operator NAME",
            soft_wrap=True,
        )
        console.print(
            "                   (or an operator certificate: "
            f"estkit server admin-cert {info.data_dir} NAME)",
            soft_wrap=True,
        )
    if not info.verify_in_app:
        console.print(
            "[yellow]  client certificates are verified in the TLS handshake (fallback mode)[/]"
        )
    console.print("[bold]Try it:[/]")
    console.print(f"  curl --cacert {cacert} {url}/.well-known/est/cacerts", soft_wrap=True)
    console.print(
        "  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        "-keyout node.key -subj /CN=node1.example.com -outform DER | base64 > node.b64",
        soft_wrap=True,
    )
    console.print(
        f"  curl --cacert {cacert} --cert {device} --key {device_key} "
        "-H 'Content-Type: application/pkcs10' --data-binary @node.b64 "
        f"{url}/.well-known/est/simpleenroll",
        soft_wrap=True,
    )
    console.print(
        f"  estkit client enroll --server {url} --trust {cacert} --cert {device} "
        f"--key {device_key} --key-type p256 --cn node1.example.com --out-cert node.pem "
        "--out-key node.key",
        soft_wrap=True,
    )
    # The name clients must use (the certificate holds names, not addresses: BCP-003-01 T4).
    public_host = urlsplit(url).hostname or info.host
    console.print(f"  estkit nmos workflow --ip {public_host} --port {info.port}", soft_wrap=True)
    console.print("Press Ctrl+C to stop.", style="dim")


def _setup_logging(level: str, workers: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    process = " [%(process)d]" if workers > 1 else ""
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s %(name)s{process}: %(message)s")
    )
    root = logging.getLogger("estkit")
    root.addHandler(handler)
    root.setLevel(level.upper())


@server.command("serve")
@click.argument(
    "data_dir", metavar="[DIR]", required=False, type=click.Path(file_okay=False, path_type=Path)
)
@click.option("--host", help="Address to listen on (default: from the config, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default: config, 8443).")
@click.option(
    "--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="Processes."
)
@click.option("--advertise", is_flag=True, help="Announce the server over mDNS (labs only, D1).")
@click.option("--advertise-label", metavar="L", help="api_selector TXT value for --advertise.")
@click.option("--pri", type=click.IntRange(min=0), help="TXT pri for --advertise (default: 100).")
@click.option(
    "--admin-port",
    type=click.IntRange(0, 65535),
    help="Serve the operator web console on this port (default: off, or the [console] table).",
)
@click.option(
    "--admin-host", metavar="HOST", help="Address of the web console (default: 127.0.0.1)."
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@_command
def serve_command(
    data_dir: Path | None,
    host: str | None,
    port: int | None,
    workers: int,
    advertise: bool,
    advertise_label: str | None,
    pri: int | None,
    admin_port: int | None,
    admin_host: str | None,
    log_level: str,
) -> None:
    """Run the server in the foreground (default DIR: ./estkit-data, created on first run).

    With --admin-port (or "[console] enabled = true" in estkit.toml) the operator web console
    listens on its own HTTPS port; sign in with the printed link or an operator certificate from
    "estkit server admin-cert".
    """
    from estkit.server.runner import ServerInfo, serve

    if data_dir is None:
        data_dir = DEFAULT_DATA_DIR
        if not (data_dir / "estkit.toml").exists():
            console.print(f"First run: creating demo data in ./{DEFAULT_DATA_DIR}")
            _print_init(init_data_dir(data_dir))
    elif not (data_dir / "estkit.toml").exists():
        fail(
            f"{data_dir} is not an estkit server data directory (no estkit.toml)",
            f"create it with `estkit server init {data_dir}`",
        )
    config = _config(data_dir)
    if advertise_label is not None and advertise_label not in config.labels:
        fail(
            f"--advertise-label {advertise_label!r} is not a label of this server "
            f"(configured: {', '.join(sorted(config.labels)) or 'none'})",
            f"add it with `estkit server add-label {data_dir} {advertise_label}`",
            code=EXIT_USAGE,
        )
    paths = InitResult.for_directory(data_dir)
    _setup_logging(log_level, workers)
    advertisement: list[Any] = []
    admin_console = _admin_console(data_dir, admin_host, admin_port)
    consoles: list[Any] = []

    def start_admin_console() -> Callable[[], None]:
        handle = start_console(data_dir, host=admin_console[0], port=admin_console[1])
        consoles.append(handle)
        return handle.stop

    def on_ready(info: ServerInfo) -> None:
        _banner(info, paths, consoles)
        if advertise:
            from estkit.server.dnssd import MdnsAdvertisement, MdnsError

            address = info.host if info.host not in ("0.0.0.0", "::") else "127.0.0.1"
            ad = MdnsAdvertisement(
                port=info.port,
                addresses=[address],
                pri=100 if pri is None else pri,
                label=advertise_label,
                interfaces=[address] if ipaddress.ip_address(address).is_loopback else None,
            )
            try:
                ad.start()
            except MdnsError as exc:
                logging.getLogger("estkit.server").warning("%s; serving without it", exc)
                return
            advertisement.append(ad)
            console.print(f"  advertised over mDNS as {ad.name}")

    listen_host, listen_port = host or config.host, config.port if port is None else port
    try:
        status = serve(
            data_dir,
            host=listen_host,
            port=listen_port,
            workers=workers,
            on_ready=on_ready,
            sidecar=start_admin_console if admin_console else None,
        )
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            fail(
                f"cannot listen on {listen_host}:{listen_port}: {exc.strerror or exc}",
                "another program may be using the port, or the address is not on this host; "
                "choose --host/--port",
            )
        raise
    finally:
        for ad in advertisement:
            ad.stop()
    console.print("server stopped")
    raise SystemExit(status)


def _admin_console(data_dir: Path, host: str | None, port: int | None) -> tuple[str, int] | None:
    """Where the web console listens, or None when it is off (flags override [console])."""
    settings = console_settings(data_dir)
    if port is None and host is None and not settings.enabled:
        return None
    return host or settings.host, settings.port if port is None else port


# --- certificates and revocation --------------------------------------------------------------


@server.command("certs")
@data_dir_argument
@click.option("--status", type=click.Choice(["valid", "revoked"]), help="Only this status.")
@click.option("--label", metavar="L", help="Only this label.")
@json_option
@_command
def certs_command(data_dir: Path, status: str | None, label: str | None, as_json: bool) -> None:
    """List the certificates the server issued."""
    with _store(data_dir) as store:
        records = store.list_issued(status=status, label=label)
    if as_json:
        print_json([record.to_json() for record in records])
        return
    table = Table(title=f"{len(records)} issued certificate(s)")
    for column in ("serial", "subject", "not after", "operation", "label", "key", "status"):
        table.add_column(column, overflow="fold")
    for record in records:
        style = "red" if record.status == "revoked" else None
        table.add_row(
            record.serial,
            record.subject,
            record.not_after.strftime("%Y-%m-%d %H:%M:%SZ"),
            record.operation,
            record.label or "-",
            record.key_type,
            record.status,
            style=style,
        )
    console.print(table)


@server.command("revoke")
@data_dir_argument
@click.argument("serial", metavar="SERIAL")
@click.option(
    "--reason",
    default="unspecified",
    show_default=True,
    help="RFC 5280 reason, e.g. keyCompromise.",
)
@json_option
@_command
def revoke_command(data_dir: Path, serial: str, reason: str, as_json: bool) -> None:
    """Revoke an issued certificate (hex SERIAL) and regenerate the CRL."""
    with _store(data_dir) as store:
        record, crl_path = revoke_certificate(_config(data_dir), store, serial, reason)
    if as_json:
        print_json({**record.to_json(), "crl": str(crl_path)})
        return
    console.print(f"revoked {record.serial} ({record.subject}), reason {record.revocation_reason}")
    console.print(f"CRL written to {crl_path}; a running server serves it at /crl")


# --- approval queue ---------------------------------------------------------------------------


@server.command("requests")
@data_dir_argument
@click.option(
    "--status",
    type=click.Choice(["pending", "approved", "rejected", "issued", "all"]),
    default="pending",
    show_default=True,
)
@json_option
@_command
def requests_command(data_dir: Path, status: str, as_json: bool) -> None:
    """List enrollment requests waiting for (or decided by) an operator (S4)."""
    config = _config(data_dir)
    authority = CertificateAuthority.load(config.ca_directory)
    with _store(data_dir) as store:
        requests = store.list_requests(None if status == "all" else status)
        # What policy says now (label, CSR policy, client certificate revocation): shown so the
        # operator does not approve what the server would refuse (approve enforces it too).
        verdicts = {
            request.id: judge(config, authority, store, request)
            for request in requests
            if request.status == "pending"
        }
    if as_json:
        print_json(
            [
                {
                    **request.to_json(),
                    "policy_now": verdicts[request.id].to_json()
                    if request.id in verdicts
                    else None,
                }
                for request in requests
            ]
        )
        return
    if not requests:
        console.print(f"no {'' if status == 'all' else status + ' '}requests")
        return
    for request in requests:
        # Two columns that fold (wrap) long values: identifiers such as the 71-character
        # fingerprint are wrapped, never cut, and the table fits 80 columns.
        table = Table(title=f"request {request.id} ({request.status})", show_header=False)
        table.add_column("field", style="bold", no_wrap=True)
        table.add_column("value", overflow="fold")
        rows = [
            ("received", request.created_at.isoformat()),
            ("label / operation", f"{request.label or '(default)'} / {request.operation}"),
            ("common name", request.common_name or "-"),
            ("DNS names", ", ".join(request.dns_names) or "-"),
            ("key type", request.key_type),
            ("client trust", request.client_trust or "not recorded"),
            ("client certificate", request.client_subject or "none presented"),
            ("client cert issuer", request.client_issuer or "-"),
            ("client cert SHA-256", request.client_fingerprint or "-"),
            ("HTTP user", request.http_user or "-"),
            ("peer address", request.peer_address or "-"),
            ("requester", request.requester or "-"),
            ("when queued", request.verdict or "not recorded"),
        ]
        if request.id in verdicts:
            verdict = verdicts[request.id]
            rows.append(
                ("policy now", f"{'allows' if verdict.allowed else 'REFUSES'}: {verdict.reason}")
            )
        if request.decided_by:
            rows.append(("decided by", f"{request.decided_by} {request.note}".strip()))
        if request.serial:
            rows.append(("serial", request.serial))
        for name, value in rows:
            table.add_row(name, value)
        console.print(table)
    pending = [r.id for r in requests if r.status == "pending"]
    if pending:
        console.print(
            f"approve with: estkit server approve {data_dir} ID   (or reject ... ID)", style="dim"
        )


def _decide(data_dir: Path, request_id: int, approve: bool, note: str, as_json: bool) -> None:
    with _store(data_dir) as store:
        try:
            if approve:
                # Policy runs again now: an approval never covers what the server would refuse.
                request = approve_if_allowed(
                    _config(data_dir), store, request_id, by=_operator(), note=note
                )
            else:
                request = store.decide_request(request_id, approve, by=_operator(), note=note)
        except RequestStateError as exc:
            fail(str(exc))
    if as_json:
        print_json(request.to_json())
        return
    verb = "approved" if approve else "rejected"
    console.print(
        f"request {request.id} {verb}: {request.common_name or '-'} ({request.key_type}); "
        + (
            "the client gets its certificate when it repeats the request"
            if approve
            else "the client gets a 403 when it repeats the request"
        )
    )


@server.command("approve")
@data_dir_argument
@click.argument("request_id", metavar="ID", type=int)
@click.option("--note", default="", help="Why (kept in the audit log).")
@json_option
@_command
def approve_command(data_dir: Path, request_id: int, note: str, as_json: bool) -> None:
    """Approve a queued enrollment request."""
    _decide(data_dir, request_id, True, note, as_json)


@server.command("reject")
@data_dir_argument
@click.argument("request_id", metavar="ID", type=int)
@click.option("--note", default="", help="Why (kept in the audit log, shown to the client).")
@json_option
@_command
def reject_command(data_dir: Path, request_id: int, note: str, as_json: bool) -> None:
    """Reject a queued enrollment request."""
    _decide(data_dir, request_id, False, note, as_json)


# --- DNS-SD -----------------------------------------------------------------------------------


def _default_dns_host(data_dir: Path) -> str:
    config = _config(data_dir)
    for pair in config.tls_certificates:
        cert = x509.load_pem_x509_certificates(pair.certificate.read_bytes())[0]
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            continue
        for name in names.get_values_for_type(x509.DNSName):
            return name
    return "est"


@server.command("dns-records")
@data_dir_argument
@click.option("--domain", default="example.com", show_default=True, help="Zone (DNS domain).")
@click.option("--host", help="SRV target; relative to --domain unless it ends with '.'.")
@click.option("--address", "addresses", multiple=True, help="IP of the host (A/AAAA); repeatable.")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: from the config).")
@click.option("--pri", type=click.IntRange(min=0), help="TXT pri (default: config, 10).")
@click.option("--label", help="TXT api_selector: the EST label clients must use (D4).")
@click.option("--instance", default="estkit", show_default=True, help="Service instance name.")
@click.option("--ttl", type=click.IntRange(min=0), default=3600, show_default=True)
@_command
def dns_records_command(
    data_dir: Path,
    domain: str,
    host: str | None,
    addresses: tuple[str, ...],
    port: int | None,
    pri: int | None,
    label: str | None,
    instance: str,
    ttl: int,
) -> None:
    """Print the unicast DNS-SD records (PTR/SRV/TXT/A) to paste into a zone (D1-D4)."""
    from estkit.server.dnssd import unicast_records

    config = _config(data_dir)
    if label is not None and config.profile_for(label) is None:
        fail(f"label {label!r} is not configured on this server", "add it to estkit.toml first")
    host = host or _default_dns_host(data_dir)
    notes = []
    if not addresses:
        addresses = (config.host if config.host not in ("0.0.0.0", "::") else "127.0.0.1",)
        notes.append(f"; replace {addresses[0]} with the server's address (or pass --address)")
    if host in ("localhost", "localhost."):
        notes.append("; 'localhost' is not resolvable by other hosts: pass --host est.<domain>.")
    records = unicast_records(
        domain=domain,
        host=host,
        port=port or config.port,
        addresses=addresses,
        pri=config.dnssd_pri if pri is None else pri,
        label=label,
        instance=instance,
        ttl=ttl,
    )
    sys.stdout.write(
        "; estkit EST server: unicast DNS-SD for BCP-003-03 (_nmos-certs._tcp)\n"
        + "".join(note + "\n" for note in notes)
        + records.zone_text()
    )


# --- rollover and configuration helpers -------------------------------------------------------


@server.command("rollover")
@data_dir_argument
@click.option("--key-type", type=click.Choice(["p256", "p384", "p521", "rsa2048", "rsa3072"]))
@json_option
@_command
def rollover_command(data_dir: Path, key_type: str | None, as_json: bool) -> None:
    """Root CA key rollover (RFC 4210 §4.4); a running server picks it up immediately."""
    config = _config(data_dir)
    authority = CertificateAuthority.load(config.ca_directory)
    result = authority.rollover(key_type=key_type)
    data = {
        "generation": result.generation,
        "old_root_fingerprint": sha256_fingerprint(result.old_with_old),
        "new_root_fingerprint": sha256_fingerprint(result.new_with_new),
        "ca_certificates": str(authority.cacerts_path),
    }
    if as_json:
        print_json(data)
        return
    console.print(f"rolled the root CA over to generation {result.generation}")
    console.print(f"  old root: {data['old_root_fingerprint']}")
    console.print(f"  new root: {data['new_root_fingerprint']}")
    console.print("  /cacerts now serves OldWithOld, NewWithNew, OldWithNew, NewWithOld")


@server.command("add-label")
@data_dir_argument
@click.argument("label")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Profile field, e.g. approval=manual, require_pop=true; repeatable.",
)
@_command
def add_label_command(data_dir: Path, label: str, settings: tuple[str, ...]) -> None:
    """Add (or replace) an EST label with its CA profile."""
    import tomllib

    fields: dict[str, Any] = {}
    for setting in settings:
        name, separator, value = setting.partition("=")
        if not separator:
            fail(f"--set {setting!r} is not FIELD=VALUE", code=EXIT_USAGE)
        try:
            fields[name.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            fields[name.strip()] = value  # a bare word such as manual
    profile = add_label(data_dir, label, **fields)
    console.print(f"label {label!r} added: {profile}")


@server.command("add-user")
@data_dir_argument
@click.argument("username")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@_command
def add_user_command(data_dir: Path, username: str, password: str) -> None:
    """Add an HTTP Basic/Digest user for rfc7030-mode labels (hashes stored, never the password)."""
    add_user(data_dir, username, password)
    console.print(f"user {username!r} added")


@server.command("trust")
@data_dir_argument
@click.argument("ca_pem", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--crl", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--accept-expired", is_flag=True, help="Accept expired, unrevoked devices (S3).")
@_command
def trust_command(data_dir: Path, ca_pem: Path, crl: Path | None, accept_expired: bool) -> None:
    """Trust device certificates of another manufacturer CA (with an optional CRL file)."""
    add_trusted_client_root(data_dir, ca_pem, crl, accept_expired=accept_expired)
    console.print(f"trusting device certificates issued under {ca_pem}")


# `estkit server admin-cert`, `admin-certs`, `revoke-admin-cert` and `console-login` live with
# the console they serve.
for _console_command in CONSOLE_COMMANDS:
    server.add_command(_console_command)
