"""The operator web console of the estkit EST server (approvals, certificates, revocation, CA).

Mounted by ``estkit server serve --admin-port N`` as a separate HTTPS listener; see
:func:`start_console_site`. Operators sign in with a certificate from
:func:`issue_admin_certificate` or with the token printed at start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from estkit._lazy import lazy_exports

if TYPE_CHECKING:
    from estkit.console.admin_ca import Operator as Operator
    from estkit.console.admin_ca import OperatorCertificateError as OperatorCertificateError
    from estkit.console.admin_ca import export_pkcs12 as export_pkcs12
    from estkit.console.admin_ca import issue_admin_certificate as issue_admin_certificate
    from estkit.console.app import make_console_app as make_console_app
    from estkit.console.runner import ConsoleHandle as ConsoleHandle
    from estkit.console.runner import ConsoleSettings as ConsoleSettings
    from estkit.console.runner import ConsoleSite as ConsoleSite
    from estkit.console.runner import ConsoleStartError as ConsoleStartError
    from estkit.console.runner import console_settings as console_settings
    from estkit.console.runner import console_ssl_context as console_ssl_context
    from estkit.console.runner import start_console as start_console
    from estkit.console.runner import start_console_site as start_console_site

if not TYPE_CHECKING:  # Python reads the names from the imports above, lazily
    __getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
