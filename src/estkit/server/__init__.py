"""estkit.server: the EST server (RFC 7030 / BCP-003-03) with its own CA.

Library entry points: :func:`init_data_dir` makes a data directory, :func:`start_server_thread`
runs the server in the background (tests, demos), :func:`serve` in the foreground (CLI), and the
``config`` helpers edit the configuration. Imports are lazy so that ``import estkit.server`` stays
cheap for callers that only need one of them.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "InitResult": "estkit.server.datadir",
    "DataDirExistsError": "estkit.server.datadir",
    "init_data_dir": "estkit.server.datadir",
    "ServerConfig": "estkit.server.config",
    "ConfigError": "estkit.server.config",
    "load_config": "estkit.server.config",
    "save_config": "estkit.server.config",
    "add_label": "estkit.server.config",
    "add_user": "estkit.server.config",
    "add_trusted_client_root": "estkit.server.config",
    "RunningServer": "estkit.server.runner",
    "ServerInfo": "estkit.server.runner",
    "start_server_thread": "estkit.server.runner",
    "serve": "estkit.server.runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'estkit.server' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
