"""`--json` on every command (issue 15, item 4), and the documents of the commands that got it
last: `server serve` (one ready line), `nmos agent --once`, `nmos install`, `nmos
config-example`. The schemas are described in docs/cli-json.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import click
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from estkit.cli.main import COMMANDS, load_command
from estkit.cli.nmos import EXAMPLE_CONFIG

ROOT = Path(__file__).resolve().parents[1]
ESTKIT = [sys.executable, "-m", "estkit.cli.main"]
# Key generation, store migration and TLS set-up on the shared 2-core machine.
SERVE_START_SECONDS = 60
COMMAND_TIMEOUT_SECONDS = 120


def _leaves() -> list[tuple[str, click.Command]]:
    found = []
    for name, entry in COMMANDS.items():
        command = load_command(entry)
        assert command is not None, name
        if isinstance(command, click.Group):
            context = click.Context(command)
            for sub in command.list_commands(context):
                leaf = command.get_command(context, sub)
                assert leaf is not None
                found.append((f"{name} {sub}", leaf))
        else:
            found.append((name, command))
    return found


def test_every_command_has_json_and_docs_name_it() -> None:
    leaves = _leaves()
    assert len(leaves) >= 30, [name for name, _ in leaves]
    missing = [
        name
        for name, command in leaves
        if not any("--json" in getattr(param, "opts", ()) for param in command.params)
    ]
    assert missing == [], f"commands without --json: {missing}"
    documented = (ROOT / "docs" / "cli-json.md").read_text(encoding="utf-8")
    undocumented = [name for name, _ in leaves if f"`estkit {name}" not in documented]
    assert undocumented == [], f"not in docs/cli-json.md: {undocumented}"


def estkit(*args: str | Path, cwd: Path, expect: int = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*ESTKIT, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == expect, f"{args}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done


def test_config_example_json_is_the_example(tmp_path: Path) -> None:
    document = json.loads(estkit("nmos", "config-example", "--json", cwd=tmp_path).stdout)
    assert document == tomllib.loads(EXAMPLE_CONFIG)
    assert document["node"]["key_types"] == ["rsa2048", "p256"]


def test_serve_agent_and_install_json(tmp_path: Path) -> None:
    data = tmp_path / "est"
    estkit("server", "init", data, "--json", cwd=tmp_path)
    root = x509.load_pem_x509_certificate((data / "ca" / "root.pem").read_bytes())
    server = subprocess.Popen(
        [*ESTKIT, "server", "serve", str(data), "--port", "0", "--json"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        started = time.monotonic()
        line = server.stdout.readline()  # one line, while the server keeps running
        assert time.monotonic() - started < SERVE_START_SECONDS
        ready = json.loads(line)
        assert server.poll() is None
        port = ready["port"]
        assert port > 0 and ready["url"] == f"https://localhost:{port}"
        assert ready["ca_fingerprint"] == f"sha256:{root.fingerprint(hashes.SHA256()).hex()}"
        assert ready["ca_certificates"] == str(data / "ca" / "cacerts.pem")
        assert ready["crl_url"] == f"https://localhost:{port}/crl"
        assert ready["consoles"] == [] and ready["labels"] == []
        # The document is true: a client finds the server and the root it names.
        cacerts = estkit(
            "client", "cacerts", "--server", ready["url"], "--trust", ready["ca_certificates"],
            "--json", cwd=tmp_path,
        )  # fmt: skip
        assert json.loads(cacerts.stdout)["current_root"] == ready["ca_fingerprint"]

        config = tmp_path / "node.toml"
        config.write_text(
            "[est]\ncheck_revocation = false\n"
            f'[server]\nhost = "localhost"\nport = {port}\n'
            '[node]\nhostnames = ["node1.example.com"]\nkey_types = ["p256"]\n'
            'manufacturer_certificate = "est/manufacturer/device.pem"\n'
            'manufacturer_key = "est/manufacturer/device.key"\noutput_dir = "certs"\n'
        )
        refused = estkit("nmos", "agent", "--config", config, "--json", cwd=tmp_path, expect=2)
        assert "--json needs --once" in refused.stderr
        step = json.loads(
            estkit("nmos", "agent", "--config", config, "--once", "--json", cwd=tmp_path).stdout
        )
        assert step["actions"] == ["root CA: initial", "ecdsa: provisioned"]
        assert step["errors"] == [] and step["stopped"] is False
        assert step["next_action"] == "renew the ecdsa certificate"
        assert (tmp_path / "certs" / "ecdsa-cert.pem").exists()

        installed = json.loads(
            estkit(
                "nmos", "install", "--config", config, "--ca", data / "ca" / "root.pem", "--json",
                cwd=tmp_path,
            ).stdout
        )  # fmt: skip
        assert len(installed["installed"]) == 1
        assert installed["installed"][0].startswith("root CA CN=estkit Root CA -> ")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert server.stdout is not None
    assert server.stdout.read() == ""  # nothing after the ready line went to stdout


@pytest.mark.parametrize("group", ["server", "client", "nmos"])
def test_group_help_lists_json_commands(group: str, tmp_path: Path) -> None:
    """The help table (answered without importing) and the commands agree, --json included."""
    text = estkit(group, "--help", cwd=tmp_path).stdout
    for name, command in _leaves():
        if name.startswith(f"{group} "):
            assert name.split(" ", 1)[1] in text, (name, text)
            assert any("--json" in getattr(p, "opts", ()) for p in command.params), name
