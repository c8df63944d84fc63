"""The workflow's certificates in lanes at once (issue 23), against a real estkit server over TLS.

What must hold although the RSA and ECDSA certificates (BCP-003-03 C7) are enrolled and renewed
at the same time: the progress comes out in the order of a run doing one step after the other;
each CSR is linked to the connection that carries it (RFC 7030 §3.5, C7); the files are whole and
0600 (written atomically); a failure of one certificate is reported, and the other is kept.
"""

from __future__ import annotations

import signal
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import rsa

import estkit.nmos.connector
from estkit.cli.main import cli
from estkit.nmos.clock import SystemClock
from estkit.nmos.errors import ProvisioningError
from estkit.nmos.node import NmosNode
from estkit.nmos.workflow import run_workflow

from .conftest import EventLog, config_for_server

WAIT_SECONDS = 20.0  # only a workflow that enrolls one certificate after the other waits this long
# The RSA enrollment is refused by this label's profile, the ECDSA one is not.
EC_ONLY = {"key_families": ["ec"]}


def _phases(events: EventLog) -> list[tuple[str, str]]:
    """(step, slot) of each enrollment/renewal event, in the order the sink received them."""
    order: list[tuple[str, str]] = []
    for event in events:
        if event.slot is None or event.step not in ("enroll", "renew"):
            continue
        if not order or order[-1] != (event.step, event.slot):
            order.append((event.step, event.slot))
    return order


def test_the_certificates_are_enrolled_at_once(
    estkit_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, events: EventLog
) -> None:
    """Each lane's first enrollment waits at a barrier for the other's: one after the other,
    the first would wait in vain (BrokenBarrierError); in lanes, both get there."""
    barrier = threading.Barrier(2, timeout=WAIT_SECONDS)
    original = estkit.nmos.connector.ClientConnector.enroll

    def meeting(self: Any, server: Any, spec: Any, **kwargs: Any) -> Any:
        if not kwargs["renewal"]:
            barrier.wait()
        return original(self, server, spec, **kwargs)

    monkeypatch.setattr(estkit.nmos.connector.ClientConnector, "enroll", meeting)
    result = run_workflow(
        NmosNode(config_for_server(estkit_server, tmp_path / "node"), on_event=events)
    )
    assert [(c.slot, c.renewed) for c in result.certificates] == [("rsa", True), ("ecdsa", True)]
    for outcome in result.certificates:
        assert outcome.cert_path.is_file()
        assert stat.S_IMODE(outcome.key_path.stat().st_mode) == 0o600
    assert not list((tmp_path / "node").glob(".*.tmp"))  # every write finished (atomic)


def test_progress_comes_out_in_sequential_order_when_the_ecdsa_lane_finishes_first(
    estkit_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, events: EventLog
) -> None:
    """The RSA enrollment is held until the ECDSA lane has enrolled and renewed; the events still
    read RSA, ECDSA, then the renewals, as if done one after the other. A sink fed directly by
    the lanes would show the ECDSA lines first."""
    ecdsa_done = threading.Event()
    original = estkit.nmos.connector.ClientConnector.enroll

    def rsa_last(self: Any, server: Any, spec: Any, **kwargs: Any) -> Any:
        is_rsa = isinstance(spec.key, rsa.RSAPrivateKey)
        if is_rsa and not kwargs["renewal"]:
            assert ecdsa_done.wait(WAIT_SECONDS)
        result = original(self, server, spec, **kwargs)
        if not is_rsa and kwargs["renewal"]:
            ecdsa_done.set()
        return result

    monkeypatch.setattr(estkit.nmos.connector.ClientConnector, "enroll", rsa_last)
    run_workflow(NmosNode(config_for_server(estkit_server, tmp_path / "node"), on_event=events))
    assert ecdsa_done.is_set()
    assert _phases(events) == [
        ("enroll", "rsa"),
        ("enroll", "ecdsa"),
        ("renew", "rsa"),
        ("renew", "ecdsa"),
    ], events.text()


def test_every_csr_is_linked_to_its_own_lanes_connection_on_a_pop_label(
    estkit_server: Any, tmp_path: Path, events: EventLog
) -> None:
    """The "pop" label refuses a CSR whose challengePassword is not the binding of the
    connection carrying it (RFC 7030 §3.5). Both lanes at once, each on its own connections:
    every CSR matched at the first try (no "rebuilt" relink, which would hide a CSR linked to
    another lane's or an earlier connection)."""
    config = config_for_server(estkit_server, tmp_path / "node", label="pop", max_attempts=1)
    result = run_workflow(NmosNode(config, on_event=events))
    assert all(c.renewed for c in result.certificates)
    for outcome in result.certificates:
        assert not [w for w in outcome.warnings if "connection" in w], outcome.warnings
    assert "rebuilt" not in events.text()
    assert "did not travel on the connection" not in events.text()


