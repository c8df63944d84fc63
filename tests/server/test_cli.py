"""`estkit server …` commands as a user runs them (subprocesses, real files, real server)."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import dns.zone
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from estkit.protocol.certs import sha256_fingerprint
from estkit.server.config import load_config

from .test_approval import estkit_cli
from .witness import curl, openssl_csr, pkcs7_to_pem, run, tool

if TYPE_CHECKING:
    from conftest import EstkitTestServer

SERVE_TIMEOUT_SECONDS = 60
INIT_JSON_KEYS = (
    "ca_certificates",
    "manufacturer_ca",
    "device_certificate",
    "device_key",
    "config",
)


def test_init_json_and_refusal_to_overwrite(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = estkit_cli(
        "server", "init", data, "--hostname", "est.example.com", "--key-type", "rsa", "--json"
    )
    info = json.loads(result.stdout)
    for key in INIT_JSON_KEYS:
        assert Path(info[key]).is_absolute() and Path(info[key]).is_file(), key
    assert stat.S_IMODE(os.stat(info["device_key"]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(info["config"]).st_mode) == 0o600
    root = x509.load_pem_x509_certificate(Path(info["root_ca"]).read_bytes())
    assert isinstance(root.public_key(), rsa.RSAPublicKey)
    # Both TLS certificates carry the requested host name (openssl as witness).
    for pem in info["server_certificates"]:
        san = run([tool("openssl"), "x509", "-in", pem, "-noout", "-ext", "subjectAltName"])
        assert b"DNS:est.example.com" in san.stdout
    # The device certificate carries the serialNumber attribute (BCP-003-03 C1).
    device = x509.load_pem_x509_certificates(Path(info["device_certificate"]).read_bytes())[0]
    assert device.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)

    again = estkit_cli("server", "init", data, check=False)
    assert again.returncode != 0
    assert b"already holds a certificate authority" in again.stderr
    assert b"--force" in again.stderr and b"Traceback" not in again.stderr
    forced = json.loads(estkit_cli("server", "init", data, "--force", "--json").stdout)
    new_root = x509.load_pem_x509_certificate(Path(forced["root_ca"]).read_bytes())
    assert sha256_fingerprint(new_root) != sha256_fingerprint(root)


def test_dns_records_form_a_valid_zone(estkit_server: EstkitTestServer) -> None:
    result = estkit_cli(
        "server", "dns-records", estkit_server.data_dir, "--domain", "example.com",
        "--host", "est", "--address", "192.0.2.10", "--pri", "5", "--label", "manual",
    )  # fmt: skip
    text = result.stdout.decode()
    zone = dns.zone.from_text(
        "$ORIGIN example.com.\n@ 3600 IN SOA ns hostmaster 1 7200 900 1209600 300\n"
        "@ 3600 IN NS ns\nns 3600 IN A 192.0.2.1\n" + text,
        origin="example.com.",
    )
    ptr = zone.find_rdataset("_nmos-certs._tcp", "PTR")
    instance = next(iter(ptr)).target
    srv = next(iter(zone.find_rdataset(instance, "SRV")))
    assert srv.port == load_config(estkit_server.paths.config).port
    assert srv.target.derelativize(zone.origin).to_text() == "est.example.com."
    txt = next(iter(zone.find_rdataset(instance, "TXT")))
    assert txt.strings == (b"pri=5", b"api_selector=manual")  # D3, D4
    assert next(iter(zone.find_rdataset("est", "A"))).address == "192.0.2.10"  # D2

    unknown = estkit_cli(
        "server", "dns-records", estkit_server.data_dir, "--label", "nope", check=False
    )
    assert unknown.returncode != 0 and b"not configured" in unknown.stderr


def test_rollover_is_served_at_once(fresh_server, tmp_path: Path) -> None:
    server = fresh_server()
    before = pkcs7_to_pem(
        curl(
            server.est_url("cacerts"),
            cacert=server.paths.ca_certificates,
            content_type=None,
            workdir=tmp_path,
        ).body,
        tmp_path,
    )
    result = json.loads(estkit_cli("server", "rollover", server.data_dir, "--json").stdout)
    # The old root still validates the server's TLS certificate (it was issued under it).
    after = curl(server.est_url("cacerts"), cacert=before, content_type=None, workdir=tmp_path)
    certs = x509.load_pem_x509_certificates(pkcs7_to_pem(after.body, tmp_path).read_bytes())
    fingerprints = {sha256_fingerprint(cert) for cert in certs}
    assert result["new_root_fingerprint"] in fingerprints
    assert result["old_root_fingerprint"] in fingerprints
    assert len(certs) >= 4  # OldWithOld, NewWithNew, OldWithNew, NewWithOld (+ issuing CA)
    # Enrollment goes on, now under the new root.
    enrolled = curl(
        server.est_url("simpleenroll"),
        cacert=before,
        cert=server.paths.device_certificate,
        key=server.paths.device_key,
        data=openssl_csr(tmp_path).b64,
        workdir=tmp_path,
    )
    assert enrolled.status == 200, enrolled.text


def test_add_label_command(tmp_path: Path) -> None:
    data = tmp_path / "data"
    estkit_cli("server", "init", data)
    estkit_cli(
        "server", "add-label", data, "lab", "--set", "approval=manual",
        "--set", "retry_after_seconds=3", "--set", "key_families=['ec']",
    )  # fmt: skip
    profile = load_config(data).labels["lab"]
    assert profile.approval == "manual" and profile.retry_after_seconds == 3
    assert profile.key_families == frozenset({"ec"})
    bad = estkit_cli(
        "server", "add-label", data, "lab2", "--set", "approval=sometimes", check=False
    )
    assert bad.returncode != 0 and b"approval must be one of" in bad.stderr
    assert "lab2" not in load_config(data).labels


def _start_serve(args: list[str], cwd: Path) -> tuple[subprocess.Popen[str], str, list[str]]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="250")
    process = subprocess.Popen(
        [sys.executable, "-m", "estkit.cli.main", "server", "serve", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        match = re.search(r"listening on (https://\S+)", line)
        if match:
            return process, match.group(1), lines
    process.kill()
    raise AssertionError("no banner: " + "".join(lines) + process.stderr.read())


def test_serve_first_run_creates_demo_data_and_stops_cleanly(tmp_path: Path) -> None:
    process, url, lines = _start_serve(["--port", "0"], tmp_path)
    try:
        data = tmp_path / "estkit-data"
        assert "First run" in "".join(lines)
        assert (data / "estkit.toml").is_file()
        banner = []
        assert process.stdout is not None
        for line in process.stdout:
            banner.append(line)
            if "Press Ctrl+C" in line:
                break
        text = "".join(banner)
        root = x509.load_pem_x509_certificate((data / "ca" / "root.pem").read_bytes())
        assert f"CA fingerprint:  {sha256_fingerprint(root)}" in text  # one format: sha256:<hex>
        assert "curl --cacert" in text and "estkit client enroll" in text
        response = curl(
            f"{url}/.well-known/est/cacerts",
            cacert=data / "ca" / "cacerts.pem",
            content_type=None,
            workdir=tmp_path,
        )
        assert response.status == 200
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, errors = process.communicate(timeout=SERVE_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, errors
    assert "server stopped" in output
    assert "Traceback" not in errors


def test_serve_refuses_to_advertise_a_label_it_does_not_have(tmp_path: Path) -> None:
    data = tmp_path / "data"
    estkit_cli("server", "init", data)
    result = estkit_cli(
        "server", "serve", data, "--port", "0", "--advertise", "--advertise-label", "nosuch",
        check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert b"--advertise-label 'nosuch' is not a label of this server" in result.stderr
    assert b"estkit server add-label" in result.stderr and b"Traceback" not in result.stderr


def test_serve_refuses_a_directory_without_config(tmp_path: Path) -> None:
    result = estkit_cli("server", "serve", tmp_path / "missing", check=False)
    assert result.returncode != 0
    assert b"not an estkit server data directory" in result.stderr
    assert b"estkit server init" in result.stderr


def test_revoking_twice_changes_nothing_and_says_so(fresh_server, tmp_path: Path) -> None:
    """Issue 15: a second `server revoke` of the same serial keeps the first date and reason,
    leaves the CRL file alone, says so, and exits 0 (--json: already_revoked)."""
    server = fresh_server()
    csr = openssl_csr(tmp_path, cn="twice.example.com", sans=["twice.example.com"])
    enrolled = curl(
        server.est_url("simpleenroll"),
        cacert=server.paths.ca_certificates,
        cert=server.paths.device_certificate,
        key=server.paths.device_key,
        data=csr.b64,
        workdir=tmp_path,
    )
    assert enrolled.status == 200, enrolled.text
    (record,) = server.open_store().list_issued()
    first = estkit_cli(
        "server", "revoke", server.data_dir, record.serial, "--reason", "keyCompromise"
    )
    assert f"revoked {record.serial}" in first.stdout.decode()
    crl = server.data_dir / "crl.der"
    crl_bytes, crl_mtime = crl.read_bytes(), crl.stat().st_mtime_ns
    revoked_at = server.open_store().get_issued(record.serial).revoked_at

    again = estkit_cli("server", "revoke", server.data_dir, record.serial, "--reason", "superseded")
    text = again.stdout.decode()
    assert re.search(
        rf"{record.serial} was already revoked on \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC "
        r"\(reason keyCompromise\); nothing changed",
        text,
    ), text
    assert crl.read_bytes() == crl_bytes and crl.stat().st_mtime_ns == crl_mtime
    stored = server.open_store().get_issued(record.serial)
    assert (stored.revocation_reason, stored.revoked_at) == ("keyCompromise", revoked_at)

    as_json = json.loads(
        estkit_cli("server", "revoke", server.data_dir, record.serial, "--json").stdout
    )
    assert as_json["already_revoked"] is True
    assert as_json["revocation_reason"] == "keyCompromise"
    assert as_json["crl"] is None
