"""estkit.dnsresolver: one DNS resolver setup, shared by the node's discovery and the suite."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest

from estkit.conformance import dnssd
from estkit.conformance.dnssd import DnsSdError
from estkit.dnsresolver import DnsServerError, make_resolver
from estkit.nmos import discovery
from estkit.nmos.errors import DiscoveryError

MAKERS: list[Callable[..., Any]] = [dnssd.make_resolver, discovery.make_resolver]


@pytest.mark.parametrize("make", MAKERS, ids=["suite", "node"])
@pytest.mark.parametrize(
    ("server", "address", "port"),
    [("127.0.0.1:5353", "127.0.0.1", 5353), ("[::1]", "::1", 53), ("::1", "::1", 53)],
)
def test_node_and_suite_ask_the_named_server_only(
    make: Callable[..., Any], server: str, address: str, port: int
) -> None:
    resolver = make(server, 0.5)
    assert (resolver.nameservers, resolver.port) == ([address], port)
    assert resolver.timeout == resolver.lifetime == 0.5


def _unresolvable(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """getaddrinfo refusing every name, as for a DNS server named by a host nobody knows."""
    asked: list[str] = []

    def refuse(host: str, *_args: object, **_kwargs: object) -> list[Any]:
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return asked


def test_an_unresolvable_dns_server_is_one_error_each_caller_translates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked = _unresolvable(monkeypatch)
    message = "cannot resolve DNS server 'dns.example': Name or service not known"
    with pytest.raises(DnsServerError) as shared:
        make_resolver(("dns.example", 53))
    assert str(shared.value) == message
    assert shared.value.hint == "give the DNS server as an IP address"
    assert shared.value.params == ("dns_server",)
    with pytest.raises(DnsSdError) as suite:
        dnssd.make_resolver("dns.example")
    assert str(suite.value) == message
    with pytest.raises(DiscoveryError) as node:
        discovery.make_resolver("dns.example:5353")
    assert str(node.value) == message and node.value.hint == "give the DNS server as an IP address"
    assert asked == ["dns.example"] * 3


def test_the_suite_reads_its_dns_timeout_at_each_browse(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test (or an embedding program) that shortens the timeout gets it, not the import-time
    value."""
    monkeypatch.setattr(dnssd, "DNS_TIMEOUT_SECONDS", 0.25)
    assert dnssd.make_resolver("127.0.0.1").timeout == 0.25
