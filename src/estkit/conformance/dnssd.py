"""What the DNS says about the server under test: its ``_nmos-certs._tcp`` adverts (D1-D5).

Why not :mod:`estkit.nmos.discovery`: that module *chooses* a server for a node and drops broken
adverts with a warning; the suite must *judge* each advert, broken ones included, and conformance
may not import the nmos package (same layer). Both use dnspython and the same record semantics.
Every query goes to the DNS server given (unicast DNS-SD, RFC 6763), or the system's resolver.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import dns.exception
import dns.rdata
import dns.resolver
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.SRV import SRV

from estkit.dnsresolver import DNS_TIMEOUT_SECONDS, DnsServerError
from estkit.dnsresolver import make_resolver as resolver_for
from estkit.errors import EstkitError
from estkit.protocol.paths import split_host_port

SERVICE_TYPE = "_nmos-certs._tcp"
MDNS_SERVICE_TYPE = SERVICE_TYPE + ".local."
MDNS_BROWSE_SECONDS = 3.0
"""How long to listen for multicast answers: responders answer within a second on a LAN; the
same window ``estkit.nmos.discovery`` uses."""
DNS_PORT = 53


MAX_ADVERTS = 64
"""Instances looked at: RFC 6763 sets no limit, a hostile zone must not make us resolve
thousands of names (nmos.discovery uses the same bound)."""

BROWSE_BUDGET_SECONDS = 20.0
"""The whole browse: a hostile or dying DNS server answering each of 64 instances' four queries
just before the per-query timeout must not hold the suite for many minutes."""

MAX_TXT_BYTES = 1300
"""TXT data kept per instance: RFC 6763 §6.2 recommends at most 1300 bytes for a DNS-SD TXT."""


class DnsSdError(EstkitError):
    """The DNS server could not be asked (unreachable, timeout, SERVFAIL)."""


@dataclass(frozen=True)
class Advert:
    """One service instance as the DNS serves it (nothing dropped, nothing fixed)."""

    instance: str
    srv_target: str | None = None
    srv_port: int | None = None
    txt: dict[str, str] | None = None  # None: no TXT record at all
    addresses: tuple[str, ...] = ()  # A/AAAA of the SRV target
    problems: tuple[str, ...] = ()  # what could not be read (several SRV, bad TXT...)


@dataclass
class DnsView:
    """The browse of ``_nmos-certs._tcp.<domain>`` (or ``.local.`` over mDNS)."""

    service: str
    where: str
    multicast: bool = False
    instances: list[str] = field(default_factory=list)
    adverts: list[Advert] = field(default_factory=list)
    error: str | None = None

    def evidence(self) -> dict[str, object]:
        return {
            "service": self.service,
            "dns_server": self.where,
            "instances": self.instances,
            "adverts": [
                {
                    "instance": a.instance,
                    "srv": f"{a.srv_target}:{a.srv_port}" if a.srv_target else None,
                    "txt": a.txt,
                    "addresses": list(a.addresses),
                }
                for a in self.adverts
            ],
            **({"error": self.error} if self.error else {}),
        }


def parse_server(value: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT`` or ``[V6]:PORT`` of a DNS server (port 53 by default)."""
    return split_host_port(value, DNS_PORT)


def make_resolver(server: str | None, timeout: float | None = None) -> dns.resolver.Resolver:
    """The system's resolver, or one asking only ``server`` (``HOST[:PORT]``); each query
    waits ``timeout`` or :data:`DNS_TIMEOUT_SECONDS` (read at the call, so a test may shorten
    it)."""
    try:
        return resolver_for(
            None if server is None else parse_server(server),
            DNS_TIMEOUT_SECONDS if timeout is None else timeout,
        )
    except DnsServerError as exc:
        raise DnsSdError(str(exc)) from None


_Record = TypeVar("_Record", bound=dns.rdata.Rdata)


class _Lookup:
    def __init__(self, resolver: dns.resolver.Resolver) -> None:
        self.resolver = resolver

    @property
    def where(self) -> str:
        servers = ", ".join(str(ns) for ns in self.resolver.nameservers)
        return f"{servers} port {self.resolver.port}"

    def query(self, name: str, rdtype: str, kind: type[_Record]) -> list[_Record]:
        try:
            answer = self.resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.LifetimeTimeout):
            raise DnsSdError(f"DNS server {self.where} did not answer {rdtype} {name}") from None
        except dns.exception.DNSException as exc:
            raise DnsSdError(f"DNS {rdtype} query for {name} failed: {exc}") from None
        if answer.rrset is None:
            return []
        return [record for record in answer.rrset if isinstance(record, kind)]

    def addresses(self, host: str) -> tuple[str, ...]:
        found: list[str] = []
        for rdtype in ("A", "AAAA"):
            found += [record.to_text() for record in self.query(host, rdtype, dns.rdata.Rdata)]
        return tuple(found)


