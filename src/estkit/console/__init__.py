"""The operator web console of the estkit EST server (approvals, certificates, revocation, CA).

Mounted by ``estkit server serve --admin-port N`` as a separate HTTPS listener; see
:func:`start_console_site`. Operators sign in with a certificate from
:func:`issue_admin_certificate` or with the token printed at start.
"""

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
