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
    from estkit.server.approval import Verdict, approve_if_allowed, judge
    from estkit.server.config import (
        CONFIG_FILE_NAME,
        ConfigError,
        ServerConfig,
        add_label,
        add_trusted_client_root,
        add_user,
        load_config,
        save_config,
    )
    from estkit.server.datadir import DataDirExistsError, InitResult, init_data_dir
    from estkit.server.guard import ConnectionGuard, GuardedSite
    from estkit.server.limits import ConnectionLimits, connection_budget, within_budget
    from estkit.server.revocation import revoke_certificate
    from estkit.server.runner import (
        LISTEN_BACKLOG,
        RunningServer,
        ServerInfo,
        serve,
        start_server_thread,
        url_host,
    )
    from estkit.server.tls import CertificatePair, build_server_context

# name -> submodule: each name's module is imported the first time the name is read.
_EXPORTS: dict[str, str] = {
    "ConnectionGuard": "guard",
    "GuardedSite": "guard",
    "ConnectionLimits": "limits",
    "connection_budget": "limits",
    "within_budget": "limits",
    "LISTEN_BACKLOG": "runner",
    "Verdict": "approval",
    "approve_if_allowed": "approval",
    "judge": "approval",
    "CONFIG_FILE_NAME": "config",
    "CertificatePair": "tls",
    "build_server_context": "tls",
    "revoke_certificate": "revocation",
    "url_host": "runner",
    "ConfigError": "config",
    "DataDirExistsError": "datadir",
    "InitResult": "datadir",
    "RunningServer": "runner",
    "ServerConfig": "config",
    "ServerInfo": "runner",
    "add_label": "config",
    "add_trusted_client_root": "config",
    "add_user": "config",
    "init_data_dir": "datadir",
    "load_config": "config",
    "save_config": "config",
    "serve": "runner",
    "start_server_thread": "runner",
}

__all__ = [
    "CONFIG_FILE_NAME",
    "LISTEN_BACKLOG",
    "CertificatePair",
    "ConfigError",
    "ConnectionGuard",
    "ConnectionLimits",
    "DataDirExistsError",
    "GuardedSite",
    "InitResult",
    "RunningServer",
    "ServerConfig",
    "ServerInfo",
    "Verdict",
    "add_label",
    "add_trusted_client_root",
    "add_user",
    "approve_if_allowed",
    "build_server_context",
    "connection_budget",
    "init_data_dir",
    "judge",
    "load_config",
    "revoke_certificate",
    "save_config",
    "serve",
    "start_server_thread",
    "url_host",
    "within_budget",
]

if not TYPE_CHECKING:  # type checkers read the imports above; Python runs this
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