def parse_txt(strings: list[bytes]) -> tuple[dict[str, str], list[str]]:
    """RFC 6763 §6 key=value strings (keys case-insensitive, first occurrence wins)."""
    values: dict[str, str] = {}
    problems: list[str] = []
    total = 0
    for raw in strings:
        total += len(raw)
        if total > MAX_TXT_BYTES:
            problems.append(f"TXT longer than {MAX_TXT_BYTES} bytes; the rest was ignored")
            break
        text = raw.decode("utf-8", "replace")
        key, sep, value = text.partition("=")
        key = key.strip().lower()
        if not key:
            continue
        values.setdefault(key, value if sep else "")
    return values, problems


def browse(domain: str, server: str | None) -> DnsView:
    """All adverts under ``_nmos-certs._tcp.<domain>``; raises :class:`DnsSdError` only when
    the DNS server cannot be asked at all."""
    lookup = _Lookup(make_resolver(server))
    service = f"{SERVICE_TYPE}.{domain.strip().rstrip('.')}."
    view = DnsView(service=service, where=lookup.where)
    pointers = lookup.query(service, "PTR", PTR)
    view.instances = [p.target.to_text() for p in pointers[:MAX_ADVERTS]]
    _read_instances(view, lambda instance: _instance(lookup, instance), "the DNS server")
    return view


def _read_instances(view: DnsView, read: Callable[[str], Advert], answering: str) -> None:
    """Each of ``view.instances`` read into ``view.adverts`` within the browse budget; when the
    budget runs out (``answering`` took too long), ``view.error`` says how many were read."""
    deadline = time.monotonic() + BROWSE_BUDGET_SECONDS
    for index, instance in enumerate(view.instances):
        if time.monotonic() > deadline:
            view.error = (
                f"{answering} took over {BROWSE_BUDGET_SECONDS:g} s; only {index} of "
                f"{len(view.instances)} instances were read"
            )
            return
        view.adverts.append(read(instance))


def _instance(lookup: _Lookup, instance: str) -> Advert:
    problems: list[str] = []
    srvs = lookup.query(instance, "SRV", SRV)
    if len(srvs) > 1:
        problems.append(f"{len(srvs)} SRV records; the first is judged")
    target = port = None
    addresses: tuple[str, ...] = ()
    if srvs:
        record = srvs[0]
        target = record.target.to_text().rstrip(".")
        port = int(record.port)
        addresses = lookup.addresses(target) if target else ()
    txts = lookup.query(instance, "TXT", TXT)
    txt: dict[str, str] | None = None
    if txts:
        txt, txt_problems = parse_txt(list(txts[0].strings))
        problems += txt_problems
    return Advert(instance.rstrip("."), target, port, txt, addresses, tuple(problems))


def points_at(advert: Advert, host: str, port: int) -> bool:
    """Whether ``advert`` leads to ``host:port`` (by name, or by one of the target's addresses)."""
    if advert.srv_port != port or advert.srv_target is None:
        return False
    if advert.srv_target.lower() == host.lower().rstrip("."):
        return True
    try:
        wanted = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(ipaddress.ip_address(a) == wanted for a in advert.addresses)


def browse_mdns(seconds: float = MDNS_BROWSE_SECONDS, interfaces: tuple[str, ...] = ()) -> DnsView:
    """All ``_nmos-certs._tcp.local.`` adverts answered over multicast DNS within ``seconds``."""
    from zeroconf import ServiceBrowser, ServiceListener, Zeroconf

    names: list[str] = []

    class _Listener(ServiceListener):
        def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            if name not in names and len(names) < MAX_ADVERTS:
                names.append(name)

        def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            self.add_service(zc, type_, name)

        def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            pass  # judged as seen during the window

    where = "mDNS on " + (", ".join(interfaces) if interfaces else "all interfaces")
    view = DnsView(service=MDNS_SERVICE_TYPE, where=where, multicast=True)
    try:
        zeroconf = Zeroconf(interfaces=list(interfaces)) if interfaces else Zeroconf()
    except OSError as exc:
        raise DnsSdError(f"cannot listen for multicast DNS: {exc}") from None
    try:
        browser = ServiceBrowser(zeroconf, MDNS_SERVICE_TYPE, _Listener())
        try:
            time.sleep(seconds)  # the whole window: later answers count too
        finally:
            browser.cancel()
        view.instances = list(names)

        def read(name: str) -> Advert:
            info = zeroconf.get_service_info(MDNS_SERVICE_TYPE, name, timeout=int(seconds * 1000))
            if info is None or not info.server:
                return Advert(name.rstrip("."), problems=("no SRV data answered",))
            strings = [
                key + (b"=" + value if value is not None else b"")
                for key, value in info.properties.items()
            ]
            txt, problems = parse_txt(strings) if info.properties else (None, [])
            return Advert(
                name.rstrip("."),
                info.server.rstrip("."),
                int(info.port or 0),
                txt,
                tuple(info.parsed_addresses()),
                tuple(problems),
            )

        _read_instances(view, read, "mDNS answers")
    finally:
        zeroconf.close()
    return view
