"""The DNS resolver DNS-SD lookups (RFC 6763) ask: the system's, or one named DNS server.

Why a module of its own: the NMOS node's discovery (:mod:`estkit.nmos.discovery`) and the
conformance suite's DNS checks (:mod:`estkit.conformance.dnssd`) both set one up; they may not
import each other (same layer), and the suite imports no EST client code (it must see a server
only as any client would, issue 5), so the home sits below ``client``, beside ``tlsbind``. Each
caller translates :class:`DnsServerError` into its own error.
dnspython is imported on first use: a node configured with a host never asks DNS, and importing
the resolver costs ~40 ms of every start (issue 23).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from estkit.errors import EstkitError

if TYPE_CHECKING:
    import dns.resolver

DNS_TIMEOUT_SECONDS = 3.0
"""Per query: a LAN DNS server answers in milliseconds; three seconds covers a lost packet and its
retry without leaving a booting device (or a conformance run) stuck for long."""


class DnsServerError(EstkitError):
    """No resolver can be set up: the system names no DNS server, or the named one's host name
    does not resolve."""


def make_resolver(
    server: tuple[str, int] | None, timeout: float = DNS_TIMEOUT_SECONDS
) -> dns.resolver.Resolver:
    """A resolver for the system's DNS servers, or only for ``server`` (host, port) when given;
    ``timeout`` bounds each query and its retries."""
    import dns.resolver

    if server is None:
        try:
            resolver = dns.resolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            raise DnsServerError(
                "the system has no DNS server configured",
                hint="name the DNS server to ask",
                params=("dns_server",),
            ) from None
    else:
        host, port = server
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise DnsServerError(
                f"cannot resolve DNS server {host!r}: {exc.strerror}",
                hint="give the DNS server as an IP address",
                params=("dns_server",),
            ) from None
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [str(infos[0][4][0])]
        resolver.port = port
    resolver.lifetime = timeout
    resolver.timeout = timeout
    return resolver
