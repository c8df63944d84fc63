"""Small operator-facing outputs (issue 15, Medium/Low): one fingerprint format `sha256:<hex>`, the
banner's workflow hint with --cert/--key, and passwords piped in without GetPassWarning noise."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from cryptography import x509

from estkit.protocol.certs import sha256_fingerprint
from estkit.server.config import load_config, verify_basic_password
from estkit.server.datadir import init_data_dir

from .test_cli import SERVE_TIMEOUT_SECONDS, _start_serve


def test_banner_fingerprint_and_workflow_hint(tmp_path: Path) -> None:
    process, _url, _lines = _start_serve(["--port", "0"], tmp_path)
    try:
        banner = []
        assert process.stdout is not None
        for line in process.stdout:
            banner.append(line)
            if "Press Ctrl+C" in line:
                break
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=SERVE_TIMEOUT_SECONDS)
    text = "".join(banner)
    data = tmp_path / "estkit-data"
    root = x509.load_pem_x509_certificate((data / "ca" / "root.pem").read_bytes())
    assert f"CA fingerprint:  {sha256_fingerprint(root)}\n" in text
    assert "SHA-256 " not in text  # the colon-hex form is gone
    device = data / "manufacturer"
    workflow = next(line for line in banner if "estkit nmos workflow" in line)
    assert f"--cert {device / 'device.pem'} --key {device / 'device.key'}" in workflow


def _add_user(data_dir: Path, name: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "estkit.cli.main", "server", "add-user", str(data_dir), name],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_piped_password_without_getpass_warning(tmp_path: Path) -> None:
    paths = init_data_dir(tmp_path / "d", key_type="p256")
    added = _add_user(paths.data_dir, "bob", "s3cret\ns3cret\n")
    assert added.returncode == 0, added.stderr
    assert "GetPassWarning" not in added.stderr and "may be echoed" not in added.stderr
    assert verify_basic_password(load_config(paths.config).users["bob"].basic, "s3cret")
    assert "user bob added (HTTP Basic and Digest)" in added.stdout

    empty = _add_user(paths.data_dir, "carol", "")
    assert empty.returncode != 0
    assert "no password given: standard input was empty" in empty.stderr
    assert "carol" not in load_config(paths.config).users


def _estkit(*args: str | Path, columns: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "estkit.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": str(columns)},
    )


def test_certs_never_cut_serials_at_80_columns(tmp_path: Path) -> None:
    assert _estkit("demo", "--dir", tmp_path, columns=80).returncode == 0
    data = tmp_path / "server"
    listing = json.loads(_estkit("server", "certs", data, "--json", columns=80).stdout)
    serials = [record["serial"] for record in listing["certificates"]]
    assert len(serials) == 4 and all(len(serial) >= 30 for serial in serials)
    for columns in (80, 250):
        shown = _estkit("server", "certs", data, columns=columns)
        assert shown.returncode == 0, shown.stderr
        assert all(len(line) <= columns for line in shown.stdout.splitlines())
        for serial in serials:  # each whole, on one line
            assert serial in shown.stdout, (columns, shown.stdout)
        assert "…" not in shown.stdout
