"""`estkit server serve --admin-port`: the console as operators start it, in a real process.

The other console tests start the console from Python; these run the CLI exactly as the README
says (one and two workers, and the ``[console]`` config table) and sign in over real HTTPS with
the printed token and with an operator certificate from `estkit server admin-cert`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from estkit.server.datadir import init_data_dir

SERVE_TIMEOUT_SECONDS = 60


@dataclass
class Served:
    process: subprocess.Popen[str]
    est_url: str
    console_url: str
    login_url: str
    banner: str


def _estkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "estkit.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=SERVE_TIMEOUT_SECONDS,
        env=dict(os.environ, COLUMNS="250"),
    )


def _start(data_dir: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    """`estkit server serve DATA_DIR --port 0 ARGS` and its banner, up to "Press Ctrl+C"."""
    process = subprocess.Popen(
        [sys.executable, "-m", "estkit.cli.main", "server", "serve", str(data_dir),
         "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="250"),
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if "Press Ctrl+C" in line:
            break
    return process, "".join(lines)


@contextmanager
def _serve(data_dir: Path, *args: str) -> Iterator[Served]:
    process, banner = _start(data_dir, *args)
    try:
        est = re.search(r"listening on (https://\S+)", banner)
        console = re.search(r"web console:\s+(https://\S+)", banner)
        if not (est and console and "console sign-in: estkit server console-login" in banner):
            process.kill()
            raise AssertionError("banner without the console: " + banner + process.stderr.read())
        # The banner never carries a sign-in token (it ends up in logs); the operator asks for
        # a single-use URL instead.
        assert "token=" not in banner
        made = _estkit("server", "console-login", str(data_dir), "--operator", "alice", "--json")
        assert made.returncode == 0, made.stdout + made.stderr
        login = json.loads(made.stdout)["url"]
        assert login.startswith(console.group(1) + "/login?token=")
        yield Served(process, est.group(1), console.group(1), login, banner)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            _, errors = process.communicate(timeout=SERVE_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        assert process.returncode == 0, errors
        assert "Traceback" not in errors


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return init_data_dir(tmp_path / "data", key_type="p256").data_dir


def _trust(data_dir: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(data_dir / "ca" / "cacerts.pem"))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_admin_port_serves_the_console_beside_the_est_server(data_dir: Path, workers: str) -> None:
    with _serve(data_dir, "--admin-port", "0", "--workers", workers) as served:
        # Both listeners are up, on different ports, with the server's certificate (DNS name).
        assert served.console_url.startswith("https://localhost:")
        assert served.console_url != served.est_url
        assert "estkit server admin-cert" in served.banner
        cacerts = httpx.get(served.est_url + "/.well-known/est/cacerts", verify=_trust(data_dir))
        assert cacerts.status_code == 200
        with httpx.Client(verify=_trust(data_dir), follow_redirects=True) as client:
            refused = client.get(served.console_url + "/requests")
            assert refused.status_code == 401
            assert client.get(served.login_url).status_code == 200
            page = client.get(served.console_url + "/requests")
            assert page.status_code == 200
            assert "<table" in page.text or "No request is waiting" in page.text
        console_port = int(served.console_url.rsplit(":", 1)[1])
    # After SIGTERM the console is gone too.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"https://127.0.0.1:{console_port}/", verify=False, timeout=5)


def test_operator_certificate_from_admin_cert_signs_in(data_dir: Path) -> None:
    issued = _estkit("server", "admin-cert", str(data_dir), "olga", "--json")
    assert issued.returncode == 0, issued.stderr
    paths = json.loads(issued.stdout)
    assert (Path(paths["key"]).stat().st_mode & 0o777) == 0o600
    with _serve(data_dir, "--admin-port", "0") as served:
        context = _trust(data_dir)
        context.load_cert_chain(paths["certificate"], paths["key"])
        with httpx.Client(verify=context) as client:
            page = client.get(served.console_url + "/ca")
        assert page.status_code == 200
        assert "olga" in page.text and "Certificate revocation list" in page.text
    again = _estkit("server", "admin-cert", str(data_dir), "olga")
    assert again.returncode != 0 and "already exists" in again.stdout + again.stderr
    assert "Traceback" not in again.stderr


def test_console_table_in_the_config_turns_it_on(data_dir: Path) -> None:
    config = data_dir / "estkit.toml"
    config.write_text(config.read_text() + "\n[console]\nenabled = true\nport = 0\n")
    with _serve(data_dir) as served, httpx.Client(verify=_trust(data_dir)) as client:
        assert client.get(served.console_url + "/").status_code == 401


def test_without_admin_port_there_is_no_console(data_dir: Path) -> None:
    process, banner = _start(data_dir)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=SERVE_TIMEOUT_SECONDS)
    assert "listening on https://" in banner
    assert "web console" not in banner and "token=" not in banner


def test_busy_admin_port_is_one_clear_error(data_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "estkit.cli.main", "server", "serve", str(data_dir),
             "--port", "0", "--admin-port", str(port)],
            capture_output=True,
            text=True,
            timeout=SERVE_TIMEOUT_SECONDS,
        )  # fmt: skip
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stdout + result.stderr
    assert "--admin-port" in result.stderr  # the library says admin_port, the CLI the flag
    assert "Traceback" not in result.stderr


def test_ca_page_shows_a_rollover_done_with_the_cli(data_dir: Path) -> None:
    with _serve(data_dir, "--admin-port", "0") as served:
        with httpx.Client(verify=_trust(data_dir), follow_redirects=True) as client:
            assert client.get(served.login_url).status_code == 200
            before = client.get(served.console_url + "/ca").text
            assert "no rollover" in before
            rolled = _estkit("server", "rollover", str(data_dir))
            assert rolled.returncode == 0, rolled.stderr
            # The running console reads the CA from disk on each page: no restart needed.
            after = client.get(served.console_url + "/ca").text
        assert "rollover in progress" in after
        for role in ("OldWithOld", "OldWithNew", "NewWithOld", "NewWithNew"):
            assert role in after, role
