"""The operator web console of the estkit EST server (approvals, certificates, revocation, CA).

Mounted by ``estkit server serve --admin-port N`` as a separate HTTPS listener; see
:func:`start_console_site`. Operators sign in with a certificate from
:func:`issue_admin_certificate` or with the token printed at start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from estkit._lazy import lazy_exports

if TYPE_CHECKING:
    from estkit.console.admin_ca import (
        Operator,
        OperatorCertificateError,
        export_pkcs12,
        issue_admin_certificate,
    )
    from estkit.console.app import make_console_app
    from estkit.console.runner import (
        ConsoleHandle,
        ConsoleSettings,
        ConsoleSite,
        ConsoleStartError,
        console_settings,
        console_ssl_context,
        start_console,
        start_console_site,
    )

# name -> submodule: each name's module is imported the first time the name is read.
_EXPORTS: dict[str, str] = {
    "ConsoleHandle": "runner",
    "ConsoleSettings": "runner",
    "ConsoleSite": "runner",
    "ConsoleStartError": "runner",
    "Operator": "admin_ca",
    "OperatorCertificateError": "admin_ca",
    "console_settings": "runner",
    "console_ssl_context": "runner",
    "export_pkcs12": "admin_ca",
    "issue_admin_certificate": "admin_ca",
    "make_console_app": "app",
    "start_console": "runner",
    "start_console_site": "runner",
}


__all__ = [
    "ConsoleHandle",
    "ConsoleSettings",
    "ConsoleSite",
    "ConsoleStartError",
    "Operator",
    "OperatorCertificateError",
    "console_settings",
    "console_ssl_context",
    "export_pkcs12",
    "issue_admin_certificate",
    "make_console_app",
    "start_console",
    "start_console_site",
]

if not TYPE_CHECKING:  # type checkers read the imports above; Python runs this
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
