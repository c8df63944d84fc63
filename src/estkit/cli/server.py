"""``estkit server …``: run and operate the EST server with its own CA (issue 2's CLI contract).

Only argument parsing and presentation live here; what the commands do is in
:mod:`estkit.server` and :mod:`estkit.ca`, so a library user gets exactly the same behaviour.
"""

from __future__ import annotations

import errno
import getpass
import ipaddress
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from cryptography import x509
from rich.table import Table

from estkit.ca.authority import CaError, CertificateAuthority
from estkit.ca.builders import parse_ip
from estkit.ca.profiles import APPROVAL_MODES, AUTH_MODES, ProfileError, profile_to_mapping
from estkit.ca.store import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_OFFSET,
    MAX_PAGE_SIZE,
    CertificateStore,
    Page,
    RequestStateError,
    StoreError,
    open_store,
)
from estkit.cli.admin import CONSOLE_COMMANDS, SERVER_FLAGS
from estkit.cli.options import (
    DEFAULT_DATA_DIR,
    DIRECTORY,
    EXISTING_FILE,
    FILE,
    PORT,
    F,
    certificate_and_key_options,
    limit_option,
    option_group,
)
from estkit.cli.output import (
    EXIT_USAGE,
    console,
    err_console,
    fail,
    friendly_errors,
    print_json,
)
from estkit.cli.prompts import read_secret
from estkit.console.runner import ConsoleStartError, console_settings, start_console
from estkit.protocol.certs import is_hostname, sha256_fingerprint
from estkit.protocol.errors import PathError
from estkit.server.approval import approve_if_allowed, judge
from estkit.server.config import (
    ConfigError,
    ServerConfig,
    TrustedClientRootInfo,
    add_label,
    add_trusted_client_root,
    add_user,
    describe_trusted_client_roots,
    load_config,
    read_manufacturer_ca,
    remove_trusted_client_root,
)
from estkit.server.datadir import DataDirExistsError, InitResult, init_data_dir
from estkit.server.revocation import revoke_certificate
from estkit.server.tls_certs import renew_tls_certificates
from estkit.server.upstream import load_authority

# --key-type takes the short family names of the issue's contract and the exact key types.
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

data_dir_argument = click.argument("data_dir", metavar="DIR", type=DIRECTORY)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


# Expected failures become one clear message, never a traceback; KeyError text loses its quotes
# ("no certificate 12", not "'no certificate 12'").
_command = friendly_errors(
    *_EXPECTED_ERRORS,
    flags=SERVER_FLAGS,
    describe={KeyError: lambda exc: str(exc.args[0]) if exc.args else "not found"},
)


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
    console.print(f"  CA fingerprint: {result.ca_fingerprint}", soft_wrap=True)


