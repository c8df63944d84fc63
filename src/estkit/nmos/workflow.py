"""The one-shot provisioning workflow of the original prototype, done the BCP-003-03 way.

Root CA from ``/cacerts`` (explicit trust, C4/C5) -> one RSA and one ECDSA certificate with new
keys (C7, C8) -> checked (C9) and installed -> unless disabled, renewed once with new keys through
``/simplereenroll`` to show that renewal works (C13). ``estkit nmos workflow`` and ``estkit demo``
are thin wrappers around :func:`run_workflow`.

The steps run in one :meth:`NmosNode.session`: one verified TLS connection per server and client
certificate (the manufacturer's for both enrollments, each new certificate for its renewal) and
one ``/csrattrs``, instead of two connections and a ``/csrattrs`` per certificate (issue 23).
The new keys are made ahead in a background thread (:class:`estkit.nmos.prefetch.KeyPrefetch`)
while the node talks to the server; the CLI starts that thread before it imports the node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from estkit.nmos.anchors import TrustDecision
from estkit.nmos.config import NodeConfig
from estkit.nmos.errors import ManufacturerCredentialError
from estkit.nmos.node import CertificateOutcome, NmosNode
from estkit.nmos.prefetch import KeyPrefetch, workflow_key_types


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
    """
    config: NodeConfig = node.config
    outcomes: dict[str, CertificateOutcome] = {}
    previous = node.new_key
    try:
        _require_manufacturer_files(config)
        if keys is None:
            keys = KeyPrefetch(workflow_key_types(config.slots.values(), renew=renew))
        node.new_key = keys.take
        with node.session():
            trust = node.fetch_root_ca()
            for slot in config.slots:
                outcomes[slot] = node.enroll(slot)
            if renew:
                for slot in config.slots:
                    outcomes[slot] = node.renew(slot)
    finally:
        node.new_key = previous
        if keys is not None:
            keys.close()
    return WorkflowResult(node.store.root_ca_path, trust, [outcomes[s] for s in config.slots])


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
