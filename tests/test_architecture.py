"""The architecture holds (docs/architecture.md): import contracts, ruff lint and ruff format.

Why tests: the test command is the one thing every change runs, so the layer rules and the code
style are enforced there instead of by habit. Each check runs the real tool in a subprocess on
the repository; a control run on a copy with one forbidden import shows the contracts can fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKED_TREES = ("src", "tests", "benchmarks", "fuzz")
# layers, protocol-no-io, private-modules, console-via-server-api, conformance-black-box
MIN_CONTRACTS = 5
TOOL_TIMEOUT_SECONDS = 120
_SUMMARY = re.compile(r"Contracts: (\d+) kept, (\d+) broken\.")


def _tool(name: str) -> str:
    """The tool installed next to this interpreter (the test extra), else the one on PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[test]' -c constraints.txt"
    return found


def _run(argv: list[str], cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_SECONDS,
        env={**os.environ, **env},
    )


def test_import_contracts_hold() -> None:
    result = _run([_tool("lint-imports")])
    output = result.stdout + result.stderr
    summary = _SUMMARY.search(output)
    assert summary, output
    kept, broken = int(summary.group(1)), int(summary.group(2))
    assert (result.returncode, broken) == (0, 0), output
    assert kept >= MIN_CONTRACTS, output


def test_import_contracts_catch_a_forbidden_import(tmp_path: Path) -> None:
    """Control: on a copy where protocol/ opens a socket and the console imports the CLI, the
    same configuration reports both (so a contract that checks nothing cannot pass unnoticed)."""
    shutil.copytree(ROOT / "src" / "estkit", tmp_path / "src" / "estkit")
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    limits = tmp_path / "src" / "estkit" / "protocol" / "limits.py"
    limits.write_text(limits.read_text() + "\nimport socket  # the mutant\n")
    admin = tmp_path / "src" / "estkit" / "console" / "admin_ca.py"
    admin.write_text(admin.read_text() + "\nimport estkit.cli.output  # the mutant\n")
    result = _run([_tool("lint-imports")], cwd=tmp_path, PYTHONPATH=str(tmp_path / "src"))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "estkit.protocol.limits -> socket" in output, output
    assert "estkit.console.admin_ca -> estkit.cli.output" in output, output
    summary = _SUMMARY.search(output)
    assert summary and int(summary.group(2)) == 2, output


def test_ruff_check_is_clean() -> None:
    result = _run([_tool("ruff"), "check", *CHECKED_TREES])
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = _run([_tool("ruff"), "format", "--check", *CHECKED_TREES])
    assert result.returncode == 0, result.stdout + result.stderr
