"""The node checks its own certificate's status with the client library's check (C16, issue 17
item 4): OCSP via the certificate's AIA first, the CRL distribution point as fallback, against a
real estkit server over TLS. A revoked certificate is dropped and a new one enrolled with the
manufacturer certificate; an OCSP responder that is down or answers garbage leaves the decision
to the CRL; a forged answer from an impostor responder (plain HTTP, where an on-path attacker can
answer) is not believed either way."""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from estkit.ca.authority import CertificateAuthority
from estkit.ca.ocsp import issue_responder_certificate
from estkit.cli.main import cli
from estkit.nmos.agent import RenewalAgent
from estkit.nmos.clock import ManualClock
from estkit.nmos.node import NmosNode
from estkit.protocol.certs import load_pem_certificates, sha256_fingerprint
from estkit.server.config import load_config, save_config

from .conftest import EventLog, config_for_server
from .dns_fixture import free_port

# The schedule of these tests: a check every minute of simulated time (the default is an hour,
# longer than the server's one-hour OCSP answers are fresh on a simulated clock).
CHECK_SECONDS = 60


class Responder:
    """A plain-HTTP OCSP "responder" on 127.0.0.1 answering whatever ``answer`` holds (or
    ``status`` without a body), recording the paths asked."""

    def __init__(self) -> None:
        self.answer = b""
        self.status = 200
        self.asked: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                outer.asked.append(self.path)
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/ocsp-response")
                self.send_header("Content-Length", str(len(outer.answer)))
                self.end_headers()
                self.wfile.write(outer.answer)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def responder() -> Iterator[Responder]:
    server = Responder()
    yield server
    server.stop()


def point_ocsp_at(server: Any, base: str) -> None:
    """Certificates issued from now on name ``base``/ocsp (AIA) and this server's /crl (CDP)."""
    config = load_config(server.paths.config)
    save_config(
        dataclasses.replace(
            config, public_url=base, crl_url=f"https://localhost:{server.port}/crl"
        ),
        server.paths.config,
    )


def start_node(
    server: Any, tmp_path: Path, events: EventLog
) -> tuple[RenewalAgent, ManualClock, Path]:
    clock = ManualClock(datetime.now(UTC))
    config = config_for_server(
        server, tmp_path / "node", key_types=("p256",), revocation_check_seconds=CHECK_SECONDS
    )
    agent = RenewalAgent(NmosNode(config, clock=clock, on_event=events))
    agent.run_once()  # enrolls (nothing to check yet)
    return agent, clock, tmp_path / "node" / "ecdsa-cert.pem"


def revoke(server: Any, cert_file: Path) -> str:
    serial = format(load_pem_certificates(cert_file.read_bytes())[0].serial_number, "x")
    result = CliRunner().invoke(
        cli, ["server", "revoke", str(server.data_dir), serial, "--reason", "keyCompromise"]
    )
    assert result.exit_code == 0, result.output
    return serial


def installed_serial(cert_file: Path) -> str:
    return format(load_pem_certificates(cert_file.read_bytes())[0].serial_number, "x")


