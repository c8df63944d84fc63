"""A newcomer's walkthrough (issue 15, item 9): ten operator tasks from a fresh
`estkit server init`, each through the real CLI (`estkit` subprocesses) against a real server
listening on loopback, each checked against the output the README and `--help` promise.

1. add a label (manual approval)         6. revoke (and revoke again: nothing changes)
2. trust a second manufacturer (openssl) 7. roll the CA over
3. enroll under manual approval          8. renew an NMOS node after the rollover
4. approve                               9. print the DNS-SD records
5. collect                              10. run the conformance suite against the server

Peers besides estkit: `openssl` makes the second manufacturer's CA and device certificate, reads
the CRL, and verifies the node's renewed certificate from the new root alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

# Starting the server (key loading, store migration) on the shared 2-core machine.
SERVE_START_SECONDS = 60
# One CLI command; the conformance suite is the longest (about 1 s alone, more under load).
COMMAND_TIMEOUT_SECONDS = 180

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

ESTKIT = [sys.executable, "-m", "estkit.cli.main"]
FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")


def estkit(
    *args: str | Path, cwd: Path, expect: int = 0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [*ESTKIT, *(str(arg) for arg in args)],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )
    shown = f"estkit {' '.join(map(str, args))}\n{completed.stdout}\n{completed.stderr}"
    assert completed.returncode == expect, shown
    assert "Traceback" not in completed.stderr, shown
    return completed


def openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(
        ["openssl", *(str(arg) for arg in args)], cwd=cwd, check=True, capture_output=True
    )


def fingerprint(path: Path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return f"sha256:{cert.fingerprint(hashes.SHA256()).hex()}"


def second_manufacturer(where: Path) -> tuple[Path, Path, Path]:
    """Vendor B's CA and one of its devices, made by openssl (not by estkit)."""
    ca, ca_key = where / "vendor-b-ca.pem", where / "vendor-b-ca.key"
    device, device_key = where / "vendor-b-device.pem", where / "vendor-b-device.key"
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    openssl(
        "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "30",
        "-subj", "/CN=Vendor B Manufacturer CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=where,
    )  # fmt: skip
    csr = where / "vendor-b-device.csr"
    openssl("req", "-new", *ec, "-keyout", device_key, "-out", csr,
            "-subj", "/CN=vendor-b-device-7", cwd=where)  # fmt: skip
    extensions = where / "device.ext"
    extensions.write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n"
    )
    openssl(
        "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", device, "-days", "10", "-extfile", extensions,
        cwd=where,
    )  # fmt: skip
    return ca, device, device_key


