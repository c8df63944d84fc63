"""``estkit test-server``: run the conformance suite against an EST server.

Only argument parsing and output live here; the suite itself is :mod:`estkit.conformance`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import click

from estkit.cli.output import (
    EXIT_USAGE,
    console,
    err_console,
    error_hint,
    existing_parent,
    fail,
)
from estkit.conformance.defaults import DEFAULT_DOMAIN, DEFAULT_TIMEOUT_SECONDS
from estkit.fileio import write_file_atomic

if TYPE_CHECKING:
    from rich.console import Console

    from estkit.conformance import SuiteReport, Target

# The suite itself (cases, DNS, TLS probes, reports, rich's live display) is imported when the
# command runs, not when it describes itself: `estkit test-server --help` loads none of it.

# The suite's Target.from_files parameters as this command's options (issue 22: the library
# names parameters, the CLI its flags).
CONFORMANCE_FLAGS = {
    "cacert": "--cacert PEM",
    "basic": "--basic USER:PASSWORD",
    "digest": "--digest USER:PASSWORD",
    "rogue_cert": "--rogue-cert",
    "rogue_key": "--rogue-key",
    "revoke_command": "--revoke-command",
}
F = TypeVar("F", bound=Callable[..., Any])
_FILE = click.Path(dir_okay=False, allow_dash=True, path_type=Path)
_EXISTING = click.Path(exists=True, dir_okay=False, path_type=Path)


def _split_ids(values: tuple[str, ...]) -> list[str] | None:
    """``--only a --only b,c`` → ``[a, b, c]``; None when not given."""
    if not values:
        return None
    return [item for value in values for item in value.replace(",", " ").split()]


def _list_cases(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from estkit.conformance import ALL_CASES

    for case in ALL_CASES:
        click.echo(f"{case.id:28} {case.requirement:24} {case.profile:5} {case.name}")
    ctx.exit(0)


def _report_option(flag: str, name: str, what: str) -> Callable[[F], F]:
    """``--json``, ``--junit``, ``--html``: a report file, or ``-`` for stdout (see _write)."""
    return click.option(
        flag,
        name,
        type=_FILE,
        default=None,
        callback=existing_parent,
        help=f"Write a {what} report ('-' for stdout).",
    )


def _write(path: Path, data: bytes) -> None:
    if str(path) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        write_file_atomic(path, data, create_parents=False)
    except OSError as exc:
        fail(
            f"cannot write {path}: {exc.strerror or exc}",
            "check the directory exists and is writable",
        )


@click.command("test-server")
@click.option("--ip", "host", required=True, help="Server host name or IP address.")
@click.option("--port", required=True, type=click.IntRange(1, 65535), help="Server TLS port.")
@click.option("--label", help="RFC 7030 label (path segment after /.well-known/est).")
@click.option(
    "--cacert",
    required=True,
    type=_EXISTING,
    help="PEM CA certificate(s) the server's /cacerts should return (trust anchor).",
)
@click.option(
    "--cert",
    required=True,
    type=_EXISTING,
    help="Manufacturer client certificate (PEM, leaf first, CA after).",
)
@click.option("--key", required=True, type=_EXISTING, help="Manufacturer private key.")
@click.option(
    "--rogue-cert",
    type=_EXISTING,
    help="A rogue client certificate that must be refused "
    "[default: generated, same names as --cert, new keys].",
)
@click.option("--rogue-key", type=_EXISTING, help="Key of --rogue-cert.")
@click.option(
    "--basic",
    metavar="USER:PASS",
    help="Answer an HTTP Basic challenge with these credentials (RFC 7030 servers).",
)
@click.option(
    "--basic-preemptive",
    is_flag=True,
    help="Send the --basic credentials with every request, for servers that never challenge.",
)
@click.option(
    "--digest",
    metavar="USER:PASS",
    help="Answer an HTTP Digest challenge (RFC 7616) with these credentials; preferred over "
    "--basic when the server offers both.",
)
@click.option(
    "--profile",
    type=click.Choice(["nmos", "rfc7030"]),
    default="nmos",
    show_default=True,
    help="nmos: also check BCP-003-03/BCP-003-01; rfc7030: plain EST only.",
)
@click.option(
    "--only",
    multiple=True,
    metavar="ID",
    help="Run only these case ids (repeat or comma-separate). See --list.",
)
@_report_option("--junit", "junit", "JUnit XML")
@_report_option("--json", "json_path", "JSON")
@_report_option("--html", "html", "HTML")
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 300),
    default=DEFAULT_TIMEOUT_SECONDS,
    show_default=True,
    help="Seconds per connection.",
)
@click.option(
    "--domain",
    default=DEFAULT_DOMAIN,
    show_default=True,
    help="DNS domain for the names in test CSRs.",
)
@click.option(
    "--dns-domain",
    help="Check the server's _nmos-certs._tcp DNS-SD advert in this domain (D1-D5).",
)
@click.option(
    "--dns-server",
    metavar="HOST[:PORT]",
    help="DNS server to ask for --dns-domain (unicast DNS-SD) [default: the system's].",
)
@click.option(
    "--mdns",
    is_flag=True,
    help="Check the server's advert over multicast DNS instead (D1 says it SHOULD NOT be there).",
)
@click.option(
    "--mdns-interface",
    "mdns_interfaces",
    multiple=True,
    metavar="IP",
    help="Interface address to browse mDNS on (repeatable) [default: all].",
)
@click.option(
    "--revoke-command",
    metavar="CMD",
    help="How the suite may revoke a certificate it enrolled, {serial} standing for its hex "
    "serial (e.g. 'estkit server revoke DIR {serial}'); without it the cases that need a "
    "revoked certificate are skipped.",
)
@click.option(
    "--list",
    "list_cases",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_list_cases,
    help="List the case ids and exit.",
)
def test_server(
    profile: str,
    only: tuple[str, ...],
    junit: Path | None,
    json_path: Path | None,
    html: Path | None,
    **target_options: Any,
) -> None:
    """Check an EST server against RFC 7030/8951, BCP-003-03 and BCP-003-01.

    Exit status 0 iff no case failed (warn, skip and n/a do not fail the run).
    """
    from estkit.conformance import Target, TargetError, UnknownCaseError
    from estkit.conformance.reports import (
        report_to_html,
        report_to_json,
        report_to_junit,
        results_table,
        summary_text,
    )
    from estkit.protocol import EstProtocolError

    out = (err_console if json_path is not None and str(json_path) == "-" else console).rich
    try:
        # The other options are Target.from_files's parameters, by name.
        target = Target.from_files(
            profile=cast(Literal["nmos", "rfc7030"], profile), **target_options
        )
        report = _run(target, _split_ids(only), out)
    except UnknownCaseError as exc:
        fail(str(exc), "run 'estkit test-server --list' for the case ids", code=EXIT_USAGE)
    except (TargetError, EstProtocolError) as exc:
        fail(str(exc), error_hint(exc, CONFORMANCE_FLAGS), code=EXIT_USAGE)
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    out.print(results_table(report.results, width=out.width))
    out.print(summary_text(report))
    if json_path is not None:
        _write(json_path, report_to_json(report).encode("utf-8"))
    if junit is not None:
        _write(junit, report_to_junit(report))
    if html is not None:
        _write(html, report_to_html(report).encode("utf-8"))
    raise SystemExit(report.exit_status)


def _run(target: Target, only: list[str] | None, out: Console) -> SuiteReport:
    from rich.live import Live

    from estkit.conformance import ProgressEvent, Status, run_suite
    from estkit.conformance.reports import progress_text

    counts = {status: 0 for status in Status}
    with Live(console=out, transient=True, refresh_per_second=10) as live:

        def progress(event: ProgressEvent) -> None:
            if event.result is not None:
                counts[event.result.status] += 1
            else:
                live.update(progress_text(event, counts))

        return run_suite(target, only=only, progress=progress)