def _check_hostnames(hostnames: tuple[str, ...], allowed: bool) -> None:
    """BCP-003-01 T4: server certificates name hosts by DNS name, no IP addresses, no wildcards.
    Both are refused unless the operator says so, and then still warned about."""
    unusual = []
    for name in hostnames:
        if parse_ip(name) is not None:
            unusual.append(f"{name} is an IP address")
        elif name.strip().startswith("*"):
            unusual.append(f"{name} is a wildcard name")
        elif not is_hostname(name.strip()):
            fail(f"--hostname {name!r} is not a DNS host name", code=EXIT_USAGE)
    if not unusual:
        return
    problem = "; ".join(unusual)
    why = "BCP-003-01 T4 wants server certificates to carry DNS host names only"
    if not allowed:
        fail(
            f"{problem}: {why}",
            "give the server's DNS name (e.g. est.example.com), or pass "
            "--allow-ip-or-wildcard if you really mean it",
            EXIT_USAGE,
        )
    err_console.print(
        f"warning: {problem}; {why}, so NMOS nodes and the conformance suite may refuse it",
        markup=False,
        soft_wrap=True,
        style="yellow",
    )


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
@click.option(
    "--ca-key-uri",
    metavar="URI",
    help="Create the CA keys in a PKCS#11 token (RFC 7512 URI: "
    "'pkcs11:token=LABEL?module-path=LIB&pin-source=file:PINFILE'); no key file is written.",
)
@click.option(
    "--allow-ip-or-wildcard",
    is_flag=True,
    help="Accept IP addresses and *. wildcards in --hostname (against BCP-003-01 T4).",
)
@click.option(
    "--upstream",
    "upstream_url",
    metavar="URL",
    help="Registration-authority mode: forward enrollments to this EST server (no CA here).",
)
@click.option(
    "--upstream-trust",
    type=FILE,
    help="PEM trust anchor(s) of the upstream's TLS certificate.",
)
@certificate_and_key_options(
    "--upstream-cert",
    "RA certificate (clientAuth + id-kp-cmcRA) for the upstream.",
    "--upstream-key",
)
@click.option("--upstream-label", metavar="LABEL", help="EST label to use at the upstream.")
@click.option(
    "--upstream-user",
    metavar="USER",
    help="HTTP user at the upstream (password asked, or read from standard input).",
)
@certificate_and_key_options(
    "--tls-cert",
    "RA mode: own TLS chain (default: enrolled from the upstream with the RA certificate).",
    "--tls-key",
    "Its key.",
)
@json_option
@_command
def init_command(
    data_dir: Path,
    hostnames: tuple[str, ...],
    key_type: str,
    db_url: str | None,
    force: bool,
    ca_key_uri: str | None,
    allow_ip_or_wildcard: bool,
    upstream_url: str | None,
    upstream_trust: Path | None,
    upstream_cert: Path | None,
    upstream_key: Path | None,
    upstream_label: str | None,
    upstream_user: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    as_json: bool,
) -> None:
    """Create DIR: root + issuing CA, TLS certificates, demo manufacturer and device, config."""
    _check_hostnames(hostnames, allow_ip_or_wildcard)
    if upstream_url is not None:
        result = _init_ra(
            data_dir,
            upstream_url,
            upstream_trust,
            upstream_cert,
            upstream_key,
            upstream_label,
            upstream_user,
            hostnames,
            tls_cert,
            tls_key,
            db_url,
            force,
        )
    else:
        result = init_data_dir(
            data_dir,
            hostnames=hostnames or ("localhost",),
            key_type=_CA_KEY_TYPES.get(key_type, key_type),
            db_url=db_url,
            force=force,
            ca_key_uri=ca_key_uri,
        )
    if as_json:
        print_json(result.to_json())
    else:
        _print_init(result)
        console.print(f"Start it with: estkit server serve {result.data_dir}")


def _init_ra(
    data_dir: Path,
    url: str,
    trust: Path | None,
    cert: Path | None,
    key: Path | None,
    label: str | None,
    user: str | None,
    hostnames: tuple[str, ...],
    tls_cert: Path | None,
    tls_key: Path | None,
    db_url: str | None,
    force: bool,
) -> InitResult:
    from estkit.server.ra import init_ra_data_dir

    if trust is None or cert is None or key is None:
        fail("--upstream needs --upstream-trust, --upstream-cert and --upstream-key")
        raise AssertionError  # fail() exits
    password = None
    if user is not None:
        password = read_secret(f"Password of {user} at the upstream")
    try:
        return init_ra_data_dir(
            data_dir,
            upstream_url=url,
            upstream_trust=trust,
            ra_certificate=cert,
            ra_key=key,
            upstream_label=label,
            upstream_user=user,
            upstream_password=password,
            hostnames=hostnames or ("localhost",),
            tls_certificate=tls_cert,
            tls_key=tls_key,
            db_url=db_url,
            force=force,
        )
    except ValueError as exc:
        fail(str(exc))
        raise AssertionError from None


@server.command("ra-cert")
@data_dir_argument
@click.option("--cn", "common_name", required=True, metavar="NAME", help="The RA's name.")
@click.option("--out-cert", required=True, type=FILE, help="PEM out.")
@click.option("--out-key", required=True, type=FILE, help="Key out.")
@json_option
@_command
def ra_cert_command(
    data_dir: Path, common_name: str, out_cert: Path, out_key: Path, as_json: bool
) -> None:
    """Issue a registration-authority certificate (id-kp-cmcRA) and trust it ([ra] trusted)."""
    from estkit.server.ra import issue_ra_certificate

    try:
        cert = issue_ra_certificate(data_dir, common_name, out_cert, out_key)
    except ValueError as exc:
        fail(str(exc))
        return
    fingerprint = sha256_fingerprint(cert)
    if as_json:
        print_json({"certificate": str(out_cert), "key": str(out_key), "fingerprint": fingerprint})
    else:
        console.print(f"RA certificate {out_cert} (key {out_key}), {fingerprint}, trusted in [ra].")


# --- serve ------------------------------------------------------------------------------------


