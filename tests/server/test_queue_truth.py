"""A queue that tells the truth (issue 24, item 6): every queued request records how far the
requester was trusted, who it was (certificate subject, issuer, fingerprint; HTTP user; peer),
and what policy says; `server requests --json`, the 80-column table and the console show it; and
approving runs policy again, so an approval never signs what the server would refuse today."""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from cryptography import x509

from estkit.console import start_console
from estkit.protocol.certs import sha256_fingerprint
from estkit.server.config import add_label

from .witness import curl, openssl_csr, run, tool

if TYPE_CHECKING:
    from conftest import EstkitTestServer

QUEUE_LABEL = {"approval": "untrusted", "auth_mode": "rfc7030", "retry_after_seconds": 1}
MANUAL_LABEL = {"approval": "manual", "auth_mode": "rfc7030", "retry_after_seconds": 1}


def estkit(*args: str | Path, columns: int = 250) -> tuple[int, str]:
    """Run the CLI as a user would, in a terminal ``columns`` wide."""
    done = subprocess.run(
        [sys.executable, "-m", "estkit.cli.main", *[str(a) for a in args]],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, COLUMNS=str(columns)),
    )
    return done.returncode, done.stdout + done.stderr


def _stranger(tmp_path: Path) -> tuple[Path, Path, x509.Certificate]:
    """A self-signed client certificate made by openssl: nobody vouches for it."""
    cert, key = tmp_path / "stranger.pem", tmp_path / "stranger.key"
    run([
        tool("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", key, "-out", cert, "-days", "30",
        "-subj", "/O=Nowhere Ltd/CN=stranger.example",
        "-addext", "extendedKeyUsage=clientAuth",
    ])  # fmt: skip
    return cert, key, x509.load_pem_x509_certificate(cert.read_bytes())


def _requests_json(server: EstkitTestServer) -> list[dict]:
    code, out = estkit("server", "requests", str(server.data_dir), "--json")
    assert code == 0, out
    return json.loads(out)["requests"]


def _queue_stranger(server: EstkitTestServer, tmp_path: Path, name: str):
    cert, key, certificate = _stranger(tmp_path)
    csr = openssl_csr(tmp_path, cn=name, sans=[name])
    answer = curl(
        server.est_url("simpleenroll", "q"),
        cacert=server.paths.ca_certificates,
        cert=cert,
        key=key,
        data=csr.b64,
        workdir=tmp_path,
    )
    assert answer.status == 202, answer.text
    return certificate, csr, cert, key


def test_an_untrusted_stranger_is_shown_as_untrusted_with_its_certificate(
    fresh_server, tmp_path: Path
) -> None:
    server = fresh_server(users={"alice": "wonderland"}, q=QUEUE_LABEL, m=MANUAL_LABEL)
    certificate, _, _, _ = _queue_stranger(server, tmp_path, "stranger.example")
    by_user = curl(
        server.est_url("simpleenroll", "m"),
        cacert=server.paths.ca_certificates,
        data=openssl_csr(tmp_path, cn="user.example", sans=["user.example"]).b64,
        extra=["--basic", "--user", "alice:wonderland"],
        workdir=tmp_path,
    )
    assert by_user.status == 202, by_user.text

    listed = {entry["common_name"]: entry for entry in _requests_json(server)}
    stranger = listed["stranger.example"]
    assert stranger["client_trust"] == "untrusted"
    assert stranger["client_subject"] == certificate.subject.rfc4514_string()
    assert stranger["client_issuer"] == certificate.issuer.rfc4514_string()
    assert "CN=stranger.example" in stranger["client_subject"]
    assert stranger["client_fingerprint"] == sha256_fingerprint(certificate)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", stranger["client_fingerprint"])
    assert stranger["label"] == "q" and stranger["http_user"] is None
    assert stranger["peer_address"].startswith("127.0.0.1:")
    assert "not authenticated" in stranger["verdict"]
    assert stranger["policy_now"]["allowed"] is True
    assert "not trusted" in stranger["policy_now"]["reason"]

    user = listed["user.example"]
    assert (user["client_trust"], user["http_user"], user["client_fingerprint"]) == (
        "none",
        "alice",
        None,
    )
    assert "approval=manual" in user["verdict"]

    # The table: 80 columns, and the fingerprint wraps but is never cut.
    code, table = estkit("server", "requests", str(server.data_dir), columns=80)
    assert code == 0, table
    assert max(len(line) for line in table.splitlines()) <= 80
    flat = re.sub(r"[\s│┃|]", "", table)
    assert sha256_fingerprint(certificate) in flat
    for text in ("untrusted", "alice", "policynow", "allows"):
        assert text in flat.lower().replace(" ", "")


def test_the_console_pending_page_shows_trust_and_the_whole_fingerprint(
    fresh_server, tmp_path: Path
) -> None:
    server = fresh_server(q=QUEUE_LABEL)
    certificate, _, _, _ = _queue_stranger(server, tmp_path, "console-stranger.example")
    with start_console(server.data_dir) as console:
        trust = ssl.create_default_context(cafile=str(server.paths.ca_certificates))
        with httpx.Client(verify=trust, follow_redirects=True, timeout=30) as client:
            assert client.get(console.new_login_url("olga")).status_code == 200
            page = client.get(console.url + "/requests").text
    row = page[page.index('data-cn="console-stranger.example"') :]
    row = row[: row.index("</tr>")]
    assert "untrusted" in row
    assert sha256_fingerprint(certificate) in row
    assert "CN=stranger.example" in row
    assert "Policy now" in page and "allows" in row


def test_approving_runs_policy_again(fresh_server, tmp_path: Path) -> None:
    server = fresh_server(q=QUEUE_LABEL)
    _, csr, cert, key = _queue_stranger(server, tmp_path, "later.example")
    (queued,) = [r for r in _requests_json(server) if r["common_name"] == "later.example"]
    # The operator tightens the label while the request waits: EC keys are no longer allowed.
    add_label(server.paths.config, "q", key_families=["rsa"], **QUEUE_LABEL)
    (now,) = [r for r in _requests_json(server) if r["id"] == queued["id"]]
    assert now["policy_now"]["allowed"] is False
    code, out = estkit("server", "approve", str(server.data_dir), str(queued["id"]))
    assert code != 0
    assert f"request {queued['id']} was not approved: policy would refuse it now" in out
    assert "CSR is refused by the policy of label 'q'" in out
    store = server.open_store()
    assert store.get_request(queued["id"]).status == "pending"
    assert any(
        e.fields.get("request_id") == queued["id"] for e in store.list_events("approval-refused")
    )
    # Put the label back: the same approval now goes through and the client gets its certificate.
    add_label(server.paths.config, "q", **QUEUE_LABEL)
    code, out = estkit("server", "approve", str(server.data_dir), str(queued["id"]))
    assert code == 0, out
    issued = curl(
        server.est_url("simpleenroll", "q"),
        cacert=server.paths.ca_certificates,
        cert=cert,
        key=key,
        data=csr.b64,
        workdir=tmp_path,
    )
    assert issued.status == 200, issued.text


def test_approving_a_request_whose_client_certificate_was_revoked_meanwhile_is_refused(
    fresh_server, tmp_path: Path
) -> None:
    server = fresh_server(auto={}, m=MANUAL_LABEL)
    paths = server.paths
    # A node certificate from this CA, used as the client certificate of a queued request.
    node_csr = openssl_csr(tmp_path, cn="node.example", sans=["node.example"])
    enrolled = curl(
        server.est_url("simpleenroll", "auto"),
        cacert=paths.ca_certificates,
        cert=paths.device_certificate,
        key=paths.device_key,
        data=node_csr.b64,
        workdir=tmp_path,
    )
    assert enrolled.status == 200, enrolled.text
    (record,) = server.open_store().list_issued(label="auto")
    node_pem = tmp_path / "node.pem"
    node_pem.write_text(record.certificate_pem)
    queued = curl(
        server.est_url("simpleenroll", "m"),
        cacert=paths.ca_certificates,
        cert=node_pem,
        key=node_csr.key,
        data=openssl_csr(tmp_path, cn="node.example", sans=["node.example"]).b64,
        workdir=tmp_path,
    )
    assert queued.status == 202, queued.text
    (request,) = [r for r in _requests_json(server) if r["label"] == "m"]
    assert request["client_trust"] == "trusted"
    code, out = estkit("server", "revoke", str(server.data_dir), record.serial)
    assert code == 0, out
    code, out = estkit("server", "approve", str(server.data_dir), str(request["id"]))
    assert code != 0
    assert "the client certificate is revoked now" in out
    assert server.open_store().get_request(request["id"]).status == "pending"


def test_the_console_refuses_to_approve_what_policy_refuses_now(
    fresh_server, tmp_path: Path
) -> None:
    server = fresh_server(q=QUEUE_LABEL)
    _queue_stranger(server, tmp_path, "console-later.example")
    (queued,) = [r for r in _requests_json(server) if r["common_name"] == "console-later.example"]
    add_label(server.paths.config, "q", key_families=["rsa"], **QUEUE_LABEL)
    with start_console(server.data_dir) as console:
        trust = ssl.create_default_context(cafile=str(server.paths.ca_certificates))
        with httpx.Client(verify=trust, follow_redirects=True, timeout=30) as client:
            assert client.get(console.new_login_url("olga")).status_code == 200
            page = client.get(console.url + "/requests").text
            assert "refuses" in page
            token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page).group(1)
            refused = client.post(
                f"{console.url}/requests/{queued['id']}/approve",
                data={"csrf_token": token},
                headers={"Origin": console.url},
            )
    assert refused.status_code == 409
    assert "policy would refuse it now" in refused.text
    assert server.open_store().get_request(queued["id"]).status == "pending"
