"""Console commands of ``estkit server``: operator certificates and sign-in URLs.

``admin-cert DIR NAME`` issues an operator certificate (recorded in the store), ``admin-certs DIR``
lists them, ``revoke-admin-cert DIR SERIAL|NAME`` revokes (the console checks on every request),
``console-login DIR --operator NAME`` prints a single-use sign-in URL valid for 10 minutes.
``estkit.cli.server`` attaches :data:`CONSOLE_COMMANDS` to the ``server`` group, so the commands
live beside the operators CA they work with.
The commands live in cli/ (they print, with the CLI's output helpers) and call the console's
library functions; the console itself never imports the CLI (docs/architecture.md).
"""

from __future__ import annotations

import getpass
from pathlib import Path

import click

from estkit.ca.store import StoreError
from estkit.cli.output import console, friendly_errors, print_json
from estkit.console.admin_ca import (
    OperatorCertificateError,
    admin_ca_paths,
    export_pkcs12,
    issue_admin_certificate,
    list_operator_certificates,
    revoke_operator_certificates,
)
from estkit.console.auth import DEFAULT_TOKEN_OPERATOR, LOGIN_TOKEN_LIFETIME_SECONDS
from estkit.console.runner import ConsoleStartError, new_login_url

# The library's parameter names as this command group's options: errors name the parameter,
# the person at the terminal reads the flag (issue 22).
SERVER_FLAGS = {
    "force": "--force",
    "force_init": "`estkit server init DIR --force`",
    "admin_port": "--admin-port",
}


@click.command("admin-cert")
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("name")
@click.option("--force", is_flag=True, help="Issue a new certificate even if NAME has one.")
@click.option(
    "--p12/--no-p12",
    "with_p12",
    default=True,
    show_default=True,
    help="Also write NAME.p12 (password printed) for importing into a browser.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the paths as JSON.")
@friendly_errors(OperatorCertificateError, OSError, StoreError, flags=SERVER_FLAGS)
def admin_cert(data_dir: Path, name: str, force: bool, with_p12: bool, as_json: bool) -> None:
    """Issue an operator certificate NAME for the web console of the server in DATA_DIR."""
    cert_path, key_path = issue_admin_certificate(data_dir, name, force=force)
    p12_path, password = export_pkcs12(cert_path, key_path) if with_p12 else (None, None)
    ca_path, _ = admin_ca_paths(data_dir)
    if as_json:
        print_json(
            {
                "operator": name,
                "certificate": cert_path.absolute(),
                "key": key_path.absolute(),
                "pkcs12": p12_path.absolute() if p12_path else None,
                "pkcs12_password": password,
                "operators_ca": ca_path.absolute(),
            }
        )
        return
    console.print(f"[bold]Operator certificate for {name}[/]")
    console.print(f"  certificate  {cert_path}")
    console.print(f"  private key  {key_path} (mode 0600)")
    if p12_path:
        console.print(f"  browser file {p12_path}  password: [bold]{password}[/]")
    console.print(
        "Import the .p12 into your browser, then open the console URL printed by "
        "'estkit server serve --admin-port N'."
    )


def _who() -> str:
    try:
        return f"{getpass.getuser()} (cli)"
    except (KeyError, OSError):
        return "operator (cli)"


@click.command("admin-certs")
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@friendly_errors(OperatorCertificateError, OSError, StoreError, flags=SERVER_FLAGS)
def admin_certs(data_dir: Path, as_json: bool) -> None:
    """List the console operator certificates issued for the server in DATA_DIR."""
    records = list_operator_certificates(data_dir)
    if as_json:
        print_json([record.to_json() for record in records])
        return
    if not records:
        console.print("no operator certificates")
        return
    for record in records:
        revoked = f" since {record.revoked_at:%Y-%m-%d %H:%M} UTC" if record.revoked_at else ""
        console.print(f"{record.name}  {record.status}{revoked}  serial {record.serial}")
        console.print(f"    {record.fingerprint}", soft_wrap=True)


@click.command("revoke-admin-cert")
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("serial_or_name", metavar="SERIAL|NAME")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@friendly_errors(OperatorCertificateError, OSError, StoreError, flags=SERVER_FLAGS)
def revoke_admin_cert(data_dir: Path, serial_or_name: str, as_json: bool) -> None:
    """Revoke a console operator certificate (hex SERIAL) or all of operator NAME's."""
    records = revoke_operator_certificates(data_dir, serial_or_name, by=_who())
    if as_json:
        print_json([record.to_json() for record in records])
        return
    for record in records:
        console.print(
            f"revoked operator certificate {record.serial} of {record.name}; "
            "the console refuses it from its next request"
        )


@click.command("console-login")
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--operator",
    default=DEFAULT_TOKEN_OPERATOR,
    show_default=True,
    help="Who signs in (recorded in the audit log); the URL works for this name only.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@friendly_errors(
    OperatorCertificateError, OSError, StoreError, ConsoleStartError, flags=SERVER_FLAGS
)
def console_login(data_dir: Path, operator: str, as_json: bool) -> None:
    """Print a single-use console sign-in URL for OPERATOR (valid 10 minutes)."""
    url = new_login_url(data_dir, operator)
    minutes = LOGIN_TOKEN_LIFETIME_SECONDS // 60
    if as_json:
        print_json({"operator": operator, "url": url, "expires_in_seconds": minutes * 60})
        return
    console.print(url, soft_wrap=True)
    console.print(f"works once, for {operator}, within {minutes} minutes", style="dim")


CONSOLE_COMMANDS = (admin_cert, admin_certs, revoke_admin_cert, console_login)
