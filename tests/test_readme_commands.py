"""Every documented `estkit …` command runs as written (issue 15, item 1).

Each `estkit …` line in a code block of README.md and docs/**/*.md is parsed by the real click
parser (the command is resolved, every option and argument converted, prompts answered) with the
command's body replaced by a recorder, so nothing runs. Placeholders a reader replaces (DIR, ID,
SERIAL, `[optional parts]`, `a|b` alternatives) get a plausible value first. The quick-start
commands then run end to end as written.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import click
import pytest
from click.testing import CliRunner

from estkit.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# A reader replaces these words by real values; the parser needs values of the right type.
PLACEHOLDERS = {"ID": "1", "SERIAL": "01", "N": "8444"}
# Tokens that name files the commands read (click checks that they exist).
FILE_SUFFIXES = (".pem", ".key", ".crl", ".toml", ".csr", ".der", ".p12")
SHELL_SEPARATORS = {";", "&&", "||", "|"}
REDIRECTIONS = {">", ">>", "<", "2>"}
# The quick start: `estkit demo` must finish in this time on the shared 2-core machine.
DEMO_TIMEOUT_SECONDS = 120
SERVE_START_SECONDS = 60


def _code_blocks(text: str) -> Iterator[str]:
    inside = False
    block: list[str] = []
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if inside:
                yield "\n".join(block)
                block = []
            inside = not inside
            continue
        if inside:
            block.append(line)


def _shell_commands(block: str) -> Iterator[list[str]]:
    """The commands of a shell block, continuation lines joined, comments and redirections cut."""
    joined = block.replace("\\\n", " ")
    for line in joined.splitlines():
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            continue  # not shell (e.g. a Python block)
        command: list[str] = []
        skip_next = False
        for token in [*tokens, ";"]:
            if skip_next:
                skip_next = False
                continue
            if token in REDIRECTIONS:
                skip_next = True
                continue
            if token in SHELL_SEPARATORS:
                if command:
                    yield command
                command = []
                continue
            command.append(token)


def documented_commands() -> list[tuple[str, list[str]]]:
    found = []
    for document in DOCUMENTS:
        for block in _code_blocks(document.read_text(encoding="utf-8")):
            for command in _shell_commands(block):
                if command[0] == "estkit":
                    line = " ".join(command)
                    found.append((f"{document.relative_to(ROOT)}: {line}", command[1:]))
    return found


def _concrete(args: list[str]) -> list[str]:
    """Optional parts included, the first of each a|b alternative, placeholders filled in."""
    result = []
    for token in args:
        token = token.replace("[", "").replace("]", "").replace("…", "")
        if not token:
            continue
        if "|" in token and not token.startswith("-"):
            token = token.split("|")[0]
        result.append(PLACEHOLDERS.get(token, token))
    return result


def _leaf(args: list[str]) -> tuple[click.Command, list[str]]:
    command: click.Command = cli
    context = click.Context(cli)
    path = []
    while isinstance(command, click.Group):
        name = args[len(path)]
        found = command.get_command(context, name)
        assert found is not None, f"no command {' '.join([*path, name])!r}"
        command = found
        path.append(name)
    return command, path


COMMANDS = documented_commands()


def test_the_documents_have_commands() -> None:
    """The extraction works: the README's command blocks are found."""
    lines = [line for line, _ in COMMANDS]
    assert len(lines) >= 20, lines
    assert any("estkit server add-label DIR manual --approval manual" in line for line in lines)
    assert any(line.endswith("README.md: estkit demo") for line in lines)


@pytest.mark.parametrize(("line", "args"), COMMANDS, ids=[line for line, _ in COMMANDS])
def test_documented_command_parses(
    line: str, args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    concrete = _concrete(args)
    monkeypatch.chdir(tmp_path)
    for token in concrete:
        if token.endswith(FILE_SUFFIXES) and "/" not in token:
            (tmp_path / token).write_text("placeholder\n")
    (tmp_path / "DIR").mkdir()
    leaf, _path = _leaf(concrete)
    calls: list[dict[str, Any]] = []
    with mock.patch.object(leaf, "callback", lambda **kwargs: calls.append(kwargs)):
        result = CliRunner().invoke(cli, concrete, input="secret\nsecret\n" * 2)
    assert result.exit_code == 0, f"{line}\n{result.output}{result.stderr}"
    assert len(calls) == 1, f"{line}: the command was not reached"


# --- the quick start runs end to end ---------------------------------------------------------


def test_quick_start_demo_runs_as_written() -> None:
    """README: `... && estkit demo`."""
    completed = subprocess.run(
        [sys.executable, "-m", "estkit.cli.main", "demo"],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "NMOS node certificates" in completed.stdout
    assert "Traceback" not in completed.stderr


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_quick_start_server_and_node_run_as_written(tmp_path: Path) -> None:
    """README "A server in one terminal, a node in another": both lines exactly as written."""
    if not _port_free(8443):
        pytest.skip("port 8443, which the README's commands use, is taken on this machine")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    estkit = [sys.executable, "-m", "estkit.cli.main"]
    server = subprocess.Popen(
        [*estkit, "server", "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + SERVE_START_SECONDS
        banner = ""
        while time.monotonic() < deadline and "https://" not in banner:
            assert server.stdout is not None
            line = server.stdout.readline()
            if not line and server.poll() is not None:
                break
            banner += line
        assert re.search(r"https://localhost:8443", banner), banner
        node = subprocess.run(
            [*estkit, "nmos", "workflow", "--ip", "localhost", "--port", "8443"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=DEMO_TIMEOUT_SECONDS,
            check=False,
        )
        assert node.returncode == 0, node.stdout + node.stderr
        assert "Traceback" not in node.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
