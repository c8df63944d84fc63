"""estkit.server: the EST server (RFC 7030 / BCP-003-03) with its own CA.

Library entry points: :func:`init_data_dir` makes a data directory, :func:`start_server_thread`
runs the server in the background (tests, demos), :func:`serve` in the foreground (CLI), and the
``config`` helpers edit the configuration. Imports are lazy so that ``import estkit.server`` stays
cheap for callers that only need one of them.

This package namespace is the server's public API: the web console (and any other caller above
the server layer) uses these names only, never a server submodule, so the server's internals can
change freely (an import-linter contract in pyproject.toml holds the console to it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from estkit._lazy import lazy_exports

if TYPE_CHECKING:
    from estkit.server.approval import Verdict as Verdict
    from estkit.server.approval import approve_if_allowed as approve_if_allowed
    from estkit.server.approval import judge as judge
    from estkit.server.config import CONFIG_FILE_NAME as CONFIG_FILE_NAME
    from estkit.server.config import CertificatePair as CertificatePair
    from estkit.server.config import ConfigError as ConfigError
    from estkit.server.config import ServerConfig as ServerConfig
    from estkit.server.config import add_label as add_label
    from estkit.server.config import add_trusted_client_root as add_trusted_client_root
    from estkit.server.config import add_user as add_user
    from estkit.server.config import load_config as load_config
    from estkit.server.config import save_config as save_config
    from estkit.server.datadir import DataDirExistsError as DataDirExistsError
    from estkit.server.datadir import InitResult as InitResult
    from estkit.server.datadir import init_data_dir as init_data_dir
    from estkit.server.guard import ConnectionGuard as ConnectionGuard
    from estkit.server.guard import GuardedSite as GuardedSite
    from estkit.server.limits import ConnectionLimits as ConnectionLimits
    from estkit.server.limits import connection_budget as connection_budget
    from estkit.server.limits import within_budget as within_budget
    from estkit.server.revocation import revoke_certificate as revoke_certificate
    from estkit.server.runner import LISTEN_BACKLOG as LISTEN_BACKLOG
    from estkit.server.runner import RunningServer as RunningServer
    from estkit.server.runner import ServerInfo as ServerInfo
    from estkit.server.runner import serve as serve
    from estkit.server.runner import start_server_thread as start_server_thread
    from estkit.server.runner import url_host as url_host
    from estkit.server.tls import build_server_context as build_server_context

if not TYPE_CHECKING:  # Python reads the names from the imports above, lazily
    __getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