def _banner(info: Any, paths: InitResult, consoles: list[Any]) -> None:
    url = info.url
    cacert = paths.ca_certificates
    device, device_key = paths.device_certificate, paths.device_key
    workers = f" ({info.workers} workers)" if info.workers > 1 else ""
    console.print(f"[bold green]estkit EST server listening on {url}{workers}[/]")
    console.print(f"  data directory:  {info.data_dir}")
    authority = load_authority(load_config(info.data_dir))  # RA mode: the upstream's CA
    console.print(
        f"  CA fingerprint:  {sha256_fingerprint(authority.root_certificate)}",
        soft_wrap=True,
    )
    console.print(f"  trust anchor:    {cacert}")
    labels = ", ".join(info.labels) if info.labels else "(none besides the default)"
    console.print(f"  labels:          {labels}")
    console.print(f"  CRL:             {url}/crl")
    if info.revocation_url:  # the plain-HTTP revocation listener
        console.print(
            f"  OCSP, CRL (http): {info.revocation_url}/ocsp, {info.revocation_url}/crl "
            "(new certificates point here)",
            soft_wrap=True,
        )
    if info.metrics_url:
        console.print(f"  metrics:         {info.metrics_url}", soft_wrap=True)
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
    console.print(
        f"  estkit nmos workflow --ip {public_host} --port {info.port} --cert {device} "
        f"--key {device_key}",
        soft_wrap=True,
    )
    console.print("Press Ctrl+C to stop.", style="dim")


def _ready_line(info: Any, paths: InitResult, consoles: list[Any]) -> None:
    """``serve --json``: one line (JSON Lines), so a script reads it without waiting for EOF."""
    document = {
        "url": info.url,
        "host": info.host,
        "port": info.port,
        "workers": info.workers,
        "data_dir": str(info.data_dir),
        "ca_fingerprint": info.ca_fingerprint,
        "ca_certificates": str(paths.ca_certificates),
        "labels": list(info.labels),
        "crl_url": f"{info.url}/crl",
        "revocation_url": info.revocation_url,
        "consoles": [handle.url for handle in consoles],
        "client_certificates_verified_in_app": info.verify_in_app,
    }
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def _setup_logging(level: str, workers: int) -> None:
    # The format below names no source line, thread or multiprocessing process, so records need
    # not look them up (the "Optimization" section of Python's logging HOWTO): a busy server logs
    # a line or two per request (issue 16). The OS process id is kept for several workers.
    setattr(logging, "_srcfile", None)  # noqa: B010  # the HOWTO names the private attribute
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging.logProcesses = workers > 1
    handler = logging.StreamHandler(sys.stderr)
    process = " [%(process)d]" if workers > 1 else ""
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s %(name)s{process}: %(message)s")
    )
    root = logging.getLogger("estkit")
    root.addHandler(handler)
    root.setLevel(level.upper())


def _listener_options(name: str, port_help: str, host_help: str) -> Callable[[F], F]:
    """--NAME-port and --NAME-host of a listener besides the EST one (web console, /metrics)."""
    return option_group(
        click.option(f"--{name}-port", type=PORT, help=port_help),
        click.option(f"--{name}-host", metavar="HOST", help=host_help),
    )


