"""The console's TLS after a CA rollover (issue 15): like the EST listener, the running console
presents the server certificates issued under the new root, with NewWithOld, from its next
handshake on, without a restart. openssl s_client is the peer that judges the chain."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from estkit.cli.main import cli
from estkit.server import tls as server_tls

from .helpers import ConsoleEnv, start_console_env

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture
def console_env_fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ConsoleEnv]:
    # Look at the certificate files on every handshake instead of at most once a second.
    monkeypatch.setattr(server_tls, "RELOAD_CHECK_SECONDS", 0.0)
    env = start_console_env(tmp_path / "data")
    try:
        yield env
    finally:
        env.stop()


def _handshake(port: int, trust: Path) -> str:
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
         "-CAfile", str(trust), "-verify_return_error", "-showcerts"],
        input=b"Q\n", capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    return (result.stdout + result.stderr).decode(errors="replace")


def test_console_presents_the_new_chain_after_rollover_without_restart(
    console_env_fresh: ConsoleEnv, tmp_path: Path
) -> None:
    env = console_env_fresh
    port = env.console.port
    old_root = tmp_path / "old-root.pem"
    shutil.copy(env.paths.root_ca, old_root)
    before = _handshake(port, old_root)
    assert "Verify return code: 0 (ok)" in before, before
    assert "Issuing CA G2" not in before

    result = CliRunner().invoke(cli, ["server", "rollover", str(env.data_dir)])
    assert result.exit_code == 0, result.output
    new_root = env.data_dir / "ca" / "generations" / "g2" / "root.pem"

    # A browser or script given only the new root now verifies the console ...
    after_new = _handshake(port, new_root)
    assert "Verify return code: 0 (ok)" in after_new, after_new
    assert "Issuing CA G2" in after_new
    # ... and one holding only the old root still does, through NewWithOld.
    after_old = _handshake(port, old_root)
    assert "Verify return code: 0 (ok)" in after_old, after_old
