"""`estkit server add-label` as the README writes it, with a readable summary and --json
(issue 15, item 4 and the README's `--approval manual` form)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from estkit.cli.main import cli
from estkit.server.config import load_config
from estkit.server.datadir import init_data_dir


def _server(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["server", *map(str, args)])


def test_add_label_as_the_readme_writes_it(tmp_path: Path) -> None:
    paths = init_data_dir(tmp_path / "d", key_type="p256")
    result = _server("add-label", paths.data_dir, "manual", "--approval", "manual")
    assert result.exit_code == 0, result.stderr
    assert load_config(paths.config).labels["manual"].approval == "manual"
    lines = result.stdout.splitlines()
    assert lines[0] == "label manual added: clients use /.well-known/est/manual/..."
    # One "  field   value" line per profile field (the column width follows the longest name).
    fields = {line.split()[0]: " ".join(line.split()[1:]) for line in lines[1:] if line.strip()}
    assert fields["approval"] == "manual"
    assert fields["key_families"] == "ec, rsa"
    assert fields["require_pop"] == "no"
    assert all(line.startswith("  ") for line in lines[1:] if line.strip())
    for python_repr in ("Profile(", "frozenset", "label='", "True", "False"):
        assert python_repr not in result.stdout

    again = _server("add-label", paths.data_dir, "manual", "--set", "retry_after_seconds=30")
    assert again.stdout.startswith("label manual replaced")


def test_add_label_json_and_conflicts(tmp_path: Path) -> None:
    paths = init_data_dir(tmp_path / "d", key_type="p256")
    result = _server(
        "add-label", paths.data_dir, "pop", "--require-pop", "--auth-mode", "rfc7030", "--json"
    )
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["label"] == "pop" and document["replaced"] is False
    assert document["profile"]["require_pop"] is True
    assert document["profile"]["auth_mode"] == "rfc7030"
    assert document["profile"]["key_families"] == ["ec", "rsa"]

    clash = _server(
        "add-label", paths.data_dir, "x", "--approval", "manual", "--set", "approval=auto"
    )
    assert clash.exit_code == 2
    assert "--approval manual and --set approval=auto disagree" in clash.stderr
    assert "x" not in load_config(paths.config).labels

    bad = _server("add-label", paths.data_dir, "y", "--approval", "sometimes")
    assert bad.exit_code == 2 and "'sometimes' is not one of" in bad.stderr