@server.command("serve")
@click.argument("data_dir", metavar="[DIR]", required=False, type=DIRECTORY)
@click.option("--host", help="Address to listen on (default: from the config, 127.0.0.1).")
@click.option("--port", type=PORT, help="Port (default: config, 8443).")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Processes (default: one per CPU; 1 on a 1-core machine).",
)
@click.option("--advertise", is_flag=True, help="Announce the server over mDNS (labs only, D1).")
@click.option("--advertise-label", metavar="L", help="api_selector TXT value for --advertise.")
@click.option("--pri", type=click.IntRange(min=0), help="TXT pri for --advertise (default: 100).")
@_listener_options(
    "admin",
    "Serve the operator web console on this port (default: off, or the [console] table).",
    "Address of the web console (default: 127.0.0.1).",
)
@_listener_options(
    "metrics",
    "Serve Prometheus /metrics on this port (default: off, or [metrics] port).",
    "Address of /metrics (default: [metrics] or 127.0.0.1).",
)
@_listener_options(
    "revocation",
    "Serve OCSP and CRLs over plain HTTP on this port, and point new certificates' AIA/CRL "
    "URLs at it (default: off, or [revocation] port).",
    "Address of the plain-HTTP revocation port (default: [revocation] host or --host).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="When ready, print one line of JSON (URL, port, CA fingerprint, ...) instead of the "
    "banner; other messages go to stderr.",
)
@_command
def serve_command(
    data_dir: Path | None,
    host: str | None,
    port: int | None,
    workers: int | None,
    advertise: bool,
    advertise_label: str | None,
    pri: int | None,
    admin_port: int | None,
    admin_host: str | None,
    metrics_port: int | None,
    metrics_host: str | None,
    revocation_port: int | None,
    revocation_host: str | None,
    log_level: str,
    as_json: bool,
) -> None:
    """Run the server in the foreground (default DIR: ./estkit-data, created on first run).

    With --admin-port (or "[console] enabled = true" in estkit.toml) the operator web console
    listens on its own HTTPS port; sign in with the printed link or an operator certificate from
    "estkit server admin-cert".
    """
    from estkit.server.runner import ServerInfo, default_workers, revocation_address, serve

    if data_dir is None:
        data_dir = DEFAULT_DATA_DIR
        if not (data_dir / "estkit.toml").exists():
            created = init_data_dir(data_dir)
            if not as_json:
                console.print(f"First run: creating demo data in ./{DEFAULT_DATA_DIR}")
                _print_init(created)
            else:
                err_console.print(f"First run: created demo data in ./{DEFAULT_DATA_DIR}")
    elif not (data_dir / "estkit.toml").exists():
        fail(
            f"{data_dir} is not an estkit server data directory (no estkit.toml)",
            f"create it with `estkit server init {data_dir}`",
        )
    if workers is None:
        workers = default_workers(data_dir)
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
        assert admin_console is not None  # the sidecar below exists only when there is one
        handle = start_console(data_dir, host=admin_console[0], port=admin_console[1])
        consoles.append(handle)
        return handle.stop

    def on_ready(info: ServerInfo) -> None:
        if as_json:
            _ready_line(info, paths, consoles)
        else:
            _banner(info, paths, consoles)
        if advertise:
            from estkit.server.dnssd import MdnsAdvertisement, MdnsError, mdns_host_name

            address = info.host if info.host not in ("0.0.0.0", "::") else "127.0.0.1"
            names = _certificate_dns_names(data_dir)
            ad = MdnsAdvertisement(
                port=info.port,
                addresses=[address],
                pri=100 if pri is None else pri,
                label=advertise_label,
                host_name=mdns_host_name(names),
                interfaces=[address] if ipaddress.ip_address(address).is_loopback else None,
            )
            if mdns_host_name(names) is None:
                err_console.print(
                    f"warning: mDNS announces the host {ad.host}, which is not in the server "
                    f"certificate ({', '.join(names) or 'no DNS names'}): nodes that find the "
                    "server over mDNS will fail hostname verification. Give the server a .local "
                    "name when creating it: estkit server init DIR --hostname NAME.local",
                    markup=False,
                    soft_wrap=True,
                    style="yellow",
                )
            try:
                ad.start()
            except MdnsError as exc:
                logging.getLogger("estkit.server").warning("%s; serving without it", exc)
                return
            advertisement.append(ad)
            (err_console if as_json else console).print(
                f"  advertised over mDNS as {ad.name} on host {ad.host}", markup=False
            )

    listen_host, listen_port = host or config.host, config.port if port is None else port
    revocation = revocation_address(config, revocation_host, revocation_port, listen_host)
    listening = f"{listen_host}:{listen_port}" + (
        f" or {revocation.host}:{revocation.port} (revocation)" if revocation else ""
    )
    try:
        status = serve(
            data_dir,
            host=listen_host,
            port=listen_port,
            workers=workers,
            on_ready=on_ready,
            sidecar=start_admin_console if admin_console else None,
            metrics_address=_metrics_address(config, metrics_host, metrics_port),
            revocation=revocation,
        )
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            fail(
                f"cannot listen on {listening}: {exc.strerror or exc}",
                "another program may be using the port, or the address is not on this host; "
                "choose --host/--port (--revocation-host/--revocation-port)",
            )
        raise
    finally:
        for ad in advertisement:
            ad.stop()
    (err_console if as_json else console).print("server stopped")
    raise SystemExit(status)


def _metrics_address(
    config: ServerConfig, host: str | None, port: int | None
) -> tuple[str, int] | None:
    """Where /metrics listens, or None when it is off (flags override [metrics])."""
    port = config.metrics_port if port is None else port
    return None if port is None else (host or config.metrics_host, port)


def _admin_console(data_dir: Path, host: str | None, port: int | None) -> tuple[str, int] | None:
    """Where the web console listens, or None when it is off (flags override [console])."""
    settings = console_settings(data_dir)
    if port is None and host is None and not settings.enabled:
        return None
    return host or settings.host, settings.port if port is None else port


