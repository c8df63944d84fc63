"""Fast start (issue 23): help pages import no command stack; the lazy tables stay true.

Not timed (benchmarks/bench_cli_start.py prints the figures): these tests pin down the mechanism
the figures depend on. ``estkit --help`` and ``estkit <group> --help`` are answered from the table
in estkit/cli/main.py, so they must import neither aiohttp nor estkit.server, estkit.console or
estkit.nmos; the table must render exactly the help the real commands would; and the lazy package
``__init__`` files must export every name they list, from the submodule they name.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from estkit._lazy import type_checking_exports
from estkit.cli.main import COMMANDS, CONTEXT_SETTINGS, cli, load_command

SRC = Path(__file__).resolve().parent.parent / "src" / "estkit"
HEAVY = ("aiohttp", "estkit.server", "estkit.console", "estkit.nmos")
LAZY_PACKAGES = (
    "estkit.protocol",
    "estkit.ca",
    "estkit.client",
    "estkit.server",
    "estkit.nmos",
    "estkit.console",
    "estkit.conformance",
    "estkit.conformance.reports",
)
GROUPS = sorted(name for name, entry in COMMANDS.items() if entry.subcommands)
COMMANDS_ONLY = sorted(name for name, entry in COMMANDS.items() if not entry.subcommands)


# Runs the real entry point in a fresh interpreter and reports sys.modules as it exits (click's
# --help ends with sys.exit, so atexit sees everything the command imported, however imported).
_PROBE = """
import atexit, sys
atexit.register(lambda: sys.stderr.write("MODULES " + " ".join(sorted(sys.modules)) + "\\n"))
from estkit.cli.main import main
sys.argv = ["estkit", *sys.argv[1:]]
main()
"""


def _imported_by(*argv: str) -> tuple[set[str], str]:
    """Modules a fresh ``estkit ARGV`` has imported when it exits, and its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("MODULES ")]
    assert len(lines) == 1, result.stderr[-2000:]
    return set(lines[0].split()[1:]), result.stdout


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize("group", ["", *GROUPS])
def test_help_imports_no_server_console_or_nmos_module(group: str) -> None:
    argv = [group, "--help"] if group else ["--help"]
    modules, out = _imported_by(*argv)
    assert out.startswith(f"Usage: estkit {group}".rstrip() + " "), out
    assert "Commands:" in out, out
    assert _heavy(modules) == [], f"estkit {' '.join(argv)} imported {_heavy(modules)}"
    # Not even the group's own command module: its summaries come from the table.
    assert sorted(m for m in modules if m.startswith("estkit.cli.")) == ["estkit.cli.main"]


@pytest.mark.parametrize("command", COMMANDS_ONLY)
def test_top_level_command_help_imports_no_server_console_or_nmos_module(command: str) -> None:
    """``demo`` runs a server and a node, ``test-server`` probes one: neither needs them loaded
    to describe its options."""
    modules, out = _imported_by(command, "--help")
    assert out.startswith(f"Usage: estkit {command} [OPTIONS]"), out
    assert _heavy(modules) == [], f"estkit {command} --help imported {_heavy(modules)}"


def test_test_server_help_loads_no_part_of_the_suite() -> None:
    """``estkit test-server --help`` describes its options without the suite behind them (its
    cases, DNS, TLS probes, HTTP client, reports, rich): loading those took about 0.25 s, the
    whole of issue 23's budget. ``--list`` (the control) does load the cases."""
    modules, out = _imported_by("test-server", "--help")
    assert "--revoke-command" in out and "example.com" in out, out  # a default shown
    loaded = sorted(
        m
        for m in modules
        if m.split(".")[0] in ("rich", "dns", "httpx", "asn1crypto")
        or (m.startswith("estkit.conformance.") and m != "estkit.conformance.defaults")
    )
    # httpx._main is no module here: cli/main.py's None entry that blocks its import.
    loaded = [m for m in loaded if m != "httpx._main"]
    assert loaded == [], loaded
    modules, out = _imported_by("test-server", "--list")
    assert "estkit.conformance.cases" in modules and "ocsp-good" in out, out