def nmos_status(agent: RenewalAgent, tmp_path: Path, *extra: str) -> Any:
    from estkit.nmos.config import save_node_config

    path = tmp_path / "node.toml"
    save_node_config(agent.config, path)
    result = CliRunner().invoke(
        cli, ["nmos", "status", "--config", str(path), *extra], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if "--json" in extra else result.stdout


def test_revoked_certificate_is_found_by_ocsp_and_replaced_via_the_manufacturer_path(
    fresh_server: Any, tmp_path: Path, events: EventLog
) -> None:
    server = fresh_server()
    agent, clock, cert_file = start_node(server, tmp_path, events)
    ocsp_url = f"https://localhost:{server.port}/ocsp"

    # The first step of a (re)started agent checks at once, whatever the schedule says.
    agent.run_once()
    first = agent.store.load_state()["revocation"]["results"]["ecdsa"]
    assert (first["status"], first["method"], first["source"]) == ("good", "ocsp", ocsp_url)

    revoked = revoke(server, cert_file)
    clock.advance(CHECK_SECONDS + 1)
    step = agent.run_once()
    assert "revoked, dropped: ecdsa" in step.actions, events.text()
    assert "ecdsa: provisioned" in step.actions
    why = next(m for m in events.messages("warning") if m.startswith("removed the ecdsa"))
    assert f"serial {revoked} revoked at" in why and "reason keyCompromise" in why
    assert f"(OCSP {ocsp_url})" in why  # found by OCSP, not by the CRL fallback
    assert "manufacturer certificate (C16)" in why
    # The replacement came through the manufacturer path: /simpleenroll presenting the device
    # certificate (not a renewal with the revoked one).
    replacement = installed_serial(cert_file)
    assert replacement != revoked
    record = server.open_store().get_issued(replacement)
    device = load_pem_certificates(server.paths.device_certificate.read_bytes())[0]
    assert record.operation == "simpleenroll"
    assert record.requester == sha256_fingerprint(device), record.requester

    # `estkit nmos status` says what was found, how and when (the JSON and the text).
    document = nmos_status(agent, tmp_path, "--json")
    revocation = document["revocation"]
    assert revocation["checked_at"] == clock.now().isoformat()
    assert revocation["results"]["ecdsa"]["status"] == "revoked"
    assert revocation["results"]["ecdsa"]["method"] == "ocsp"
    assert revocation["results"]["ecdsa"]["serial"] == revoked
    assert document["certificates"][0]["revocation"] is None  # the new one: not checked yet

    # A restarted agent checks the new certificate on start: good, by OCSP.
    restarted = RenewalAgent(NmosNode(agent.config, clock=clock, on_event=events))
    restarted.run_once()
    entry = nmos_status(restarted, tmp_path, "--json")["certificates"][0]
    assert entry["revocation"] == {
        "status": "good",
        "method": "ocsp",
        "source": ocsp_url,
        "checked_at": clock.now().isoformat(),
    }
    text = nmos_status(restarted, tmp_path)
    assert f"good (ocsp) at {clock.now().isoformat()}" in text.replace("\n", "")


@pytest.mark.parametrize("failure", ["unreachable", "garbage", "http-503"])
def test_when_ocsp_fails_the_crl_decides(
    fresh_server: Any, tmp_path: Path, events: EventLog, responder: Responder, failure: str
) -> None:
    server = fresh_server()
    if failure == "unreachable":
        base = f"http://127.0.0.1:{free_port()}"
    else:
        base = responder.url
        responder.answer = os.urandom(300) if failure == "garbage" else b""
        responder.status = 503 if failure == "http-503" else 200
    point_ocsp_at(server, base)
    agent, clock, cert_file = start_node(server, tmp_path, events)

    agent.run_once()
    good = agent.store.load_state()["revocation"]["results"]["ecdsa"]
    assert (good["status"], good["method"]) == ("good", "crl"), good
    assert any(p.startswith(f"OCSP {base}/ocsp") for p in good["problems"]), good
    if failure != "unreachable":
        assert responder.asked == ["/ocsp"]  # it was asked, and not believed

    revoked = revoke(server, cert_file)
    clock.advance(CHECK_SECONDS + 1)
    step = agent.run_once()
    assert "revoked, dropped: ecdsa" in step.actions, events.text()
    why = next(m for m in events.messages("warning") if m.startswith("removed the ecdsa"))
    assert f"serial {revoked}" in why
    assert f"(CRL https://localhost:{server.port}/crl)" in why
    assert installed_serial(cert_file) != revoked


def lookalike_ca(issuer: x509.Certificate, directory: Path) -> CertificateAuthority:
    """An impostor CA whose issuing certificate has the very subject of ``issuer``."""

    def name(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str | None:
        values = cert.subject.get_attributes_for_oid(oid)
        return str(values[0].value) if values else None

    mallory = CertificateAuthority.create(
        directory,
        key_type="p256",
        issuing_common_name=name(issuer, NameOID.COMMON_NAME),
        organization=name(issuer, NameOID.ORGANIZATION_NAME),
    )
    assert mallory.issuer_certificate.subject == issuer.subject
    return mallory


def forged_answer(
    leaf: x509.Certificate,
    issuer: x509.Certificate,
    mallory: CertificateAuthority,
    *,
    revoked: bool,
    forgery: str,
) -> bytes:
    """A well-formed OCSP answer about ``leaf`` that its issuer did not sign: by a responder an
    impostor CA (``mallory``, named like the issuer) delegated to ("another-ca"), or by that
    impostor CA itself under the issuer's name ("issuer-name")."""
    now = datetime.now(UTC)
    builder = ocsp.OCSPResponseBuilder().add_response(
        leaf,
        issuer,
        hashes.SHA1(),
        ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD,
        now - timedelta(minutes=1),
        now + timedelta(hours=1),
        now - timedelta(minutes=1) if revoked else None,
        x509.ReasonFlags.key_compromise if revoked else None,
    )
    mallory_key: Any = mallory.issuer_key_for(mallory.generation)
    if forgery == "another-ca":
        responder = issue_responder_certificate(mallory.issuer_certificate, mallory_key)
        builder = builder.responder_id(
            ocsp.OCSPResponderEncoding.HASH, responder.certificate
        ).certificates([responder.certificate])
        mallory_key = responder.key
    else:
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.NAME, mallory.issuer_certificate)
    answer = builder.sign(mallory_key, hashes.SHA256())
    return answer.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("forgery", ["another-ca", "issuer-name"])
def test_forged_ocsp_answers_are_not_believed(
    fresh_server: Any, tmp_path: Path, events: EventLog, responder: Responder, forgery: str
) -> None:
    """A forged "revoked" must not take the node's certificate away; a forged "good" must not
    keep a revoked one: in both cases the (signed) CRL decides, and the problem says why."""
    server = fresh_server()
    point_ocsp_at(server, responder.url)
    agent, clock, cert_file = start_node(server, tmp_path, events)
    leaf = load_pem_certificates(cert_file.read_bytes())[0]
    issuer = CertificateAuthority.load(server.paths.data_dir / "ca").issuer_certificate
    mallory = lookalike_ca(issuer, tmp_path / "mallory")

    responder.answer = forged_answer(leaf, issuer, mallory, revoked=True, forgery=forgery)
    step = agent.run_once()
    kept = agent.store.load_state()["revocation"]["results"]["ecdsa"]
    assert responder.asked == ["/ocsp"]
    assert (kept["status"], kept["method"]) == ("good", "crl"), kept
    assert any("not signed by the issuer" in p for p in kept["problems"]), kept
    assert not any(a.startswith("revoked") for a in step.actions)
    assert installed_serial(cert_file) == format(leaf.serial_number, "x")

    revoked = revoke(server, cert_file)
    responder.answer = forged_answer(leaf, issuer, mallory, revoked=False, forgery=forgery)
    clock.advance(CHECK_SECONDS + 1)
    step = agent.run_once()
    assert responder.asked == ["/ocsp", "/ocsp"]
    assert "revoked, dropped: ecdsa" in step.actions, events.text()
    why = next(m for m in events.messages("warning") if m.startswith("removed the ecdsa"))
    assert f"serial {revoked}" in why and f"(CRL https://localhost:{server.port}/crl)" in why
