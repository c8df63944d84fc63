"""The node checks its own certificate's status with the client library's check (C16, issue 17
item 4): OCSP via the certificate's AIA first, the CRL distribution point as fallback, against a
real estkit server over TLS. A revoked certificate is dropped and a new one enrolled with the
manufacturer certificate; an OCSP responder that is down or answers garbage leaves the decision
to the CRL; a forged answer from an impostor responder (plain HTTP, where an on-path attacker can
answer) is not believed either way."""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from estkit.ca.authority import CertificateAuthority
from estkit.cli.main import cli
from estkit.nmos.agent import RenewalAgent
from estkit.nmos.clock import ManualClock
from estkit.nmos.node import NmosNode
from estkit.protocol.certs import load_pem_certificates, sha256_fingerprint
from estkit.server.config import load_config, save_config

from .conftest import EventLog, config_for_server
from .dns_fixture import free_port

try:
    from tests.ocsp_impostor import Responder, forged_answer, lookalike_ca
except ImportError:  # pragma: no cover - depends on how pytest put tests/ on sys.path
    from ocsp_impostor import Responder, forged_answer, lookalike_ca  # type: ignore[no-redef]

# The schedule of these tests: a check every minute of simulated time (the default is an hour,
# longer than the server's one-hour OCSP answers are fresh on a simulated clock).
CHECK_SECONDS = 60


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
    fresh_server: Any, tmp_path: Path, events: EventLog, ocsp_impostor: Responder, failure: str
) -> None:
    server = fresh_server()
    if failure == "unreachable":
        base = f"http://127.0.0.1:{free_port()}"
    else:
        base = ocsp_impostor.url
        ocsp_impostor.answer = os.urandom(300) if failure == "garbage" else b""
        ocsp_impostor.status = 503 if failure == "http-503" else 200
    point_ocsp_at(server, base)
    agent, clock, cert_file = start_node(server, tmp_path, events)

    agent.run_once()
    good = agent.store.load_state()["revocation"]["results"]["ecdsa"]
    assert (good["status"], good["method"]) == ("good", "crl"), good
    assert any(p.startswith(f"OCSP {base}/ocsp") for p in good["problems"]), good
    if failure != "unreachable":
        assert ocsp_impostor.asked == ["/ocsp"]  # it was asked, and not believed

    revoked = revoke(server, cert_file)
    clock.advance(CHECK_SECONDS + 1)
    step = agent.run_once()
    assert "revoked, dropped: ecdsa" in step.actions, events.text()
    why = next(m for m in events.messages("warning") if m.startswith("removed the ecdsa"))
    assert f"serial {revoked}" in why
    assert f"(CRL https://localhost:{server.port}/crl)" in why
    assert installed_serial(cert_file) != revoked


@pytest.mark.parametrize("forgery", ["another-ca", "issuer-name"])
def test_forged_ocsp_answers_are_not_believed(
    fresh_server: Any, tmp_path: Path, events: EventLog, ocsp_impostor: Responder, forgery: str
) -> None:
    """A forged "revoked" must not take the node's certificate away; a forged "good" must not
    keep a revoked one: in both cases the (signed) CRL decides, and the problem says why."""
    server = fresh_server()
    point_ocsp_at(server, ocsp_impostor.url)
    agent, clock, cert_file = start_node(server, tmp_path, events)
    leaf = load_pem_certificates(cert_file.read_bytes())[0]
    issuer = CertificateAuthority.load(server.paths.data_dir / "ca").issuer_certificate
    mallory = lookalike_ca(issuer, tmp_path / "mallory")

    ocsp_impostor.answer = forged_answer(leaf, issuer, mallory, revoked=True, forgery=forgery)
    step = agent.run_once()
    kept = agent.store.load_state()["revocation"]["results"]["ecdsa"]
    assert ocsp_impostor.asked == ["/ocsp"]
    assert (kept["status"], kept["method"]) == ("good", "crl"), kept
    assert any("not signed by the issuer" in p for p in kept["problems"]), kept
    assert not any(a.startswith("revoked") for a in step.actions)
    assert installed_serial(cert_file) == format(leaf.serial_number, "x")

    revoked = revoke(server, cert_file)
    ocsp_impostor.answer = forged_answer(leaf, issuer, mallory, revoked=False, forgery=forgery)
    clock.advance(CHECK_SECONDS + 1)
    step = agent.run_once()
    assert ocsp_impostor.asked == ["/ocsp", "/ocsp"]
    assert "revoked, dropped: ecdsa" in step.actions, events.text()
    why = next(m for m in events.messages("warning") if m.startswith("removed the ecdsa"))
    assert f"serial {revoked}" in why and f"(CRL https://localhost:{server.port}/crl)" in why