def test_the_import_probe_sees_a_command_that_does_load_its_stack() -> None:
    """Control for the test above: a subcommand's own help loads its module and the server, so
    an empty finding there means the help really was answered lazily, not that the probe is
    blind."""
    modules, out = _imported_by("server", "serve", "--help")
    assert "Usage: estkit server serve" in out
    assert "estkit.cli.server" in modules
    assert "estkit.server.config" in modules


def _eager_cli() -> click.Group:
    """The same command tree built the plain way: every command imported and attached."""
    commands = {name: load_command(entry) for name, entry in COMMANDS.items()}
    return click.Group(
        "estkit",
        help=cli.help,
        params=cli.params,
        context_settings=CONTEXT_SETTINGS,
        commands={name: command for name, command in commands.items() if command is not None},
    )


def _suggested_entry(name: str, command: click.Command) -> str:
    """The COMMANDS entry that would render ``command``'s help, to paste into cli/main.py."""
    lines = [f"{name!r}: help={command.help!r}"]
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for sub in command.list_commands(ctx):
            subcommand = command.get_command(ctx, sub)
            if subcommand is not None and not subcommand.hidden:
                lines.append(f"    {sub!r}: {subcommand.get_short_help_str(10**6)!r},")
    return "\n".join(lines)


@pytest.mark.parametrize("group", ["", *GROUPS])
def test_help_from_the_table_is_the_help_of_the_real_commands(group: str) -> None:
    argv = [group, "--help"] if group else ["--help"]
    runner = CliRunner()
    lazy = runner.invoke(cli, argv, prog_name="estkit", terminal_width=100)
    eager = runner.invoke(_eager_cli(), argv, prog_name="estkit", terminal_width=100)
    assert lazy.exit_code == eager.exit_code == 0, lazy.output + eager.output
    hint = ""
    if group:
        real = load_command(COMMANDS[group])
        assert real is not None
        # The table stands in for the real group's own parsing: it must have none.
        assert [p.name for p in real.params if p.name != "help"] == []
        hint = _suggested_entry(group, real)
    assert lazy.output == eager.output, f"update COMMANDS in estkit/cli/main.py:\n{hint}"


def test_top_level_summaries_are_the_real_commands_summaries() -> None:
    for name, entry in COMMANDS.items():
        real = load_command(entry)
        assert real is not None, name
        summary = click.Command(name, help=entry.help).get_short_help_str(10**6)
        assert summary == real.get_short_help_str(10**6), _suggested_entry(name, real)


def test_a_subcommand_runs_through_the_lazy_group() -> None:
    result = CliRunner().invoke(cli, ["nmos", "config-example"], prog_name="estkit")
    assert result.exit_code == 0, result.output
    assert "[discovery]" in result.output


def test_an_unknown_subcommand_is_refused_by_the_real_group() -> None:
    result = CliRunner().invoke(cli, ["client", "nope"], prog_name="estkit")
    assert result.exit_code == 2
    assert "No such command 'nope'" in result.output


