"""estkit.server: the EST server (RFC 7030 / BCP-003-03) with its own CA.

Library entry points: :func:`init_data_dir` makes a data directory, :func:`start_server_thread`
runs the server in the background (tests, demos), :func:`serve` in the foreground (CLI), and the
``config`` helpers edit the configuration. Imports are lazy so that ``import estkit.server`` stays
cheap for callers that only need one of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from estkit._lazy import lazy_exports

if TYPE_CHECKING:
    from estkit.server.config import (
        ConfigError,
        ServerConfig,
        add_label,
        add_trusted_client_root,
        add_user,
        load_config,
        save_config,
    )
    from estkit.server.datadir import DataDirExistsError, InitResult, init_data_dir
    from estkit.server.runner import RunningServer, ServerInfo, serve, start_server_thread

# name -> submodule: each name's module is imported the first time the name is read.
_EXPORTS: dict[str, str] = {
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
    "ConfigError",
    "DataDirExistsError",
    "InitResult",
    "RunningServer",
    "ServerConfig",
    "ServerInfo",
    "add_label",
    "add_trusted_client_root",
    "add_user",
    "init_data_dir",
    "load_config",
    "save_config",
    "serve",
    "start_server_thread",
]

if not TYPE_CHECKING:  # type checkers read the imports above; Python runs this
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