# --- certificates and revocation --------------------------------------------------------------


# --limit/--offset of a listing (newest first; the store caps a page at MAX_PAGE_SIZE).
_paging_options = option_group(
    limit_option(
        "--limit",
        click.IntRange(1, MAX_PAGE_SIZE),
        DEFAULT_PAGE_SIZE,
        f"Entries per page (at most {MAX_PAGE_SIZE}).",
    ),
    limit_option(
        "--offset",
        click.IntRange(0, MAX_PAGE_OFFSET),
        0,
        "Skip this many (newest) entries: the next page starts at the offset printed.",
    ),
)


def _more_hint(found: Page[Any], command: str, limit: int) -> None:
    """Where the next page starts, as the command to type (--json carries next_offset)."""
    if found.next_offset is None:
        return
    page_flag = "" if limit == DEFAULT_PAGE_SIZE else f" --limit {limit}"
    remaining = found.total - found.next_offset
    console.print(
        f"{remaining} more: {command}{page_flag} --offset {found.next_offset}",
        style="dim",
        markup=False,
        soft_wrap=True,
    )


@server.command("certs")
@data_dir_argument
@click.option("--status", type=click.Choice(["valid", "revoked"]), help="Only this status.")
@click.option("--label", metavar="L", help="Only this label.")
@_paging_options
@json_option
@_command
def certs_command(
    data_dir: Path, status: str | None, label: str | None, limit: int, offset: int, as_json: bool
) -> None:
    """List the certificates the server issued, newest first, one page at a time."""
    with _store(data_dir) as store:
        found = store.issued_page(status=status, label=label, limit=limit, offset=offset)
    records = found.items
    if as_json:
        print_json(
            {"certificates": [record.to_json() for record in records], **found.paging_json()}
        )
        return
    columns = ("serial", "subject", "not after", "operation", "label", "key", "status")
    rows = [
        (
            record.serial,
            record.subject,
            record.not_after.strftime("%Y-%m-%d %H:%M:%SZ"),
            record.operation,
            record.label or "-",
            record.key_type,
            record.status,
        )
        for record in records
    ]
    title = f"{found.total} issued certificate(s)"
    if len(records) < found.total:
        title += f", newest first: {offset + 1 if records else offset}–{offset + len(records)}"
    _print_records(title, columns, rows)
    filters = (f" --status {status}" if status else "") + (f" --label {label}" if label else "")
    _more_hint(found, f"estkit server certs {data_dir}{filters}", limit)


# Borders and padding rich adds around each column of a Table (box, one space either side).
_TABLE_OVERHEAD_PER_COLUMN = 3