def _type_checking_imports(package: str) -> dict[str, set[str]]:
    """What the package imports under ``if TYPE_CHECKING:`` (what type checkers see), as
    ``submodule -> names``; each import must be the explicit re-export ``Name as Name``."""
    path = SRC.joinpath(*package.split(".")[1:], "__init__.py")
    tree = ast.parse(path.read_text())
    imports: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom), ast.unparse(statement)
                assert statement.module is not None, ast.unparse(statement)
                if statement.level == 0:
                    submodule = statement.module.removeprefix(package + ".")
                    assert submodule != statement.module, ast.unparse(statement)
                else:
                    assert statement.level == 1, ast.unparse(statement)
                    submodule = statement.module
                for alias in statement.names:
                    # mypy (no_implicit_reexport on protocol/ and ca/) and pyright export a name
                    # a package imports only in this form (there is no __all__ they can read).
                    assert alias.asname == alias.name, ast.unparse(statement)
                    imports.setdefault(submodule, set()).add(alias.name)
    return imports


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_lazy_package_reads_its_type_checking_imports_and_every_name_resolves(
    package: str,
) -> None:
    """The TYPE_CHECKING imports are the package's one list of names: the run-time scan reads
    them exactly as Python's parser does, and each name is its submodule's object."""
    imports = _type_checking_imports(package)
    source = SRC.joinpath(*package.split(".")[1:], "__init__.py").read_text()
    scanned = type_checking_exports(package, source)
    assert {sub: set(names) for sub, names in _by_submodule(scanned).items()} == imports
    module = importlib.import_module(package)
    assert module.__all__ == sorted(scanned)
    for submodule, names in imports.items():
        owner = importlib.import_module(f"{package}.{submodule}")
        for name in names:
            assert getattr(module, name) is getattr(owner, name), name
    assert set(scanned) <= set(dir(module))
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        _ = module.no_such_name


def _by_submodule(exports: dict[str, str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, submodule in exports.items():
        grouped.setdefault(submodule, []).append(name)
    return grouped


def test_protocol_exports_every_public_name_of_its_submodules() -> None:
    for submodule, names in _type_checking_imports("estkit.protocol").items():
        public = importlib.import_module(f"estkit.protocol.{submodule}").__all__
        assert names == set(public), submodule


_BLOCK = "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n{}\nX = 1\n"


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("    from .store import Event\n", "only 'from .x import Name as Name' lines"),
        ("    from .store import Event as Event, Other as Other\n", "only 'from .x import"),
        ("    from .store import Event as Entry\n", "Event must be imported once, as 'Event as"),
        (
            "    from .store import Event as Event\n    from .log import Event as Event\n",
            "Event must be imported once",
        ),
        ("    from estkit.client import Event as Event\n", "outside the package"),
        ("    import estkit.ca.store as store\n", r"\(1 imports of 1 names, 0 read\)"),
    ],
)
def test_a_type_checking_block_the_lazy_scan_cannot_read_is_refused(
    lines: str, message: str
) -> None:
    """Each of these would leave a name that type checkers see but ``__getattr__`` cannot find
    (or finds in the wrong module): refused when the package is imported, not when it is used."""
    with pytest.raises(ValueError, match=message):
        type_checking_exports("estkit.ca", _BLOCK.format(lines))


def test_the_lazy_scan_reads_a_parenthesised_long_import() -> None:
    lines = "    from estkit.ca.store import (\n        Event as Event,  # noqa: E501\n    )\n"
    assert type_checking_exports("estkit.ca", _BLOCK.format(lines)) == {"Event": "store"}


