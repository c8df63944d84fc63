"""estkit.nmos: the NMOS node side of AMWA BCP-003-03, as a library a device vendor embeds.

Typical use in a device's own process::

    from estkit.nmos import NmosNode, RenewalAgent, load_node_config

    node = NmosNode(load_node_config("/etc/nmos/node.toml"), on_event=my_logger)
    agent = RenewalAgent(node)
    agent.run()            # or agent.run_once() from the device's own scheduler

The one-shot workflow of the original prototype is :func:`run_workflow`; the IS-04 tag value is
:func:`certprov_tag`. Nothing here prints or exits: progress arrives as :class:`NodeEvent`, failures
as :class:`NmosError` subclasses carrying a ``hint``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from estkit._lazy import lazy_exports

if TYPE_CHECKING:
    from estkit.nmos.agent import AgentStep, RenewalAgent, node_status
    from estkit.nmos.anchors import TrustChange, TrustDecision, decide_trust
    from estkit.nmos.clock import Clock, ManualClock, SystemClock
    from estkit.nmos.config import (
        DiscoverySettings,
        NodeConfig,
        ServerSettings,
        load_node_config,
        save_node_config,
    )
    from estkit.nmos.connector import ClientConnector, EstConnector
    from estkit.nmos.discovery import (
        DiscoveryResult,
        ServerAdvert,
        discover_mdns,
        discover_unicast,
    )
    from estkit.nmos.errors import (
        CertificateValidationError,
        DiscoveryError,
        ManufacturerCredentialError,
        NmosError,
        NodeConfigError,
        ProvisioningError,
        TrustError,
    )
    from estkit.nmos.is04 import CERTPROV_TAG, certprov_tag
    from estkit.nmos.node import CertificateOutcome, NmosNode, NodeEvent
    from estkit.nmos.prefetch import KeyPrefetch, workflow_key_types
    from estkit.nmos.workflow import WorkflowResult, run_workflow

# name -> submodule: each name's module is imported the first time the name is read.
_EXPORTS: dict[str, str] = {
    "AgentStep": "agent",
    "CERTPROV_TAG": "is04",
    "CertificateOutcome": "node",
    "CertificateValidationError": "errors",
    "ClientConnector": "connector",
    "Clock": "clock",
    "DiscoveryError": "errors",
    "DiscoveryResult": "discovery",
    "DiscoverySettings": "config",
    "EstConnector": "connector",
    "KeyPrefetch": "prefetch",
    "ManualClock": "clock",
    "ManufacturerCredentialError": "errors",
    "NmosError": "errors",
    "NmosNode": "node",
    "NodeConfig": "config",
    "NodeConfigError": "errors",
    "NodeEvent": "node",
    "ProvisioningError": "errors",
    "RenewalAgent": "agent",
    "ServerAdvert": "discovery",
    "ServerSettings": "config",
    "SystemClock": "clock",
    "TrustChange": "anchors",
    "TrustDecision": "anchors",
    "TrustError": "errors",
    "WorkflowResult": "workflow",
    "certprov_tag": "is04",
    "decide_trust": "anchors",
    "discover_mdns": "discovery",
    "discover_unicast": "discovery",
    "load_node_config": "config",
    "node_status": "agent",
    "run_workflow": "workflow",
    "save_node_config": "config",
    "workflow_key_types": "prefetch",
}


__all__ = [
    "CERTPROV_TAG",
    "AgentStep",
    "CertificateOutcome",
    "CertificateValidationError",
    "ClientConnector",
    "Clock",
    "DiscoveryError",
    "DiscoveryResult",
    "DiscoverySettings",
    "EstConnector",
    "KeyPrefetch",
    "ManualClock",
    "ManufacturerCredentialError",
    "NmosError",
    "NmosNode",
    "NodeConfig",
    "NodeConfigError",
    "NodeEvent",
    "ProvisioningError",
    "RenewalAgent",
    "ServerAdvert",
    "ServerSettings",
    "SystemClock",
    "TrustChange",
    "TrustDecision",
    "TrustError",
    "WorkflowResult",
    "certprov_tag",
    "decide_trust",
    "discover_mdns",
    "discover_unicast",
    "load_node_config",
    "node_status",
    "run_workflow",
    "save_node_config",
    "workflow_key_types",
]

if not TYPE_CHECKING:  # type checkers read the imports above; Python runs this
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
