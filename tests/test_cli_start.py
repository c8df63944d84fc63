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


def _type_checking_names(package: str) -> set[str]:
    """Names the package imports under ``if TYPE_CHECKING:`` (what type checkers see)."""
    path = SRC.joinpath(*package.split(".")[1:], "__init__.py")
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom), ast.unparse(statement)
                names.update(alias.asname or alias.name for alias in statement.names)
    return names


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_lazy_package_lists_agree_and_every_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    exports: dict[str, str] = module._EXPORTS
    assert sorted(module.__all__) == sorted(exports)
    assert _type_checking_names(package) == set(exports)
    for name, submodule in exports.items():
        owner = importlib.import_module(f"{package}.{submodule}")
        assert getattr(module, name) is getattr(owner, name), name
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        _ = module.no_such_name


def test_protocol_exports_every_public_name_of_its_submodules() -> None:
    protocol = importlib.import_module("estkit.protocol")
    expected = {
        name: submodule
        for submodule in protocol._SUBMODULES
        for name in importlib.import_module(f"estkit.protocol.{submodule}").__all__
    }
    assert expected == protocol._EXPORTS


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