def test_importing_one_submodule_does_not_load_its_package() -> None:
    probe = (
        "import sys; import estkit.ca.builders, estkit.client.errors, estkit.nmos.errors; "
        "print(' '.join(sorted(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(result.stdout.split())
    assert "estkit.ca.builders" in loaded
    for eager_only in ("estkit.ca.store", "estkit.client.sync", "estkit.nmos.agent", "asyncio"):
        assert eager_only not in loaded, eager_only


def test_start_up_benchmark_runs_and_prints_every_figure() -> None:
    """One round of benchmarks/bench_cli_start.py (not timed: its figures are not asserted, only
    that every command it times succeeded and the report is whole)."""
    script = SRC.parent.parent / "benchmarks" / "bench_cli_start.py"
    result = subprocess.run(
        [sys.executable, str(script), "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for figure in (
        "estkit --help ",
        *(f"estkit {group} --help" for group in COMMANDS),
        "estkit client cacerts (end to end)",
        "estkit nmos workflow",
        "reference_workflow.py (prototype)",
        "target: no slower than the reference",
    ):
        assert figure in out, figure
    assert out.count("import-time top 10") == 3, out
    assert "estkit.cli.main" in out.split("import-time top 10, estkit --help")[1], out


def _modules_after(statement: str) -> set[str]:
    """Modules a fresh interpreter has loaded after ``statement``."""
    probe = f"import sys\n{statement}\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return set(result.stdout.split())


def test_the_workflow_starts_its_key_thread_before_the_heavy_imports() -> None:
    """``estkit nmos workflow`` starts making its keys right after loading estkit.cli.nmos, the
    node config and the key prefetch (issue 23): none of them may pull in cryptography.x509
    (~25 ms), asn1crypto or the node, or the keys start that much later."""
    loaded = _modules_after(
        "import estkit.cli.main, estkit.cli.nmos, estkit.nmos.config, estkit.nmos.prefetch"
    )
    assert (
        "estkit.nmos.prefetch" in loaded
        and "cryptography.hazmat.primitives.asymmetric.rsa" in loaded
    )
    early = sorted(
        m
        for m in loaded
        if m in ("cryptography.x509", "httpx", "estkit.nmos.node", "estkit.client.sync")
        or m.split(".")[0] == "asn1crypto"
    )
    assert early == [], early


def test_the_workflow_loads_no_hook_discovery_dns_or_serverkeygen_code() -> None:
    """What a node with --ip/--port and no on_change hook never uses is not loaded by the
    workflow's modules: the hook runner (and subprocess), dnspython, server-side key generation
    and its CMS key agreement. The control: the node's own parts are loaded."""
    loaded = _modules_after(
        "sys.modules['httpx._main'] = None  # as main() does\n"
        "import estkit.cli.nmos, estkit.nmos.node, estkit.nmos.workflow"
    )
    assert {"estkit.nmos.store", "estkit.nmos.connector", "estkit.client.submit"} <= loaded
    unused = sorted(
        m
        for m in loaded
        if m
        in (
            "subprocess",
            "estkit.nmos.hooks",
            "estkit.protocol.serverkeygen",
            "estkit.protocol.cms_kari",
            "rich",
        )
        or m.split(".")[0] == "dns"
    )
    assert unused == [], unused


_GC_PROBE = """
import atexit, gc, sys
import click
seen = []
echo = click.echo
def recording_echo(*args, **kwargs):
    seen.append((gc.isenabled(), gc.get_freeze_count() > 0))
    return echo(*args, **kwargs)
click.echo = recording_echo
atexit.register(lambda: sys.stderr.write(f"SEEN {seen} FROZEN-AT-EXIT {gc.get_freeze_count()}\\n"))
from estkit.cli.main import main
sys.argv = ["estkit", "nmos", "config-example"]
main()
"""


def test_commands_run_with_the_collector_on_after_loading_with_it_off() -> None:
    """The console script loads a command's modules with the cyclic collector off and freezes
    them (issue 23), but the command itself runs with it on: a long-running command (server,
    agent) must collect its garbage. Kills a start-up that forgets to turn it back on."""
    result = subprocess.run(
        [sys.executable, "-c", _GC_PROBE], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[discovery]" in result.stdout  # the command ran
    line = next(ln for ln in result.stderr.splitlines() if ln.startswith("SEEN "))
    assert line.startswith("SEEN [(True, True)]"), line  # collector on, modules frozen


def test_loading_turns_the_collector_off_only_under_the_console_script(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gc

    import estkit.cli.main as entry

    assert gc.isenabled()
    with entry.loading():
        assert gc.isenabled()  # not started by main(): nothing changes (tests, embedding)
    before = gc.get_freeze_count()
    monkeypatch.setattr(entry, "_gc_managed", True)
    try:
        with entry.loading():
            assert not gc.isenabled()
        assert gc.isenabled()
        assert gc.get_freeze_count() >= before
    finally:
        gc.enable()
        gc.unfreeze()  # leave this test process as it was
