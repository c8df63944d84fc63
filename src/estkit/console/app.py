"""The console's aiohttp application factory.

See :mod:`~estkit.console.middleware` for the request pipeline and
:mod:`~estkit.console.handlers` for the pages.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable, Sequence
from pathlib import Path

from aiohttp import web
from cryptography import x509

from estkit.ca.store import open_store
from estkit.console import auth, handlers
from estkit.console.admin_ca import ensure_admin_ca
from estkit.console.backend import ConsoleBackend
from estkit.console.context import (
    ALLOWED_HOSTS_KEY,
    BACKEND_KEY,
    CLOCK_KEY,
    CSRF_KEY,
    DEFAULT_POLL_MS,
    MAX_FORM_BYTES,
    OPERATORS_CA_KEY,
    POLL_KEY,
    SESSIONS_KEY,
    TOKEN_KEY,
)
from estkit.console.middleware import MIDDLEWARES
from estkit.server import url_host

# Names that always mean this machine: a browser never asks DNS for them, so no attacker can
# point them elsewhere (RFC 6761 section 6.3 for "localhost"; the others are literals).
LOOPBACK_HOST_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _listens_on_loopback(bind_host: str) -> bool:
    """True for a loopback address, and for the wildcard addresses (which include loopback)."""
    try:
        address = ipaddress.ip_address(bind_host.strip("[]"))
    except ValueError:
        return bind_host.lower() == "localhost"
    return address.is_loopback or address.is_unspecified


def console_url_host(bind_host: str, tls_certificates: Sequence[Path]) -> str:
    """The host name for the console's URLs when it listens on ``bind_host``.

    Why: the server certificate the console presents names DNS names only (BCP-003-01 T4), so a
    console bound to 127.0.0.1 must be reached as ``localhost``: a URL with the address fails
    hostname verification in every client. Other bind addresses are shown as they are; the
    operator chose them and knows which name reaches them.
    """
    bind_host = bind_host.strip("[]")
    if not tls_certificates or not _listens_on_loopback(bind_host):
        return bind_host
    return url_host(bind_host, Path(tls_certificates[0]))


def allowed_hosts(bind_host: str, tls_names: list[str]) -> frozenset[str]:
    """Host names a browser may use to reach the console; anything else is refused as a
    DNS-rebinding attempt (a name the attacker controls, resolving to the console's address).

    Why each entry is safe:

    * the names in the server's TLS certificates: the console's URL uses one of them
      (:func:`console_url_host`), and only the operator decides what they resolve to;
    * the bound address itself: an address literal is not looked up in DNS, so an attacker
      cannot make a browser send it for a page of theirs;
    * for a console on loopback, ``localhost`` and the loopback literals, which a browser never
      resolves through DNS either.
    """
    bind_host = bind_host.strip("[]").lower()
    names = {bind_host, *(name.lower() for name in tls_names)}
    if _listens_on_loopback(bind_host):
        names.update(LOOPBACK_HOST_NAMES)
    return frozenset(names)


def make_console_app(
    data_dir: Path,
    *,
    token: str | None = None,
    host: str = "127.0.0.1",
    poll_ms: int = DEFAULT_POLL_MS,
    token_operator: str = auth.DEFAULT_TOKEN_OPERATOR,
    clock: Callable[[], dt.datetime] | None = None,
) -> web.Application:
    """Build the console for the server data directory ``data_dir``.

    ``token`` is the start-up sign-in token (a random one when None; read it back from
    ``app[TOKEN_KEY]``): single-use, valid 10 minutes, for ``token_operator`` only.
    ``clock`` gives the time for token expiry (tests inject one). ``host`` is the address the
    console listens on, added to the accepted Host names.
    """
    data_dir = Path(data_dir).absolute()
    backend = ConsoleBackend(data_dir)
    operators_ca_path = ensure_admin_ca(data_dir)
    operators_ca = x509.load_pem_x509_certificate(operators_ca_path.read_bytes())
    app = web.Application(
        middlewares=list(MIDDLEWARES),
        client_max_size=MAX_FORM_BYTES,
    )
    app[BACKEND_KEY] = backend
    app[SESSIONS_KEY] = auth.SessionStore()
    app[CSRF_KEY] = auth.CsrfGuard.create()
    clock = clock or (lambda: dt.datetime.now(dt.UTC))
    app[CLOCK_KEY] = clock
    # The start-up token: single-use, 10 minutes, for ``token_operator`` like any other token.
    with open_store(backend.config.database_url) as store:
        app[TOKEN_KEY] = auth.issue_login_token(store, token_operator, token=token, now=clock())
    app[OPERATORS_CA_KEY] = operators_ca
    app[ALLOWED_HOSTS_KEY] = allowed_hosts(host, tls_host_names(backend))
    app[POLL_KEY] = poll_ms
    app.router.add_get("/login", handlers.login)
    app.router.add_post("/logout", handlers.logout)
    app.router.add_get("/", handlers.dashboard)
    app.router.add_get("/requests", handlers.requests_page)
    app.router.add_post(r"/requests/{id:\d{1,18}}/{action:approve|reject}", handlers.decide_request)
    app.router.add_get("/certificates", handlers.certificates_page)
    app.router.add_get(
        r"/certificates/{serial:[0-9A-Fa-f]{1,64}}.pem", handlers.download_certificate
    )
    app.router.add_post(
        r"/certificates/{serial:[0-9A-Fa-f]{1,64}}/revoke", handlers.revoke_certificate
    )
    app.router.add_get("/ca", handlers.ca_page)
    app.router.add_get("/ca/cacerts.pem", handlers.download_cacerts)
    app.router.add_get(r"/ca/certificates/{index:\d{1,3}}.pem", handlers.download_ca_certificate)
    app.router.add_get(r"/ca/crl.{fmt:pem|der}", handlers.download_crl)
    app.router.add_get("/static/{name}", handlers.static_file)

    async def close_backend(_app: web.Application) -> None:
        await backend.close()

    app.on_cleanup.append(close_backend)
    return app


def tls_host_names(backend: ConsoleBackend) -> list[str]:
    """DNS names and IP addresses in the server's TLS certificates (what browsers may type)."""
    names: list[str] = []
    for pair in backend.config.tls_certificates:
        try:
            cert = x509.load_pem_x509_certificates(Path(pair.certificate).read_bytes())[0]
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (OSError, ValueError, IndexError, x509.ExtensionNotFound):
            continue
        names += san.get_values_for_type(x509.DNSName)
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return names
