"""``estkit server admin-cert DIR NAME``: issue a web-console operator certificate.

``estkit.cli.server`` attaches :data:`admin_cert` to the ``server`` group. The command lives in
cli/ (it prints, and uses the CLI's output helpers) and calls the console's library functions
for the work; the console itself never imports the CLI (docs/architecture.md).
"""

from __future__ import annotations

from pathlib import Path

import click

from estkit.cli.output import console, friendly_errors, print_json
from estkit.console.admin_ca import (
    OperatorCertificateError,
    admin_ca_paths,
    export_pkcs12,
    issue_admin_certificate,
)


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
@friendly_errors(OperatorCertificateError, OSError)
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
