"""The one-shot provisioning workflow of the original prototype, done the BCP-003-03 way.

Root CA from ``/cacerts`` (explicit trust, C4/C5) -> one RSA and one ECDSA certificate with new
keys (C7, C8) -> checked (C9) and installed -> unless disabled, renewed once with new keys through
``/simplereenroll`` to show that renewal works (C13). ``estkit nmos workflow`` and ``estkit demo``
are thin wrappers around :func:`run_workflow`.

The steps run in one :meth:`NmosNode.session`: one verified TLS connection per server, client
certificate and thread, and one ``/csrattrs`` per enrollment (which also opens the connection
its CSR is linked to), instead of two connections and two ``/csrattrs`` per certificate
(issue 23). After the root, each certificate is enrolled and renewed in a lane of its own
(:mod:`estkit.nmos.lanes`), the lanes at once; the progress events come out in the order of a
run doing one step after the other (all enrollments, then all renewals), whatever the timing.
The new keys are made ahead in a background thread (:class:`estkit.nmos.prefetch.KeyPrefetch`)
while the node talks to the server; the CLI starts that thread before it imports the node. The
once-per-process self-check of the TLS 1.3 channel binding
(:func:`estkit.tlsbind.exporter_support`), which the first linked enrollment would otherwise run
while it holds its connection, runs in another thread during ``/cacerts``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from estkit.nmos.anchors import TrustDecision
from estkit.nmos.config import NodeConfig
from estkit.nmos.errors import ManufacturerCredentialError
from estkit.nmos.lanes import Lane, OrderedEvents, run_lanes
from estkit.nmos.node import CertificateOutcome, NmosNode, NodeEvent
from estkit.nmos.prefetch import KeyPrefetch, workflow_key_types
from estkit.tlsbind import exporter_support

ENROLL, RENEW = "enroll", "renew"


@dataclass
class WorkflowResult:
    """What the workflow installed; :meth:`to_json` is the CLI's ``--json`` document."""

    root_ca: Path
    trust: TrustDecision
    certificates: list[CertificateOutcome] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "root_ca": str(self.root_ca),
            "certificates": [
                {
                    "key_type": outcome.slot,
                    "certificate": str(outcome.cert_path),
                    "key": str(outcome.key_path),
                    "not_after": outcome.not_after.isoformat(),
                    "renewed": outcome.renewed,
                }
                for outcome in self.certificates
            ],
        }


def run_workflow(
    node: NmosNode, *, renew: bool = True, keys: KeyPrefetch | None = None
) -> WorkflowResult:
    """Run the whole workflow once on ``node``; raises an ``NmosError`` subclass on failure.

    ``keys``: the new key pairs, already being made (see :func:`workflow_key_types`); by default
    they are started here, before the first request. Keys not used are dropped at the end.

    When one certificate fails, the others are still enrolled (and renewed) and stay installed;
    the first failure, in slot order, is raised after a warning naming what was installed.
    """
    config: NodeConfig = node.config
    previous = node.new_key
    try:
        _require_manufacturer_files(config)
        if keys is None:
            keys = KeyPrefetch(workflow_key_types(config.slots.values(), renew=renew))
        node.new_key = keys.take
        # The modules are loaded: a key still waiting for the first thread gets its own now.
        keys.hurry()
        # Ahead, on the other core: a TLS 1.3 server makes the first enrollment read the
        # connection's tls-exporter, and the first read self-checks (a few ms; once, and then
        # for nothing if the server speaks TLS 1.2 only). Its lock makes a reader wait for it.
        threading.Thread(target=exporter_support, name="estkit-tlsbind-check", daemon=True).start()
        with node.session():
            trust = node.fetch_root_ca()
            outcomes = _certificates(node, renew)
    finally:
        node.new_key = previous
        if keys is not None:
            keys.close()
    return WorkflowResult(node.store.root_ca_path, trust, [outcomes[s] for s in config.slots])


def _certificates(node: NmosNode, renew: bool) -> dict[str, CertificateOutcome]:
    """Enroll (and renew) every slot, a lane per slot, the lanes at once; events in the order
    of all enrollments, then all renewals."""
    slots = list(node.config.slots)
    steps = (ENROLL, RENEW) if renew else (ENROLL,)
    outcomes: dict[str, CertificateOutcome] = {}
    sink = node.on_event
    ordered = (
        OrderedEvents[NodeEvent](sink, [(step, slot) for step in steps for slot in slots])
        if sink is not None
        else None
    )

    def lane(slot: str) -> Lane:
        def run() -> None:
            phases: list[Hashable] = [(step, slot) for step in steps]
            try:
                for step in steps:
                    with ordered.phase((step, slot)) if ordered else contextlib.nullcontext():
                        operation = node.enroll if step == ENROLL else node.renew
                        outcomes[slot] = operation(slot)
            finally:
                if ordered is not None:
                    ordered.finish(*phases)  # the steps a failure skipped

        return run

    node.on_event = ordered
    try:
        # A connector that does not say it may be called from several threads gets one at a
        # time (a vendor's own transport); the estkit one does.
        at_once = getattr(node.connector, "concurrent", False) is True
        errors = run_lanes([lane(slot) for slot in slots], at_once=at_once)
    except BaseException:
        # Interrupted while waiting (Ctrl-C): the lanes still running start no new exchange and
        # abandon the one in flight where they can; they are daemons and end with the process.
        node.cancel()
        raise
    finally:
        node.on_event = sink
        if ordered is not None:
            ordered.flush()
    failed = [(slot, error) for slot, error in zip(slots, errors, strict=True) if error]
    if not failed:
        return outcomes
    # The first failure is raised (the caller reports it); the others are told here.
    for slot, error in failed[1:]:
        node.emit("failure", "workflow", str(error), slot)
    failed_slots = [slot for slot, _ in failed]
    kept = [outcomes[slot].cert_path.name for slot in slots if slot not in failed_slots]
    if kept:
        node.emit(
            "warning",
            "workflow",
            f"the {' and '.join(failed_slots)} certificate failed; {', '.join(kept)} "
            "installed and kept",
        )
    raise failed[0][1]


def _require_manufacturer_files(config: NodeConfig) -> None:
    """A path the user typed that does not exist is a mistake to report, not a reason to enroll
    anonymously (only an expired or revoked certificate is set aside silently, C1)."""
    for what, path in (
        ("manufacturer certificate", config.manufacturer_certificate),
        ("manufacturer key", config.manufacturer_key),
    ):
        if path is not None and not Path(path).is_file():
            raise ManufacturerCredentialError(
                f"the {what} {path} does not exist",
                hint="give the device's manufacturer-issued certificate and key",
                params=("manufacturer_credentials",),
            )
