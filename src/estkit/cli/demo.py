"""``estkit demo``: the whole BCP-003-03 story in one command, with nothing installed beforehand.

Starts an embedded estkit EST server (fresh CA, demo manufacturer CA and device credentials) on a
free loopback port, runs the NMOS node workflow against it (root CA with explicit trust, RSA and
ECDSA certificates, one renewal each), shows the result and stops the server. Everything lives in
a temporary directory unless ``--dir`` keeps it.

The server and the node are imported when the demo runs, not when this module is imported, so
``estkit demo --help`` stays as quick as every other help page.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from estkit.cli.output import console, err_console, error_hint, fail, friendly_errors, print_json

if TYPE_CHECKING:
    from estkit.server import InitResult

# The demo names the node "localhost": that name resolves on every machine and the embedded
# server (listening on 127.0.0.1) accepts it in a CSR.
DEMO_HOSTNAME = "localhost"
LOOPBACK = "127.0.0.1"


@contextmanager
def _workspace(directory: Path | None) -> Iterator[tuple[Path, bool]]:
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        yield directory.absolute(), True
        return
    with tempfile.TemporaryDirectory(prefix="estkit-demo-") as temporary:
        yield Path(temporary), False


def _server_dir(root: Path) -> InitResult:
    """The server data directory ``root/server``: new, or reused from an earlier --dir run."""
    from estkit.server import InitResult, init_data_dir

    server_dir = root / "server"
    if (server_dir / "estkit.toml").is_file():
        return InitResult.for_directory(server_dir)
    return init_data_dir(server_dir, hostnames=(DEMO_HOSTNAME,))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the server data and node files here (default: a temporary directory).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the workflow result as JSON.")
def demo(directory: Path | None, as_json: bool) -> None:
    """Run an EST server and an NMOS node against it: root CA, RSA + ECDSA certificates, renewal."""
    from estkit.cli.nmos import EXPECTED_ERRORS, NMOS_FLAGS

    friendly_errors(*EXPECTED_ERRORS, ValueError, flags=NMOS_FLAGS)(_run_demo)(directory, as_json)


def _run_demo(directory: Path | None, as_json: bool) -> None:
    from estkit.cli.nmos import NMOS_FLAGS, render_event, show_workflow_result
    from estkit.nmos import NmosError, NmosNode, NodeConfig, ServerSettings, run_workflow
    from estkit.server import start_server_thread

    with _workspace(directory) as (root, kept):
        paths = _server_dir(root)
        with start_server_thread(paths.data_dir, host=LOOPBACK, port=0) as server:
            if not as_json:
                console.print(
                    f"[bold]estkit demo[/]: EST server at {server.url} ({paths.data_dir})"
                )
            config = NodeConfig(
                output_dir=root / "node",
                hostnames=(DEMO_HOSTNAME,),
                manufacturer_certificate=paths.device_certificate,
                manufacturer_key=paths.device_key,
                server=ServerSettings(host=DEMO_HOSTNAME, port=server.port),
            )
            node = NmosNode(config, on_event=lambda event: render_event(event, quiet=as_json))
            try:
                result = run_workflow(node)
            except NmosError as exc:
                fail(f"demo workflow failed: {exc}", error_hint(exc, NMOS_FLAGS))
        if as_json:
            print_json(result.to_json())
            if not kept:  # on stderr: stdout holds only the workflow's JSON document
                err_console.print(
                    "the files named above were in a temporary directory, now removed; "
                    "use --dir DIR to keep them",
                    style="dim",
                    soft_wrap=True,
                )
            return
        show_workflow_result(result)
        if kept:
            console.print(f"files kept in {root} (server data in {paths.data_dir})")
        else:
            console.print(
                "[dim]the files were in a temporary directory, now removed; "
                "use --dir DIR to keep them[/]"
            )
