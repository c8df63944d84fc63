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
    from estkit.nmos.agent import AgentStep as AgentStep
    from estkit.nmos.agent import RenewalAgent as RenewalAgent
    from estkit.nmos.agent import node_status as node_status
    from estkit.nmos.anchors import TrustChange as TrustChange
    from estkit.nmos.anchors import TrustDecision as TrustDecision
    from estkit.nmos.anchors import decide_trust as decide_trust
    from estkit.nmos.clock import Clock as Clock
    from estkit.nmos.clock import ManualClock as ManualClock
    from estkit.nmos.clock import SystemClock as SystemClock
    from estkit.nmos.config import DiscoverySettings as DiscoverySettings
    from estkit.nmos.config import NodeConfig as NodeConfig
    from estkit.nmos.config import ServerSettings as ServerSettings
    from estkit.nmos.config import load_node_config as load_node_config
    from estkit.nmos.config import save_node_config as save_node_config
    from estkit.nmos.connector import ClientConnector as ClientConnector
    from estkit.nmos.connector import EstConnector as EstConnector
    from estkit.nmos.discovery import DiscoveryResult as DiscoveryResult
    from estkit.nmos.discovery import ServerAdvert as ServerAdvert
    from estkit.nmos.discovery import discover_mdns as discover_mdns
    from estkit.nmos.discovery import discover_unicast as discover_unicast
    from estkit.nmos.errors import CertificateValidationError as CertificateValidationError
    from estkit.nmos.errors import DiscoveryError as DiscoveryError
    from estkit.nmos.errors import ManufacturerCredentialError as ManufacturerCredentialError
    from estkit.nmos.errors import NmosError as NmosError
    from estkit.nmos.errors import NodeConfigError as NodeConfigError
    from estkit.nmos.errors import ProvisioningError as ProvisioningError
    from estkit.nmos.errors import TrustError as TrustError
    from estkit.nmos.is04 import CERTPROV_TAG as CERTPROV_TAG
    from estkit.nmos.is04 import certprov_tag as certprov_tag
    from estkit.nmos.node import CertificateOutcome as CertificateOutcome
    from estkit.nmos.node import NmosNode as NmosNode
    from estkit.nmos.node import NodeEvent as NodeEvent
    from estkit.nmos.prefetch import KeyPrefetch as KeyPrefetch
    from estkit.nmos.prefetch import workflow_key_types as workflow_key_types
    from estkit.nmos.workflow import WorkflowResult as WorkflowResult
    from estkit.nmos.workflow import run_workflow as run_workflow

if not TYPE_CHECKING:  # Python reads the names from the imports above, lazily
    __getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