def _print_records(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table when every value fits on one line of the terminal; otherwise one block per row
    (first column as its heading, then "name: value" lines), so identifiers such as serials
    are never cut or folded in the middle (full values are in --json either way)."""
    widths = [
        max([len(column), *(len(row[index]) for row in rows)])
        for index, column in enumerate(columns)
    ]
    needed = sum(widths) + _TABLE_OVERHEAD_PER_COLUMN * len(columns) + 1
    if needed <= console.width:
        table = Table(title=title)
        for column in columns:
            table.add_column(column, no_wrap=True)
        for row in rows:
            table.add_row(*row, style="red" if "revoked" in row else None)
        console.print(table)
        return
    console.print(title, markup=False)
    label_width = max(len(column) for column in columns[1:])
    for row in rows:
        console.print(f"{columns[0]} {row[0]}", markup=False, soft_wrap=True, style="bold")
        for column, value in zip(columns[1:], row[1:], strict=True):
            console.print(f"  {column:<{label_width}}  {value}", markup=False, soft_wrap=True)


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
        earlier = store.get_issued(serial)
        if earlier is not None and earlier.status == "revoked":
            # Revoking is idempotent: the first date and reason stand, the CRL is not rewritten.
            if as_json:
                print_json({**earlier.to_json(), "crl": None, "already_revoked": True})
                return
            when = f"{earlier.revoked_at:%Y-%m-%d %H:%M:%S} UTC" if earlier.revoked_at else "?"
            console.print(
                f"{earlier.serial} was already revoked on {when} "
                f"(reason {earlier.revocation_reason}); nothing changed",
                markup=False,
                soft_wrap=True,
            )
            return
        record, crl_path = revoke_certificate(_config(data_dir), store, serial, reason)
    if as_json:
        print_json({**record.to_json(), "crl": str(crl_path), "already_revoked": False})
        return
    console.print(
        f"revoked {record.serial} ({record.subject}), reason {record.revocation_reason}",
        markup=False,
        soft_wrap=True,
    )
    console.print(
        f"CRL written to {crl_path}; a running server serves it at /crl",
        markup=False,
        soft_wrap=True,
    )


# --- approval queue ---------------------------------------------------------------------------


@server.command("requests")
@data_dir_argument
@click.option(
    "--status",
    type=click.Choice(["pending", "approved", "rejected", "issued", "all"]),
    default="pending",
    show_default=True,
)
@_paging_options
@json_option
@_command
def requests_command(data_dir: Path, status: str, limit: int, offset: int, as_json: bool) -> None:
    """List enrollment requests waiting for (or decided by) an operator (S4), newest first, one
    page at a time."""
    config = _config(data_dir)
    authority = CertificateAuthority.load(config.ca_directory)
    with _store(data_dir) as store:
        found = store.requests_page(
            None if status == "all" else (status,), limit=limit, offset=offset
        )
        requests = found.items
        # What policy says now (label, CSR policy, client certificate revocation): shown so the
        # operator does not approve what the server would refuse (approve enforces it too).
        verdicts = {
            request.id: judge(config, authority, store, request)
            for request in requests
            if request.status == "pending"
        }
    if as_json:
        print_json(
            {
                "requests": [
                    {
                        **request.to_json(),
                        "policy_now": verdicts[request.id].to_json()
                        if request.id in verdicts
                        else None,
                    }
                    for request in requests
                ],
                **found.paging_json(),
            }
        )
        return
    if not requests:
        kind = "" if status == "all" else status + " "
        if found.total:
            console.print(f"no {kind}requests from offset {offset} ({found.total} in all)")
        else:
            console.print(f"no {kind}requests")
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
    console.print(
        f"{found.total} {'' if status == 'all' else status + ' '}request(s), newest first: "
        f"{offset + 1}–{offset + len(requests)} shown",
        style="dim",
        markup=False,
        soft_wrap=True,
    )
    _more_hint(found, f"estkit server requests {data_dir} --status {status}", limit)
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


def _decision_options(note_help: str) -> Callable[[F], F]:
    """What approve and reject both take: the data directory, the request, why, --json."""
    return option_group(
        data_dir_argument,
        click.argument("request_id", metavar="ID", type=int),
        click.option("--note", default="", help=note_help),
        json_option,
    )


@server.command("approve")
@_decision_options("Why (kept in the audit log).")
@_command
def approve_command(data_dir: Path, request_id: int, note: str, as_json: bool) -> None:
    """Approve a queued enrollment request."""
    _decide(data_dir, request_id, True, note, as_json)


@server.command("reject")
@_decision_options("Why (kept in the audit log, shown to the client).")
@_command
def reject_command(data_dir: Path, request_id: int, note: str, as_json: bool) -> None:
    """Reject a queued enrollment request."""
    _decide(data_dir, request_id, False, note, as_json)


# --- DNS-SD -----------------------------------------------------------------------------------


def _certificate_dns_names(data_dir: Path) -> list[str]:
    """The DNS names of the server's TLS certificates, in order, without repeats."""
    names: list[str] = []
    for pair in _config(data_dir).tls_certificates:
        cert = x509.load_pem_x509_certificates(pair.certificate.read_bytes())[0]
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            continue
        names += [name for name in san.get_values_for_type(x509.DNSName) if name not in names]
    return names


def _default_dns_host(data_dir: Path) -> str:
    names = _certificate_dns_names(data_dir)
    return names[0] if names else "est"


@server.command("dns-records")
@data_dir_argument
@click.option("--domain", default="example.com", show_default=True, help="Zone (DNS domain).")
@click.option(
    "--host",
    help="SRV target: a name with dots (est.example.com, trailing dot optional) is used as is; "
    "a single label (est) is relative to --domain.",
)
@click.option("--address", "addresses", multiple=True, help="IP of the host (A/AAAA); repeatable.")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: from the config).")
@click.option("--pri", type=click.IntRange(min=0), help="TXT pri (default: config, 10).")
@click.option("--label", help="TXT api_selector: the EST label clients must use (D4).")
@click.option("--instance", default="estkit", show_default=True, help="Service instance name.")
@limit_option("--ttl", click.IntRange(min=0), 3600)
@json_option
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
    as_json: bool,
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
    notes.extend(f"; {note}" for note in records.notes)
    if as_json:
        print_json(
            {
                "records": list(records.lines),
                "notes": [note.removeprefix("; ") for note in notes],
            }
        )
        return
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
    renewed = renew_tls_certificates(config, authority)
    data = {
        "generation": result.generation,
        "old_root_fingerprint": sha256_fingerprint(result.old_with_old),
        "new_root_fingerprint": sha256_fingerprint(result.new_with_new),
        "new_root": str(authority.root_path),
        "ca_certificates": str(authority.cacerts_path),
        "tls_certificates": [str(item.pair.certificate) for item in renewed],
    }
    if as_json:
        print_json(data)
        return
    console.print(f"rolled the root CA over to generation {result.generation}")
    console.print(f"  old root: {data['old_root_fingerprint']}", soft_wrap=True)
    console.print(f"  new root: {data['new_root_fingerprint']}", soft_wrap=True)
    console.print("  /cacerts now serves OldWithOld, NewWithNew, OldWithNew, NewWithOld")
    for item in renewed:
        console.print(
            f"  TLS certificate {item.pair.certificate} issued under the new root, presented "
            "with NewWithOld so holders of either root can connect",
            soft_wrap=True,
            markup=False,
        )
    console.print(f"  give new devices the new root: {authority.root_path}", soft_wrap=True)