def test_a_refused_certificate_is_reported_and_the_other_is_kept(
    fresh_server: Any, tmp_path: Path, events: EventLog
) -> None:
    server = fresh_server(ec_only=EC_ONLY)
    out = tmp_path / "node"
    config = config_for_server(server, out, label="ec_only", max_attempts=1)
    with pytest.raises(ProvisioningError) as caught:
        run_workflow(NmosNode(config, on_event=events))
    # The RSA failure is the one raised, with the server's refusal (status and reason).
    message = str(caught.value)
    assert "enrolling the rsa certificate failed" in message, message
    assert "400" in message and "rsa" in message.lower(), message
    # The ECDSA certificate was enrolled, renewed and kept: whole, private, nothing half-written.
    assert (out / "ecdsa-cert.pem").is_file()
    assert stat.S_IMODE((out / "ecdsa-key.pem").stat().st_mode) == 0o600
    assert not (out / "rsa-cert.pem").exists() and not (out / "rsa-key.pem").exists()
    assert not list(out.glob("rsa-pending-key.pem"))  # refused, not queued: no key kept (C7)
    assert not list(out.glob(".*.tmp"))
    assert ("renew", "ecdsa") in _phases(events)
    assert any(
        e.kind == "warning"
        and "the rsa certificate failed; ecdsa-cert.pem installed and kept" in e.message
        for e in events
    ), events.text()


def test_cli_reports_the_failed_certificate_and_shows_the_kept_one(
    fresh_server: Any, tmp_path: Path
) -> None:
    server = fresh_server(ec_only=EC_ONLY)
    paths = server.paths
    result = CliRunner().invoke(
        cli,
        [
            "nmos", "workflow", "--ip", "localhost", "--port", str(server.port),
            "--label", "ec_only", "--max-attempts", "1",
            "--cert", str(paths.device_certificate), "--key", str(paths.device_key),
            "--hostname", "node1.nmos.test", "--out-dir", str(tmp_path / "node"),
        ],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "NMOS workflow failed: enrolling the rsa certificate failed" in result.output
    assert "ECDSA: renewed ecdsa-cert.pem" in result.output
    assert "ecdsa-cert.pem installed and kept" in result.output
    assert "Traceback" not in result.output


def test_when_both_certificates_fail_both_failures_are_told(
    fresh_server: Any, tmp_path: Path, events: EventLog
) -> None:
    """An IP address as the node's name is refused for either key (the profile allows no IP
    SANs): the RSA failure is raised, the ECDSA one is a failure event, none is lost."""
    server = fresh_server()
    config = config_for_server(server, tmp_path / "node", hostnames=("192.0.2.7",), max_attempts=1)
    with pytest.raises(ProvisioningError, match="enrolling the rsa certificate failed"):
        run_workflow(NmosNode(config, on_event=events))
    failures = [e for e in events if e.kind == "failure" and e.step == "workflow"]
    assert [e.slot for e in failures] == ["ecdsa"], events.text()
    assert "enrolling the ecdsa certificate failed" in failures[0].message
    assert "installed and kept" not in events.text()


def test_an_interrupt_while_the_lanes_run_cancels_them(
    estkit_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C reaches the main thread, which only waits for the lanes: it must stop them from
    starting new exchanges (the node is cancelled) instead of leaving them to run on."""
    node = NmosNode(config_for_server(estkit_server, tmp_path / "node"))
    cancelled_seen: list[bool] = []
    original = estkit.nmos.connector.ClientConnector.enroll

    def interrupting(self: Any, server: Any, spec: Any, **kwargs: Any) -> Any:
        if isinstance(spec.key, rsa.RSAPrivateKey) and not kwargs["renewal"]:
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
            cancelled_seen.append(node.cancelled.wait(WAIT_SECONDS))
        return original(self, server, spec, **kwargs)

    monkeypatch.setattr(estkit.nmos.connector.ClientConnector, "enroll", interrupting)
    with pytest.raises(KeyboardInterrupt):
        run_workflow(node)
    deadline = time.monotonic() + WAIT_SECONDS
    while not cancelled_seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cancelled_seen == [True]


def test_a_connector_that_is_not_declared_concurrent_is_called_from_one_thread(
    estkit_server: Any, tmp_path: Path, events: EventLog
) -> None:
    """A vendor's own connector (no ``concurrent = True``) is never called from two threads at
    once: the lanes run in turn, in the caller's thread, and the output is the same."""
    real = estkit.nmos.connector.ClientConnector(SystemClock())
    threads: list[str] = []

    class OwnConnector:
        """Passes everything to the real connector and records which thread called it."""

        def __getattr__(self, name: str) -> Any:
            if name == "concurrent":
                raise AttributeError(name)
            threads.append(threading.current_thread().name)
            return getattr(real, name)

    node = NmosNode(
        config_for_server(estkit_server, tmp_path / "node"),
        connector=OwnConnector(),  # type: ignore[arg-type]
        on_event=events,
    )
    result = run_workflow(node)
    assert all(c.renewed for c in result.certificates)
    assert set(threads) == {threading.current_thread().name}, threads
    assert _phases(events) == [
        ("enroll", "rsa"),
        ("enroll", "ecdsa"),
        ("renew", "rsa"),
        ("renew", "ecdsa"),
    ]
