"""`estkit demo`: server + node in one command, on a fresh machine (issue 4)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from estkit.cli.main import cli
from estkit.protocol.certs import load_pem_certificates


def test_demo_json_in_a_fresh_process() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "estkit.cli.main", "demo", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    data = json.loads(completed.stdout)  # nothing but the JSON document on stdout
    assert set(data) == {"root_ca", "certificates"}
    assert [(c["key_type"], c["renewed"]) for c in data["certificates"]] == [
        ("rsa", True),
        ("ecdsa", True),
    ]
    assert "Traceback" not in completed.stderr
    # The paths pointed into a temporary directory: the demo says they are gone.
    assert not Path(data["root_ca"]).exists()
    assert "temporary directory, now removed" in completed.stderr


def test_demo_keeps_files_with_dir_and_reuses_the_server(tmp_path: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["demo", "--dir", str(tmp_path)])
    assert first.exit_code == 0, first.output
    assert "NMOS node certificates" in first.stdout
    assert f"files kept in {tmp_path}" in first.stdout
    node = tmp_path / "node"
    root = load_pem_certificates((node / "root-ca.pem").read_bytes())[0]
    server_root = load_pem_certificates((tmp_path / "server" / "ca" / "root.pem").read_bytes())[0]
    assert root == server_root
    for slot in ("rsa", "ecdsa"):
        assert stat.S_IMODE((node / f"{slot}-key.pem").stat().st_mode) == 0o600
        leaf = load_pem_certificates((node / f"{slot}-cert.pem").read_bytes())[0]
        assert leaf.issuer != leaf.subject
    second = runner.invoke(cli, ["demo", "--dir", str(tmp_path), "--json"])
    assert second.exit_code == 0, second.output
    again = load_pem_certificates((node / "root-ca.pem").read_bytes())[0]
    assert again == root  # the same CA was reused, the node saw the same root
