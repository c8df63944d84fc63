"""The ``estkit`` command: a thin dispatcher to one module per command group.

Why lazy, and why help texts live here: ``estkit`` runs from scripts and cron timers, where
start-up is most of the cost, and importing a group's module pulls in its whole stack (the server
and aiohttp, the NMOS node, the console). Click's help for a group calls ``get_command`` on every
subcommand to read its one-line summary, which would import them all; so this table carries each
command's summary and ``estkit --help`` / ``estkit <group> --help`` are answered from it without
importing any command module. A command module is imported only when one of its commands runs or
its own ``--help`` is asked for. A broken optional dependency of one group cannot break the others.

tests/test_cli_start.py renders every help page both ways (from this table, and from the real
command objects) and fails with the lines to paste here when a summary, a command or a group's
options drift.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator, Mapping
from typing import NamedTuple

import click

from estkit import __version__
from estkit._lazy import import_module

CONTEXT_SETTINGS: dict[str, list[str]] = {"help_option_names": ["-h", "--help"]}


class LazyEntry(NamedTuple):
    """Where a top-level command lives and what its help pages say, so help needs no import.

    (A NamedTuple, not a dataclass: importing ``dataclasses`` would cost --help 10 ms.)
    """

    module: str
    attribute: str
    help: str  # the command's docstring (a group's help page shows it whole)
    # For a group: subcommand -> its one-line summary (click's short help at unlimited width).
    subcommands: Mapping[str, str] = {}  # shared default, never mutated


COMMANDS: dict[str, LazyEntry] = {
    "client": LazyEntry(
        "estkit.cli.client",
        "client",
        "EST client: get CA certificates, enroll, re-enroll, server-side key generation.",
        {
            "cacerts": "Get the CA certificates (/cacerts) and report root rollover certificates.",
            "csrattrs": "Show what the server wants in a CSR (/csrattrs).",
            "enroll": "Get a new certificate (/simpleenroll).",
            "reenroll": "Renew the certificate given by --cert/--key (/simplereenroll).",
            "serverkeygen": "Have the server generate the key pair (/serverkeygen).",
            "status": "Is a certificate revoked? Asks its AIA OCSP responder, then its CRL "
            "distribution point.",
        },
    ),
    "demo": LazyEntry(
        "estkit.cli.demo",
        "demo",
        "Run an EST server and an NMOS node against it: root CA, RSA + ECDSA certificates, "
        "renewal.",
    ),
    "nmos": LazyEntry(
        "estkit.cli.nmos",
        "nmos",
        "NMOS node (BCP-003-03): discovery, provisioning workflow, renewal agent.",
        {
            "agent": "Keep the node's root CA and certificates valid (renewal agent, C2-C17).",
            "config-example": "Print an example node.toml to start from.",
            "discover": "List the EST servers advertised by DNS-SD, in the order a node tries "
            "them (D1-D5).",
            "install": "Install a root CA, and optionally a TLS certificate + key, by hand (C6).",
            "status": "Certificates, expiry, next action, last error and the IS-04 tag (C17).",
            "workflow": "Get the root CA, an RSA and an ECDSA certificate, and renew them once "
            "(the prototype's workflow, BCP-003-03 C4-C13).",
        },
    ),
    "server": LazyEntry(
        "estkit.cli.server",
        "server",
        "EST server with its own CA: init, serve, and operate (certs, revoke, approvals).",
        {
            "add-label": "Add (or replace) an EST label with its CA profile "
            "(/.well-known/est/LABEL/...).",
            "add-user": "Add an HTTP Basic/Digest user for rfc7030-mode labels (hashes stored, "
            "never the password).",
            "admin-cert": "Issue an operator certificate NAME for the web console of the server "
            "in DATA_DIR.",
            "admin-certs": "List the console operator certificates issued for the server in "
            "DATA_DIR.",
            "approve": "Approve a queued enrollment request.",
            "certs": "List the certificates the server issued, newest first, one page at a time.",
            "console-login": "Print a single-use console sign-in URL for OPERATOR (valid 10 "
            "minutes).",
            "dns-records": "Print the unicast DNS-SD records (PTR/SRV/TXT/A) to paste into a zone "
            "(D1-D4).",
            "init": "Create DIR: root + issuing CA, TLS certificates, demo manufacturer and "
            "device, config.",
            "ra-cert": "Issue a registration-authority certificate (id-kp-cmcRA) and trust it "
            "([ra] trusted).",
            "reject": "Reject a queued enrollment request.",
            "requests": "List enrollment requests waiting for (or decided by) an operator (S4), "
            "newest first, one page at a time.",
            "revoke": "Revoke an issued certificate (hex SERIAL) and regenerate the CRL.",
            "revoke-admin-cert": "Revoke a console operator certificate (hex SERIAL) or all of "
            "operator NAME's.",
            "rollover": "Root CA key rollover (RFC 4210 §4.4); a running server picks it up "
            "immediately.",
            "serve": "Run the server in the foreground (default DIR: ./estkit-data, created on "
            "first run).",
            "trust": "Trust device certificates of another manufacturer CA (with an optional CRL "
            "file).",
            "untrust": "Stop trusting a manufacturer CA, given by its file or a certificate "
            "fingerprint.",
        },
    ),
    "test-server": LazyEntry(
        "estkit.cli.conformance",
        "test_server",
        "Check an EST server against RFC 7030/8951, BCP-003-03 and BCP-003-01.",
    ),
}


# --- the cyclic garbage collector at start-up and exit (issue 23) -----------------------------
# Loading a command's stack creates a few hundred thousand objects (modules, classes, functions)
# that live as long as the process. The cyclic collector traverses them all again and again while
# they load (about 20 ms of CPU for the NMOS workflow's modules) and once more when the interpreter
# exits (about 30 ms). So the console script (main) turns it off while modules load, then freezes
# what they created (gc.freeze: never traversed again) and turns it back on: every command runs
# with the collector on, it only skips the loaded modules. At exit everything is frozen: the
# process is ending, nothing needs collecting (files are closed by their ``with`` blocks and
# the standard streams are flushed by the interpreter, not by the collector).
# Nothing changes when estkit is not started by main() (tests, code importing estkit.cli).
_gc_managed = False  # main() is the entry point
_gc_loading = False  # ... and modules are being loaded with the collector off


def loaded() -> None:
    """The modules of the command are loaded: freeze them and turn the collector back on."""
    global _gc_loading
    if _gc_loading:
        _gc_loading = False
        gc.freeze()
        gc.enable()


@contextlib.contextmanager
def loading() -> Iterator[None]:
    """For a command that imports its stack inside its function: those imports, too, run with
    the collector off and are frozen after (see above; nothing happens outside main())."""
    global _gc_loading
    if _gc_managed and not _gc_loading:
        gc.disable()
        _gc_loading = True
    try:
        yield
    finally:
        loaded()


def load_command(entry: LazyEntry) -> click.Command | None:
    """Import the module of ``entry``; ``None`` when that module itself is not installed."""
    try:
        module = import_module(entry.module)
    except ModuleNotFoundError as exc:
        if exc.name == entry.module:
            return None
        raise
    finally:
        loaded()
    command = getattr(module, entry.attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{entry.module}.{entry.attribute} is not a click command")
    return command


def _format_summaries(
    formatter: click.HelpFormatter, summaries: Mapping[str, str], names: list[str]
) -> None:
    """Click's "Commands" section, from summaries instead of imported commands."""
    if not names:
        return
    limit = formatter.width - 6 - max(len(name) for name in names)
    rows = [
        (name, click.Command(name, help=summaries[name]).get_short_help_str(limit))
        for name in names
    ]
    with formatter.section("Commands"):
        formatter.write_dl(rows)