def _serve(work: Path, data: Path) -> tuple[subprocess.Popen[str], int]:
    server = subprocess.Popen(
        [*ESTKIT, "server", "serve", str(data), "--host", "127.0.0.1", "--port", "0"],
        cwd=work,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + SERVE_START_SECONDS
    banner = ""
    while time.monotonic() < deadline:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line and server.poll() is not None:
            break
        banner += line
        if "Press Ctrl+C" in line:
            break
    found = re.search(r"listening on https://localhost:(\d+)", banner)
    if found is None:
        server.kill()
        pytest.fail(f"the server did not start:\n{banner}")
    # The banner's promises (README: URL, CA fingerprint, ready-to-paste commands).
    assert FINGERPRINT.search(banner), banner
    assert "estkit client enroll --server https://localhost:" in banner
    return server, int(found.group(1))


def test_newcomer_walkthrough(tmp_path: Path) -> None:
    work = tmp_path
    data = work / "est"

    # 0. A fresh data directory.
    init = estkit("server", "init", data, "--hostname", "localhost", cwd=work)
    assert f"Created an estkit server data directory in {data}" in init.stdout
    old_root = data / "ca" / "root.pem"
    assert f"CA fingerprint: {fingerprint(old_root)}" in init.stdout
    shutil.copy(old_root, work / "old-root.pem")

    # 1. A label whose requests wait for an operator (README: add-label DIR manual ...).
    label = estkit("server", "add-label", data, "manual", "--approval", "manual", cwd=work)
    assert "label manual added: clients use /.well-known/est/manual/..." in label.stdout
    assert re.search(r"^\s+approval\s+manual$", label.stdout, re.M), label.stdout
    assert "Profile(" not in label.stdout

    # 2. Trust a second manufacturer: its CA, made by openssl.
    vendor_ca, vendor_device, vendor_key = second_manufacturer(work)
    trust = estkit("server", "trust", data, vendor_ca, cwd=work)
    assert (
        "trusting device certificates issued under CN=Vendor B Manufacturer CA "
        f"({fingerprint(vendor_ca)})" in trust.stdout
    )
    listed = json.loads(estkit("server", "trust", data, "--list", "--json", cwd=work).stdout)
    assert [fingerprint(vendor_ca)] in [r["fingerprints"] for r in listed["trusted_client_roots"]]

    server, port = _serve(work, data)
    try:
        url = f"https://localhost:{port}"
        # 3. A vendor-B device enrolls on the manual label: the request waits, key kept.
        enroll = [
            "client", "enroll", "--server", url, "--label", "manual",
            "--trust", data / "ca" / "cacerts.pem",
            "--cert", vendor_device, "--key", vendor_key,
            "--key-type", "p256", "--cn", "node9.example.com", "--san", "node9.example.com",
            "--max-attempts", "1", "--out-cert", "m1.pem", "--out-key", "m1.key",
        ]  # fmt: skip
        pending = estkit(*enroll, cwd=work, expect=1)
        assert "still pending approval after 1 attempt(s)" in pending.stderr
        assert "run this same command again to collect the certificate" in pending.stderr
        state = work / "m1.key.pending.json"
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        assert not (work / "m1.pem").exists()
        queued = json.loads(estkit("server", "requests", data, "--json", cwd=work).stdout)[
            "requests"
        ]
        assert [(r["id"], r["label"], r["client_issuer"]) for r in queued] == [
            (1, "manual", "CN=Vendor B Manufacturer CA")
        ]

        # 4. Approve it.
        approve = estkit("server", "approve", data, "1", cwd=work)
        assert "request 1 approved: node9.example.com" in approve.stdout
        assert "the client gets its certificate when it repeats the request" in approve.stdout

        # 5. The same command collects the certificate for the same key; one request in all.
        collect = estkit(*enroll, cwd=work)
        assert "certificate and chain written to m1.pem" in collect.stdout
        assert "private key written to m1.key (mode 0600)" in collect.stdout
        issued = x509.load_pem_x509_certificates((work / "m1.pem").read_bytes())[0]
        all_requests = json.loads(
            estkit("server", "requests", data, "--status", "all", "--json", cwd=work).stdout
        )["requests"]
        assert [(r["id"], r["status"]) for r in all_requests] == [(1, "issued")]
        serial = format(issued.serial_number, "x")
        assert all_requests[0]["serial"] == serial
        assert not state.exists()

        # 6. Revoke it; the CRL (read by openssl) lists it; revoking again changes nothing.
        revoke = estkit("server", "revoke", data, serial, "--reason", "keyCompromise", cwd=work)
        assert f"revoked {serial} (CN=node9.example.com), reason keyCompromise" in revoke.stdout
        crl_text = subprocess.run(
            ["openssl", "crl", "-inform", "DER", "-in", data / "crl.der", "-noout", "-text"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        hex_serial = f"{issued.serial_number:X}"
        hex_serial = hex_serial.zfill(len(hex_serial) + len(hex_serial) % 2)  # openssl's form
        assert f"Serial Number: {hex_serial}" in crl_text, crl_text
        crl_before = (data / "crl.der").read_bytes()
        again = estkit("server", "revoke", data, serial, "--reason", "superseded", cwd=work)
        assert f"{serial} was already revoked on " in again.stdout
        assert "(reason keyCompromise); nothing changed" in again.stdout
        assert (data / "crl.der").read_bytes() == crl_before

        # 8a. An NMOS node provisioned under the old root (agent, BCP-003-03).
        node = work / "node"
        node.mkdir()
        config = node / "node.toml"
        config.write_text(
            "[est]\nmin_renewal_interval_seconds = 0\ncheck_revocation = false\n"
            f'[server]\nhost = "localhost"\nport = {port}\n'
            '[node]\nhostnames = ["node1.example.com"]\nkey_types = ["rsa2048", "p256"]\n'
            'manufacturer_certificate = "../est/manufacturer/device.pem"\n'
            'manufacturer_key = "../est/manufacturer/device.key"\noutput_dir = "certs"\n'
        )
        first = estkit("nmos", "agent", "--config", config, "--once", cwd=work)
        assert "done: rsa: provisioned" in first.stdout
        assert "done: ecdsa: provisioned" in first.stdout
        before = json.loads(estkit("nmos", "status", "--config", config, "--json", cwd=work).stdout)
        assert before["root_ca"]["fingerprint"] == fingerprint(old_root)

        # 7. Roll the CA over; the running server switches without a restart.
        rolled = estkit("server", "rollover", data, cwd=work)
        new_root = data / "ca" / "generations" / "g2" / "root.pem"
        assert "rolled the root CA over to generation g2" in rolled.stdout
        assert f"old root: {fingerprint(work / 'old-root.pem')}" in rolled.stdout
        assert f"new root: {fingerprint(new_root)}" in rolled.stdout
        assert fingerprint(new_root) != fingerprint(work / "old-root.pem")

        # 8b. The node, holding the old root only, adopts the new one through NewWithOld and
        # moves its certificates to the new issuer; the new root alone now verifies them.
        time.sleep(1.1)  # the server's TLS reloader looks at the files at most once a second
        second = estkit("nmos", "agent", "--config", config, "--once", cwd=work)
        assert "done: root CA: rollover" in second.stdout
        assert "vouched for by the installed root through a NewWithOld certificate" in (
            second.stdout + second.stderr
        )
        assert "done: rsa: renewed" in second.stdout
        assert "done: ecdsa: renewed" in second.stdout
        after = json.loads(estkit("nmos", "status", "--config", config, "--json", cwd=work).stdout)
        assert after["root_ca"]["fingerprint"] == fingerprint(new_root)
        assert after["root_ca"]["anchors"] == 2  # the old root stays trusted in the overlap
        for entry in after["certificates"]:
            assert entry["issuer"] == "CN=estkit Issuing CA G2", entry
            verified = subprocess.run(
                ["openssl", "verify", "-CAfile", new_root,
                 "-untrusted", node / "certs" / "ca-chain.pem", entry["certificate"]],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            assert verified.returncode == 0, verified.stdout + verified.stderr

        # 9. DNS-SD records for a zone, host given as an FQDN.
        dns = estkit(
            "server", "dns-records", data, "--domain", "example.com",
            "--host", "est.example.com", "--port", str(port), "--address", "192.0.2.10",
            cwd=work,
        ).stdout  # fmt: skip
        assert (
            f"estkit._nmos-certs._tcp.example.com. 3600 IN SRV 0 0 {port} est.example.com." in dns
        )
        assert "est.example.com. 3600 IN A 192.0.2.10" in dns
        assert "example.com.example.com" not in dns

        # 10. The conformance suite against this server, trusting the new root only.
        suite = estkit(
            "test-server", "--ip", "localhost", "--port", str(port), "--cacert", new_root,
            "--cert", data / "manufacturer" / "device.pem",
            "--key", data / "manufacturer" / "device.key", "--json", "report.json",
            cwd=work,
        )  # fmt: skip
        assert re.search(r"\d+ cases in .*: \d+ pass, 0 fail, .*PASSED", suite.stdout), suite.stdout
        report = json.loads((work / "report.json").read_text())
        assert report["summary"]["fail"] == 0, report["summary"]
    finally:
        server.terminate()
        server.wait(timeout=30)
