"""The node against hostile servers: unrelated roots, churn, tarpits, escape sequences (issue 20).

Simulated-time tests use the real CA behind :class:`CaBackedConnector` (which verifies "TLS"
against the node's anchors like a real connection); the SIGTERM test runs the real CLI in a
subprocess against a real trickling TLS server.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509

# tests/ is on sys.path (it holds no __init__.py), and tests/client is a package: its hostile
# server and PKI are shared rather than copied.
from client.hostile import TricklingServer  # type: ignore[import-not-found]
from client.pki import QuirkyPki  # type: ignore[import-not-found]
from estkit.ca.profiles import Profile
from estkit.client.errors import EstHttpError
from estkit.client.models import CsrSpec, EnrollResult
from estkit.client.trust import ClientCredentials
from estkit.nmos.agent import RenewalAgent
from estkit.nmos.clock import ManualClock
from estkit.nmos.config import NodeConfig, ServerSettings, save_node_config
from estkit.nmos.discovery import ServerAdvert
from estkit.nmos.errors import ProvisioningError
from estkit.nmos.node import NmosNode

from .conftest import EventLog
from .fake_est import CaBackedConnector
from .test_nmos_impostor import snapshot


def make_node(
    tmp_path: Path,
    clock: ManualClock,
    connector: object,
    events: EventLog | None = None,
    **changes: object,
) -> NmosNode:
    settings: dict[str, object] = {
        "output_dir": tmp_path / "node",
        "hostnames": ("node1.nmos.test",),
        "key_types": ("p256",),
        "server": ServerSettings(host="est.nmos.test", port=443),
        "check_revocation": False,
        **changes,
    }
    return NmosNode(
        NodeConfig(**settings),  # type: ignore[arg-type]
        clock=clock,
        connector=connector,  # type: ignore[arg-type]
        on_event=events,
    )


class PublishesAStrangersRoot(CaBackedConnector):
    """A server the node's root DOES verify, whose /cacerts suddenly names an unrelated root
    (a compromised or misconfigured server; C5: no NewWithOld links it to ours)."""

    stranger: list[x509.Certificate]

    def cacerts(
        self, server: ServerAdvert, trust: Sequence[x509.Certificate]
    ) -> list[x509.Certificate]:
        super().cacerts(server, trust)  # recorded, and verified against the node's root
        return list(self.stranger)


# --- C5 / C15 ------------------------------------------------------------------------------


def test_verified_server_cannot_swap_in_an_unlinked_root_c5_c15(
    tmp_path: Path, manual_clock: ManualClock, events: EventLog
) -> None:
    ca = CaBackedConnector.create(tmp_path / "ca", manual_clock)
    node = make_node(tmp_path, manual_clock, ca, events)
    RenewalAgent(node).run_once()
    before = snapshot(tmp_path / "node")
    stranger = CaBackedConnector.create(tmp_path / "stranger", manual_clock)
    liar = PublishesAStrangersRoot(ca.authority, manual_clock)
    liar.stranger = list(stranger.authority.cacerts)
    step = RenewalAgent(make_node(tmp_path, manual_clock, liar, events)).run_once()
    assert [c.operation for c in liar.calls] == ["cacerts"]  # it was asked, and nothing more
    assert "no NewWithOld certificate linking them (C5); not installing it" in step.errors[0]
    assert snapshot(tmp_path / "node") == before


def test_new_domain_is_refused_when_the_configuration_says_never_c15(
    tmp_path: Path, manual_clock: ManualClock, events: EventLog
) -> None:
    ca = CaBackedConnector.create(tmp_path / "ca", manual_clock)
    RenewalAgent(make_node(tmp_path, manual_clock, ca, events)).run_once()
    before = snapshot(tmp_path / "node")
    other = CaBackedConnector.create(tmp_path / "other", manual_clock)
    moved = make_node(
        tmp_path,
        manual_clock,
        other,
        events,
        hostnames=("node1.elsewhere.test",),  # evidence ...
        reprovision_on_new_network=False,  # ... that the configuration ignores
    )
    events.clear()
    step = RenewalAgent(moved).run_once()
    # The root check and the enrollment for the new name both end at the TLS handshake (the
    # fake verifies like a real connection): the old root does not verify the new server.
    assert [c.operation for c in other.calls] == ["cacerts", "simpleenroll"]
    assert "does not verify against the installed root CA" in step.errors[0]
    assert not any("explicitly" in m for m in events.messages())
    assert snapshot(tmp_path / "node") == before


def test_new_network_keeps_everything_until_the_new_certificate_is_in_hand_c15(
    tmp_path: Path, manual_clock: ManualClock, events: EventLog
) -> None:
    ca = CaBackedConnector.create(tmp_path / "ca", manual_clock)
    RenewalAgent(make_node(tmp_path, manual_clock, ca, events)).run_once()
    before = snapshot(tmp_path / "node")
    other = CaBackedConnector.create(tmp_path / "other", manual_clock, pending=True)
    moved = make_node(tmp_path, manual_clock, other, events, hostnames=("node1.elsewhere.test",))
    step = RenewalAgent(moved).run_once()
    operations = [c.operation for c in other.calls]
    assert operations[:3] == ["cacerts", "cacerts-explicit", "simpleenroll"]
    assert step.errors and "queued the request" in step.errors[0]
    current = snapshot(tmp_path / "node")
    # The root and the working pair are untouched; only the queued request's key was saved.
    assert {k: v for k, v in current.items() if "pending" not in k} == before


# --- renewal floor (item 4) --------------------------------------------------------------------


def _enrollments(ca: CaBackedConnector) -> list[str]:
    return [c.operation for c in ca.calls if c.operation in ("simpleenroll", "simplereenroll")]


def test_four_second_certificates_do_not_make_the_node_churn(
    tmp_path: Path, manual_clock: ManualClock, events: EventLog
) -> None:
    """Issue 20: 4-second certificates gave 20 re-enrollments in 30 s. With the default floor
    (one hour) the node enrolls once and then waits, saying why."""
    ca = CaBackedConnector.create(
        tmp_path / "ca", manual_clock, profile=Profile(validity_seconds=4)
    )
    agent = RenewalAgent(make_node(tmp_path, manual_clock, ca, events))
    start = manual_clock.now()
    for _ in range(30):  # the agent looks every simulated second for 30 s
        step = agent.run_once()
        manual_clock.advance(1)
    assert _enrollments(ca) == ["simpleenroll"]
    assert any("less than the renewal floor (3600 s)" in m for m in events.messages("warning"))
    # It enrolls again one hour after the first enrollment, not before.
    assert step.next_at is not None
    assert (step.next_at - start).total_seconds() == pytest.approx(3600, abs=1)


def test_renewal_floor_is_configurable_and_keeps_the_50_percent_rule(
    tmp_path: Path, manual_clock: ManualClock
) -> None:
    ca = CaBackedConnector.create(
        tmp_path / "ca", manual_clock, profile=Profile(validity_seconds=1000)
    )
    node = make_node(
        tmp_path, manual_clock, ca, min_renewal_interval_seconds=10, renewal_fraction=0.5
    )
    agent = RenewalAgent(node)
    installed_at = manual_clock.now()
    agent.run_once()
    cert = node.installed("ecdsa")
    assert cert is not None
    # The useful life starts when the node installed it (the CA backdates notBefore).
    lifetime = cert.certificate.not_valid_after_utc - installed_at
    manual_clock.set(installed_at + lifetime * 0.49)
    agent.run_once()
    assert _enrollments(ca) == ["simpleenroll"]  # 49%: too early
    manual_clock.set(installed_at + lifetime * 0.51)
    agent.run_once()
    assert _enrollments(ca) == ["simpleenroll", "simplereenroll"]


class FailsRenewals(CaBackedConnector):
    def enroll(
        self,
        server: ServerAdvert,
        spec: CsrSpec,
        *,
        trust: Sequence[x509.Certificate],
        credentials: ClientCredentials | None,
        renewal: bool,
    ) -> EnrollResult:
        if renewal:
            self._record("simplereenroll", server)
            raise EstHttpError("internal error", status=500, url=server.base_url)
        return super().enroll(server, spec, trust=trust, credentials=credentials, renewal=renewal)


def test_failed_renewals_back_off_instead_of_hammering(
    tmp_path: Path, manual_clock: ManualClock
) -> None:
    ca = FailsRenewals.create(tmp_path / "ca", manual_clock, profile=Profile(validity_seconds=3600))
    node = make_node(tmp_path, manual_clock, ca, min_renewal_interval_seconds=0)
    agent = RenewalAgent(node)
    agent.run_once()
    for _ in range(8):
        step = agent.run_once()
        assert step.next_at is not None
        manual_clock.set(max(step.next_at, manual_clock.now()))
    attempts = [c.at for c in ca.calls if c.operation == "simplereenroll"]
    gaps = [(b - a).total_seconds() for a, b in itertools_pairwise(attempts)]
    assert gaps and all(later >= earlier for earlier, later in itertools_pairwise(gaps))
    assert gaps[-1] > gaps[0]  # exponential, from 1 s (C13, under a day left)


def itertools_pairwise(items: Sequence[object]) -> list[tuple[object, object]]:
    return list(itertools.pairwise(items))


# --- escape sequences (item 5) -----------------------------------------------------------------


class ShoutsEscapes(CaBackedConnector):
    def enroll(
        self,
        server: ServerAdvert,
        spec: CsrSpec,
        *,
        trust: Sequence[x509.Certificate],
        credentials: ClientCredentials | None,
        renewal: bool,
    ) -> EnrollResult:
        self._record("simpleenroll", server)
        raise EstHttpError(
            "the server said: \x1b]0;pwned\x07\x1b[2Jgo away",
            status=403,
            server_text="\x1b]0;pwned\x07\x1b[2J",
            url=server.base_url,
        )


def test_server_text_is_escaped_in_node_events_and_state(
    tmp_path: Path, manual_clock: ManualClock, events: EventLog
) -> None:
    ca = ShoutsEscapes.create(tmp_path / "ca", manual_clock)
    node = make_node(tmp_path, manual_clock, ca, events)
    step = RenewalAgent(node).run_once()
    assert step.errors
    everything = (
        events.text() + "".join(step.errors) + (tmp_path / "node" / "state.json").read_text()
    )
    assert "\x1b" not in everything and "\x07" not in everything
    assert "\\x1b]0;pwned\\x07\\x1b[2J" in events.text()


# --- SIGTERM mid-request (item 2) --------------------------------------------------------------


@pytest.mark.parametrize("once", [False, True], ids=["loop", "once"])
def test_sigterm_stops_the_agent_mid_request(tmp_path: Path, once: bool) -> None:
    """The agent is blocked reading a body the server trickles (its deadline is 30 s away);
    SIGTERM ends the real process within a couple of seconds, writing nothing."""
    pki = QuirkyPki.create(tmp_path / "pki")
    # Headers and one body byte, then silence: the agent sits in a blocking read that only the
    # signal can end (the cooperative check between reads would never run).
    tarpit = TricklingServer(pki.files["server_chain"], pki.files["server_key"], interval=60)
    with tarpit as server:
        config = NodeConfig(
            output_dir=tmp_path / "node",
            hostnames=("node1.nmos.test",),
            key_types=("p256",),
            server=ServerSettings(host="localhost", port=server.port),
        )
        path = tmp_path / "node.toml"
        save_node_config(config, path)
        command = [sys.executable, "-m", "estkit.cli.main", "nmos", "agent", "--config", str(path)]
        process = subprocess.Popen(
            [*command, "--once"] if once else command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, COLUMNS="200"),
        )
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and server.bytes_sent < 1:
                time.sleep(0.05)
            assert server.bytes_sent >= 1, "the agent never reached the body"
            time.sleep(0.5)  # into the blocking read of the rest
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=15)
            stopped_after = time.monotonic() - signalled
        finally:
            if process.poll() is None:
                process.kill()
    assert stopped_after < 3.0, stopped_after
    assert process.returncode == 0, out + err
    assert "SIGTERM: stopping" in err
    assert "agent stopped" in out
    assert server.requests == [b"GET /.well-known/est/cacerts HTTP/1.1"]
    assert not (tmp_path / "node" / "root-ca.pem").exists()


def test_crl_fetch_has_an_overall_deadline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CRL distribution point that trickles cannot hold the node past the fetch deadline."""
    from estkit.client.errors import EstConnectionError
    from estkit.nmos import connector as connector_module

    monkeypatch.setattr(connector_module, "FETCH_TIMEOUT_SECONDS", 2.0)
    pki = QuirkyPki.create(tmp_path / "pki")
    with TricklingServer(pki.files["server_chain"], pki.files["server_key"], interval=0.5) as srv:
        fetcher = connector_module.ClientConnector(ManualClock())
        start = time.monotonic()
        with pytest.raises(EstConnectionError) as caught:
            fetcher.fetch(f"{srv.url}/issuing.crl", [pki.root])
        elapsed = time.monotonic() - start
        assert srv.requests == [b"GET /issuing.crl HTTP/1.1"]
        assert srv.bytes_sent >= 2  # it was still sending when the node gave up
    assert 1.8 <= elapsed <= 3.5, elapsed
    assert "overall deadline of 2 s" in str(caught.value)