class LazySubgroup(click.Group):
    """A command group whose help comes from its :class:`LazyEntry`; the real group (in its own
    module) is imported only to run, or show the help of, one of its subcommands."""

    def __init__(self, name: str, entry: LazyEntry) -> None:
        super().__init__(name, help=entry.help, context_settings=CONTEXT_SETTINGS)
        self.entry = entry

    def _real(self) -> click.Group:
        command = load_command(self.entry)
        if not isinstance(command, click.Group):
            raise click.ClickException(f"the {self.name} commands are not installed")
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.entry.subcommands)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        # Any name goes to the real group: a command added there but not yet listed here works.
        return self._real().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        _format_summaries(formatter, self.entry.subcommands, self.list_commands(ctx))

    def invoke(self, ctx: click.Context) -> object:
        # The real group runs its own callback and resolves the subcommand.
        return self._real().invoke(ctx)


class LazyGroup(click.Group):
    """The top-level group: lists :data:`COMMANDS` and imports one module per invocation."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        if entry.subcommands:
            return LazySubgroup(cmd_name, entry)
        return load_command(entry)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        summaries = {name: entry.help for name, entry in COMMANDS.items()}
        _format_summaries(formatter, summaries, self.list_commands(ctx))


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="estkit")
def cli() -> None:
    """estkit: EST (RFC 7030) client, server + CA, NMOS BCP-003-03 node and conformance suite."""


def main() -> None:
    global _gc_managed, _gc_loading
    # httpx imports its own command-line client (rich.progress, rich.syntax, pygments: ~13 ms)
    # whenever those are installed, and they are (our CLI uses click and rich); no estkit command
    # runs it. A None entry makes httpx's optional import fail as if they were absent (issue 23).
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]  # None blocks an import
    # The command's modules load with the cyclic collector off (see loaded() above).
    if gc.isenabled():
        gc.disable()
        _gc_managed = _gc_loading = True
    try:
        cli(prog_name="estkit")
    finally:
        if _gc_managed:
            gc.freeze()  # exiting: no last traversal of every object


if __name__ == "__main__":
    main()
