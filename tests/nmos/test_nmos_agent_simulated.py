"""The renewal agent over months and years of simulated time (C5, C12-C16).

A real estkit CA signs at the simulated time (see fake_est.py); the node, its files and the
agent's state file are all real. A year of 90-day certificates runs in well under a second.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from estkit.ca.crl import RevokedEntry
from estkit.ca.profiles import Profile
from estkit.nmos.agent import RenewalAgent, node_status
from estkit.nmos.clock import ManualClock
from estkit.nmos.config import NodeConfig, ServerSettings
from estkit.nmos.node import NmosNode
from estkit.protocol.certs import load_pem_certificates, sha256_fingerprint

from .conftest import EventLog
from .fake_est import CRL_URL, CaBackedConnector

DAY = timedelta(days=1)


def make_node(
    tmp_path: Path,
    clock: ManualClock,
    connector: CaBackedConnector,
    events: EventLog | None = None,
    **changes: object,
) -> NmosNode:
    settings: dict[str, object] = {
        "output_dir": tmp_path / "node",
        "hostnames": ("node1.nmos.test",),
        "key_types": ("p256",),
        "server": ServerSettings(host="est.nmos.test", port=443),
        **changes,
    }
    config = NodeConfig(**settings)  # type: ignore[arg-type]
    return NmosNode(config, clock=clock, connector=connector, on_event=events)


def current(node: NmosNode, slot: str = "ecdsa") -> tuple[int, datetime, datetime]:
    cert = node.installed(slot)
    assert cert is not None
    c = cert.certificate
    return c.serial_number, c.not_valid_before_utc, c.not_valid_after_utc


@pytest.fixture
def ca(tmp_path: Path, manual_clock: ManualClock) -> CaBackedConnector:
    return CaBackedConnector.create(tmp_path / "ca", manual_clock)


def test_a_year_of_renewals_at_80_percent_in_milliseconds_c13(
    tmp_path: Path, manual_clock: ManualClock, ca: CaBackedConnector
) -> None:
    # Revocation checks (hourly) have their own test; here they would only add 8760 wake-ups.
    node = make_node(
        tmp_path, manual_clock, ca, key_types=("rsa2048", "p256"), check_revocation=False
    )
    agent = RenewalAgent(node)
    start = manual_clock.now()
    wakeups = 0
    while manual_clock.now() < start + 365 * DAY:
        agent.run(max_steps=1)
        wakeups += 1
        assert wakeups < 100, "the agent woke up far more often than renewals need"
        step_next = datetime.fromisoformat(node.store.load_state()["next_action_at"])
        manual_clock.set(max(step_next, manual_clock.now()))
    operations = [(c.operation, c.at) for c in ca.calls if c.operation.startswith("simple")]
    enrolls = [at for op, at in operations if op == "simpleenroll"]
    renewals = sorted({at for op, at in operations if op == "simplereenroll"})
    assert len(enrolls) == 2  # one RSA, one ECDSA initial enrollment
    # 80% of 90 days after each installation (the CA's 5-minute backdating is not counted).
    period = timedelta(days=72)
    assert renewals[0] - start == period
    assert len(renewals) == 5
    for a, b in itertools.pairwise(renewals):
        assert b - a == period
    # The renewals presented the certificate being renewed, never the manufacturer one (C13).
    assert all(
        c.presented and "node1.nmos.test" in c.presented
        for c in ca.calls
        if c.operation == "simplereenroll"
    )
    _serial, _not_before, not_after = current(node, "rsa")
    assert not_after > manual_clock.now()


def test_state_file_lets_a_restarted_agent_resume(
    tmp_path: Path, manual_clock: ManualClock, ca: CaBackedConnector
) -> None:
    node = make_node(tmp_path, manual_clock, ca)
    RenewalAgent(node).run_once()
    state = json.loads((tmp_path / "node" / "state.json").read_text())
    assert state["next_action"] == "renew the ecdsa certificate"
    due = datetime.fromisoformat(state["next_action_at"])
    calls_before = len(ca.calls)
    # A new process: new node and agent objects over the same directory, a day later.
    manual_clock.advance(86400)
    fresh = RenewalAgent(make_node(tmp_path, manual_clock, ca))
    step = fresh.run_once()
    # Start-up re-checks /cacerts only (C15, D5); the certificate is kept, not re-enrolled.
    assert [c.operation for c in ca.calls[calls_before:]] == ["cacerts"]
    assert step.next_at == due


def test_failed_renewal_keeps_the_certificate_and_halves_the_wait_c13(
    tmp_path: Path, manual_clock: ManualClock, ca: CaBackedConnector
) -> None:
    node = make_node(tmp_path, manual_clock, ca)
    agent = RenewalAgent(node)
    agent.run_once()
    serial, _not_before, not_after = current(node)
    due = datetime.fromisoformat(node.store.load_state()["next_action_at"])
    assert due == manual_clock.now() + timedelta(days=72)
    manual_clock.set(due)
    ca.refuse_renewal = True
    retries: list[tuple[timedelta, timedelta]] = []  # (remaining validity, wait chosen)
    for _ in range(9):
        step = agent.run_once()
        assert current(node)[0] == serial  # C13: still using the current certificate
        assert step.next_at is not None
        now = manual_clock.now()
        retries.append((not_after - now, step.next_at - now))
        manual_clock.set(step.next_at)
    # More than a day left: wait half the remaining validity (18 d -> 9 d -> 4.5 d ...).
    halving = [(left, wait) for left, wait in retries if left >= DAY]
    assert len(halving) == 5
    assert all(wait == left / 2 for left, wait in halving)
    # Under a day left: exponential backoff starting at 1 s.
    backoff = [wait.total_seconds() for left, wait in retries if left < DAY]
    assert backoff == [1.0, 2.0, 4.0, 8.0]
    status = node_status(node)
    assert status["certificates"][0]["failures"] == 9
    assert "renewal refused" in status["last_error"]


def test_expired_certificate_is_reprovisioned_from_scratch_c13(
    tmp_path: Path, manual_clock: ManualClock, ca: CaBackedConnector
) -> None:
    node = make_node(tmp_path, manual_clock, ca, max_attempts=1)
    agent = RenewalAgent(node)
    agent.run_once()
    _, _, not_after = current(node)
    manual_clock.set(not_after + DAY)  # the device was off for months
    agent.run_once()
    assert ca.calls[-1].operation == "simpleenroll"
    assert current(node)[2] > manual_clock.now()


def test_initial_provisioning_backs_off_from_one_second_while_the_server_is_down_c12(
    tmp_path: Path, manual_clock: ManualClock, ca: CaBackedConnector
) -> None:
    ca.down = True
    agent = RenewalAgent(make_node(tmp_path, manual_clock, ca))
    agent.run(max_steps=6)
    assert manual_clock.sleeps == [1, 2, 4, 8, 16]
    # Nothing is queued on an unreachable server: no key is kept for a repeat (C7: new keys).
    assert not (tmp_path / "node" / "ecdsa-pending-key.pem").exists()
    ca.down = False
    agent.run(max_steps=1)
    assert (tmp_path / "node" / "ecdsa-cert.pem").is_file()


def test_pending_request_waits_for_retry_after_and_reuses_its_key_c10(
    tmp_path: Path, manual_clock: ManualClock, ca: CaBackedConnector
) -> None:
    node = make_node(tmp_path, manual_clock, ca)
    agent = RenewalAgent(node)
    ca.pending = True
    step = agent.run_once()
    assert step.next_at == manual_clock.now() + timedelta(seconds=30)
    pending_key = (tmp_path / "node" / "ecdsa-pending-key.pem").read_bytes()
    assert node_status(node)["certificates"][0]["pending_approval"] is True
    ca.pending = False
    manual_clock.set(step.next_at)
    agent.run_once()
    installed = (tmp_path / "node" / "ecdsa-key.pem").read_bytes()
    assert installed == pending_key  # the approved request's key is the one installed
    assert not (tmp_path / "node" / "ecdsa-pending-key.pem").exists()


def test_root_renewal_same_root_retries_after_half_its_remaining_life_c14(
    tmp_path: Path, manual_clock: ManualClock, ca: CaBackedConnector
) -> None:
    node = make_node(tmp_path, manual_clock, ca, check_revocation=False)
    agent = RenewalAgent(node)
    agent.run_once()
    root = node.trust_anchors()[0]
    lifetime = root.not_valid_after_utc - root.not_valid_before_utc
    due = root.not_valid_before_utc + lifetime * 0.8
    assert node.store.load_state()["root"]["next_check_at"] == due.isoformat()
    manual_clock.set(due)
    ca.calls.clear()
    agent.run_once()
    assert ca.calls[0].operation == "cacerts"
    expected = due + (root.not_valid_after_utc - due) / 2
    assert node.store.load_state()["root"]["next_check_at"] == expected.isoformat()


def test_root_rollover_moves_trust_with_no_gap_c5(
    tmp_path: Path, manual_clock: ManualClock, ca: CaBackedConnector, events: EventLog
) -> None:
    node = make_node(tmp_path, manual_clock, ca, events, check_revocation=False)
    agent = RenewalAgent(node)
    agent.run_once()
    old_root = node.trust_anchors()[0]
    old_serial = current(node)[0]
    manual_clock.advance(10 * 86400)
    result = ca.authority.rollover(now=manual_clock.now())
    # Next start-up check sees OldWithOld, NewWithNew, OldWithNew, NewWithOld in /cacerts.
    fresh = RenewalAgent(make_node(tmp_path, manual_clock, ca, events, check_revocation=False))
    step = fresh.run_once()
    assert "root CA: rollover" in step.actions
    anchors = node.trust_anchors()
    assert anchors[0] == result.new_with_new and old_root in anchors  # both trusted: no gap
    # The certificate is moved to the new root's issuer right away, through /simplereenroll.
    assert "ecdsa: renewed" in step.actions
    new_serial = current(node)[0]
    assert new_serial != old_serial
    leaf = load_pem_certificates((tmp_path / "node" / "ecdsa-cert.pem").read_bytes())
    assert leaf[0].issuer == ca.authority.issuer_certificate.subject
    assert any("NewWithOld" in m for m in events.messages())


def test_root_from_another_domain_reprovisions_everything_c15(
    tmp_path: Path, manual_clock: ManualClock, ca: CaBackedConnector, events: EventLog
) -> None:
    node = make_node(tmp_path, manual_clock, ca, events, check_revocation=False)
    RenewalAgent(node).run_once()
    old_root = node.trust_anchors()[0]
    # The device is carried into another facility: a different EST server and CA, and the
    # node is renamed into that facility's DNS domain (the local evidence C15 needs).
    other = CaBackedConnector.create(tmp_path / "other-ca", manual_clock)
    moved = make_node(
        tmp_path,
        manual_clock,
        other,
        events,
        check_revocation=False,
        hostnames=("node1.elsewhere.test",),
    )
    step = RenewalAgent(moved).run_once()
    assert "root CA: new-domain" in step.actions
    assert moved.trust_anchors() == [other.authority.root_certificate]
    assert old_root not in moved.trust_anchors()
    # The installed root does not verify the new server; with the evidence, the first /cacerts
    # of the new network is trusted explicitly (C4) and the certificate is obtained before
    # anything is replaced.
    assert [c.operation for c in other.calls] == ["cacerts", "cacerts-explicit", "simpleenroll"]
    assert any(
        "DNS domain changed from nmos.test to elsewhere.test" in m for m in events.messages()
    )
    # The installed certificate is now one of the new domain's CA, not the old one.
    installed = moved.installed("ecdsa")
    assert installed is not None
    installed.certificate.verify_directly_issued_by(other.authority.issuer_certificate)
    assert any("NEW NETWORK (C15" in m for m in events.messages("warning"))


def test_revoked_certificate_is_dropped_at_once_and_replaced_c16(
    tmp_path: Path, manual_clock: ManualClock
) -> None:
    ca = CaBackedConnector.create(tmp_path / "ca", manual_clock, crl_url=CRL_URL)
    node = make_node(tmp_path, manual_clock, ca)
    agent = RenewalAgent(node)
    agent.run_once()
    serial = current(node)[0]
    ca.revoked.append(RevokedEntry(serial, manual_clock.now(), "keyCompromise"))
    manual_clock.advance(3601)  # next revocation check (hourly by default)
    step = agent.run_once()
    assert "revoked, dropped: ecdsa" in step.actions
    assert "ecdsa: provisioned" in step.actions  # a fresh enrollment, not a renewal
    assert current(node)[0] != serial
    assert ca.calls[-1].operation == "simpleenroll"


def test_automatic_renewal_off_means_no_renewal_c2(
    tmp_path: Path, manual_clock: ManualClock, ca: CaBackedConnector
) -> None:
    node = make_node(tmp_path, manual_clock, ca, auto_renew=False, check_revocation=False)
    agent = RenewalAgent(node)
    agent.run_once()
    _, not_before, _not_after = current(node)
    manual_clock.set(not_before + timedelta(days=80))
    agent.run_once()
    assert not [c for c in ca.calls if c.operation == "simplereenroll"]


def test_est_disabled_does_nothing_and_tag_is_empty_c2_c17(
    tmp_path: Path, manual_clock: ManualClock, ca: CaBackedConnector
) -> None:
    node = make_node(tmp_path, manual_clock, ca, est_enabled=False)
    step = RenewalAgent(node).run_once()
    assert step.actions == ["EST disabled"] and ca.calls == []
    assert node_status(node)["tags"] == {"urn:x-nmos:tag:certprov": []}


def test_on_change_hook_gets_paths_in_the_environment(
    tmp_path: Path, manual_clock: ManualClock, ca: CaBackedConnector
) -> None:
    log = tmp_path / "hook.log"
    hook = (
        f'echo "$ESTKIT_EVENT|$ESTKIT_KEY_TYPE|$ESTKIT_CERT|$ESTKIT_KEY|$ESTKIT_ROOT_CA" >> {log}'
    )
    node = make_node(tmp_path, manual_clock, ca, on_change=hook, check_revocation=False)
    agent = RenewalAgent(node)
    agent.run_once()
    manual_clock.set(datetime.fromisoformat(node.store.load_state()["next_action_at"]))
    agent.run_once()
    out = tmp_path / "node"
    lines = log.read_text().splitlines()
    assert lines == [
        f"root-changed||||{out / 'root-ca.pem'}",
        f"provisioned|ecdsa|{out / 'ecdsa-cert.pem'}|{out / 'ecdsa-key.pem'}|{out / 'root-ca.pem'}",
        f"renewed|ecdsa|{out / 'ecdsa-cert.pem'}|{out / 'ecdsa-key.pem'}|{out / 'root-ca.pem'}",
    ]


def test_short_lived_profile_validity_is_respected(
    tmp_path: Path, manual_clock: ManualClock
) -> None:
    ca = CaBackedConnector.create(
        tmp_path / "ca", manual_clock, profile=Profile(validity_seconds=3600, backdate_seconds=0)
    )
    node = make_node(tmp_path, manual_clock, ca, check_revocation=False)
    agent = RenewalAgent(node)
    step = agent.run_once()
    assert step.next_at == manual_clock.now() + timedelta(seconds=2880)  # 80% of an hour
    fingerprint = sha256_fingerprint(node.trust_anchors()[0])
    assert node.store.load_state()["root"]["fingerprint"] == fingerprint
