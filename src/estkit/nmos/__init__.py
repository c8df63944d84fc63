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
from estkit.nmos.workflow import WorkflowResult, run_workflow

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
]