class IssuesCaCertificates(CaBackedConnector):
    """A server that signs, with its genuine issuing key, a CA:TRUE 'leaf' with the right names,
    key and EKUs: only the BasicConstraints check stands between it and the node's files."""

    def enroll(
        self,
        server: ServerAdvert,
        spec: CsrSpec,
        *,
        trust: Sequence[x509.Certificate],
        credentials: ClientCredentials | None,
        renewal: bool,
    ) -> EnrollResult:
        from cryptography.hazmat.primitives import hashes

        good = super().enroll(server, spec, trust=trust, credentials=credentials, renewal=renewal)
        cert = good.certificate
        builder = (
            x509.CertificateBuilder()
            .subject_name(cert.subject)
            .issuer_name(cert.issuer)
            .public_key(cert.public_key())  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(cert.not_valid_before_utc)
            .not_valid_after(cert.not_valid_after_utc)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        )
        for extension in cert.extensions:
            if not isinstance(extension.value, x509.BasicConstraints):
                builder = builder.add_extension(extension.value, extension.critical)
        forged = builder.sign(self.authority._issuer_key, hashes.SHA256())  # type: ignore[arg-type]
        return EnrollResult(forged, good.chain, good.private_key)


def test_renewal_answered_with_a_ca_certificate_replaces_nothing_c9(
    tmp_path: Path, manual_clock: ManualClock, events: EventLog
) -> None:
    ca = CaBackedConnector.create(tmp_path / "ca", manual_clock)
    node = make_node(tmp_path, manual_clock, ca, events)
    RenewalAgent(node).run_once()
    before = snapshot(tmp_path / "node")
    hostile = IssuesCaCertificates(ca.authority, manual_clock)
    renewing = make_node(tmp_path, manual_clock, hostile, events)
    with pytest.raises(ProvisioningError, match=r"CA certificate \(CA:TRUE\)"):
        renewing.renew("ecdsa", rounds=1)
    assert [c.operation for c in hostile.calls] == ["simplereenroll"]
    assert snapshot(tmp_path / "node") == before