def _profile_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value) or "(none)"
    return str(value)


@server.command("add-label")
@data_dir_argument
@click.argument("label")
@click.option(
    "--approval",
    type=click.Choice(APPROVAL_MODES),
    help="auto: issue at once; manual: every request waits for 'estkit server approve'; "
    "untrusted: requests without a trusted client certificate wait.",
)
@click.option(
    "--auth-mode",
    type=click.Choice(AUTH_MODES),
    help="nmos: client certificates (BCP-003-03); rfc7030: also HTTP users.",
)
@click.option(
    "--require-pop/--no-require-pop",
    default=None,
    help="Require CSRs linked to the TLS session (RFC 7030 §3.5).",
)
@click.option(
    "--validity-seconds", type=click.IntRange(min=1), help="Lifetime of issued certificates."
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Any profile field, e.g. retry_after_seconds=30, ekus=['clientAuth']; repeatable.",
)
@json_option
@_command
def add_label_command(
    data_dir: Path,
    label: str,
    approval: str | None,
    auth_mode: str | None,
    require_pop: bool | None,
    validity_seconds: int | None,
    settings: tuple[str, ...],
    as_json: bool,
) -> None:
    """Add (or replace) an EST label with its CA profile (/.well-known/est/LABEL/...)."""
    import tomllib

    fields: dict[str, Any] = {}
    value: str | int | bool | None  # a --set value here, an option's value below
    for setting in settings:
        name, separator, value = setting.partition("=")
        if not separator:
            fail(f"--set {setting!r} is not FIELD=VALUE", code=EXIT_USAGE)
        try:
            fields[name.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            fields[name.strip()] = value  # a bare word such as manual
    options = {
        "approval": approval,
        "auth_mode": auth_mode,
        "require_pop": require_pop,
        "validity_seconds": validity_seconds,
    }
    for name, value in options.items():
        if value is None:
            continue
        if name in fields and fields[name] != value:
            fail(
                f"--{name.replace('_', '-')} {value} and --set {name}={fields[name]} disagree",
                code=EXIT_USAGE,
            )
        fields[name] = value
    existed = label in _config(data_dir).labels
    profile = add_label(data_dir, label, **fields)
    mapping = profile_to_mapping(profile, include_label=False)
    if as_json:
        print_json({"label": label, "replaced": existed, "profile": mapping})
        return
    verb = "replaced" if existed else "added"
    console.print(f"label {label} {verb}: clients use /.well-known/est/{label}/...", markup=False)
    width = max(len(name) for name in mapping)
    for name, value in mapping.items():
        console.print(f"  {name:<{width}}  {_profile_value(value)}", markup=False, soft_wrap=True)


@server.command("add-user")
@data_dir_argument
@click.argument("username")
@click.option(
    "--password",
    help="The password (default: asked twice on the terminal, or one line of standard input).",
)
@json_option
@_command
def add_user_command(data_dir: Path, username: str, password: str | None, as_json: bool) -> None:
    """Add an HTTP Basic/Digest user for rfc7030-mode labels (hashes stored, never the password)."""
    if password is None:
        password = read_secret("Password", confirm=True)
    add_user(data_dir, username, password)
    if as_json:
        print_json({"user": username, "schemes": ["basic", "digest SHA-256", "digest MD5"]})
        return
    console.print(f"user {username} added (HTTP Basic and Digest)", markup=False)


def _trust_document(info: TrustedClientRootInfo) -> dict[str, Any]:
    root = info.root
    return {
        "certificate": str(root.certificate),
        "subjects": [cert.subject.rfc4514_string() for cert in info.certificates],
        "fingerprints": info.fingerprints,
        "not_after": [cert.not_valid_after_utc for cert in info.certificates],
        "crl": str(root.crl) if root.crl else None,
        "accept_expired": root.accept_expired,
        "error": info.error,
    }


def _print_trust_list(data_dir: Path, as_json: bool) -> None:
    infos = describe_trusted_client_roots(data_dir)
    if as_json:
        print_json({"trusted_client_roots": [_trust_document(i) for i in infos]})
        return
    if not infos:
        console.print("no manufacturer CA is trusted (only certificates this CA issued)")
        return
    for info in infos:
        console.print(f"{info.root.certificate}", markup=False, soft_wrap=True)
        if info.error:
            console.print(f"  cannot be read: {info.error}", markup=False, soft_wrap=True)
        for cert in info.certificates:
            console.print(f"  {cert.subject.rfc4514_string()}", markup=False, soft_wrap=True)
            console.print(
                f"    fingerprint {sha256_fingerprint(cert)}", markup=False, soft_wrap=True
            )
            console.print(
                f"    valid until {cert.not_valid_after_utc.isoformat()}",
                markup=False,
                soft_wrap=True,
            )
        crl = info.root.crl if info.root.crl else "none"
        console.print(f"  CRL: {crl}", markup=False, soft_wrap=True)
        console.print(
            f"  accepts expired devices: {info.root.accept_expired}", markup=False, soft_wrap=True
        )


@server.command("trust")
@data_dir_argument
@click.argument("ca_pem", required=False, type=EXISTING_FILE)
@click.option(
    "--crl",
    type=EXISTING_FILE,
    help="CRL of that CA (PEM or DER), re-read when it changes; kept when omitted.",
)
@click.option(
    "--accept-expired/--refuse-expired",
    default=None,
    help="Accept expired, unrevoked devices (S3); unchanged when omitted (default: refuse).",
)
@click.option("--list", "list_only", is_flag=True, help="Show the trusted manufacturer CAs.")
@json_option
@_command
def trust_command(
    data_dir: Path,
    ca_pem: Path | None,
    crl: Path | None,
    accept_expired: bool | None,
    list_only: bool,
    as_json: bool,
) -> None:
    """Trust device certificates of another manufacturer CA (with an optional CRL file)."""
    if list_only:
        if ca_pem or crl or accept_expired is not None:
            fail("--list takes no CA file or other option", code=EXIT_USAGE)
        _print_trust_list(data_dir, as_json)
        return
    if ca_pem is None:
        fail("say which CA certificate to trust: estkit server trust DIR CA_PEM", code=EXIT_USAGE)
    root = add_trusted_client_root(data_dir, ca_pem, crl, accept_expired=accept_expired)
    info = TrustedClientRootInfo(root, tuple(read_manufacturer_ca(root.certificate)))
    if as_json:
        print_json(_trust_document(info))
        return
    for cert in info.certificates:
        console.print(
            f"trusting device certificates issued under {cert.subject.rfc4514_string()} "
            f"({sha256_fingerprint(cert)})",
            markup=False,
            soft_wrap=True,
        )
    console.print(f"  CRL: {root.crl if root.crl else 'none'}", markup=False, soft_wrap=True)
    console.print(f"  accepts expired devices: {root.accept_expired}", markup=False, soft_wrap=True)


@server.command("untrust")
@data_dir_argument
@click.argument("which", metavar="CA_PEM|sha256:HEX")
@json_option
@_command
def untrust_command(data_dir: Path, which: str, as_json: bool) -> None:
    """Stop trusting a manufacturer CA, given by its file or a certificate fingerprint."""
    root = remove_trusted_client_root(data_dir, which)
    if as_json:
        print_json({"removed": str(root.certificate)})
        return
    console.print(
        f"no longer trusting device certificates under {root.certificate}",
        markup=False,
        soft_wrap=True,
    )


# `estkit server admin-cert`, `admin-certs`, `revoke-admin-cert` and `console-login` live with
# the console they serve.
for _console_command in CONSOLE_COMMANDS:
    server.add_command(_console_command)
