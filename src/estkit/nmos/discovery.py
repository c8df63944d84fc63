"""Finding the network's EST server by DNS-SD (BCP-003-03 D1-D5).

Unicast DNS-SD (RFC 6763) is the required mechanism (D5): PTR ``_nmos-certs._tcp.<domain>``
lists service instances, each instance's SRV gives host and port (D2), its TXT gives ``pri`` (D3,
required) and ``api_selector`` (D4, the EST label), and the SRV target's A/AAAA records must
exist (D2).
Multicast DNS is only consulted when the operator asks for it, because D1 forbids trusting an mDNS
advert by default: anyone on the link can answer multicast queries.

The result is an ordered list: lowest ``pri`` first, ties shuffled so a fleet of nodes spreads over
equal servers, development servers (``pri`` >= 100) dropped unless allowed. Problems with one advert
never hide the others: they become warnings and that advert is skipped.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar

from estkit.dnsresolver import DNS_TIMEOUT_SECONDS, DnsServerError
from estkit.dnsresolver import make_resolver as resolver_for
from estkit.nmos.config import parse_host_port
from estkit.nmos.errors import DiscoveryError, NodeConfigError
from estkit.protocol.errors import PathError
from estkit.protocol.paths import WELL_KNOWN_EST, validate_label

if TYPE_CHECKING:
    import dns.rdata
    import dns.resolver

# dnspython (and zeroconf) are imported inside the functions that query DNS: a node configured
# with --ip never browses, and importing the resolver costs ~40 ms of every start (issue 23).

SERVICE_TYPE = "_nmos-certs._tcp"
MDNS_SERVICE_TYPE = SERVICE_TYPE + ".local."
# D3: priorities 0-99 are production servers; 100 and above are for development only.
DEV_PRIORITY_THRESHOLD = 100
DNS_PORT = 53
# How long to listen for mDNS answers (only with --mdns).
MDNS_BROWSE_SECONDS = 3.0
# RFC 6763 allows any number of instances; a sane bound stops a hostile zone from making us
# resolve thousands of names.
MAX_ADVERTS = 64


@dataclass(frozen=True)
class ServerAdvert:
    """One usable advert: where to reach an EST server and with which label."""

    instance: str
    host: str
    port: int
    priority: int
    label: str | None = None
    addresses: tuple[str, ...] = ()
    source: Literal["unicast", "mdns", "manual"] = "unicast"

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def est_url(self) -> str:
        """``https://host:port/.well-known/est/[label/]`` (D2, D4)."""
        suffix = f"{self.label}/" if self.label else ""
        return f"{self.base_url}{WELL_KNOWN_EST}/{suffix}"

    def describe(self) -> str:
        label = f" label {self.label}" if self.label else ""
        if self.source == "manual":
            return f"{self.host}:{self.port}{label}"
        return f"{self.host}:{self.port}{label} (pri {self.priority}, {self.source})"


@dataclass
class DiscoveryResult:
    adverts: list[ServerAdvert]
    warnings: list[str] = field(default_factory=list)
    domain: str | None = None


def parse_txt(strings: Iterable[bytes]) -> dict[str, str]:
    """RFC 6763 §6.3-6.4 key/value pairs: keys case-insensitive, first occurrence wins."""
    pairs: dict[str, str] = {}
    for raw in strings:
        text = raw.decode("utf-8", errors="replace")
        key, sep, value = text.partition("=")
        key = key.strip().lower()
        if not key or key in pairs:
            continue
        pairs[key] = value if sep else ""
    return pairs


def advert_from_txt(
    instance: str,
    host: str,
    port: int,
    txt: Mapping[str, str],
    addresses: tuple[str, ...],
    source: Literal["unicast", "mdns", "manual"],
    warnings: list[str],
) -> ServerAdvert | None:
    """Apply D3/D4 to one instance's TXT data; None (plus a warning) when it must be ignored."""
    pri_text = txt.get("pri")
    if pri_text is None:
        warnings.append(f"ignored {instance}: TXT record has no 'pri' (required by BCP-003-03 D3)")
        return None
    try:
        priority = int(pri_text.strip())
    except ValueError:
        priority = -1
    if priority < 0 or not pri_text.strip().isdigit():
        warnings.append(
            f"ignored {instance}: TXT 'pri={pri_text}' is not a non-negative integer (D3)"
        )
        return None
    label = txt.get("api_selector") or None
    if label is not None:
        try:
            label = validate_label(label)
        except (PathError, ValueError) as exc:
            warnings.append(
                f"ignored {instance}: api_selector {label!r} is not a valid label: {exc}"
            )
            return None
    return ServerAdvert(
        instance=instance,
        host=host.rstrip("."),
        port=port,
        priority=priority,
        label=label,
        addresses=addresses,
        source=source,
    )


def order_adverts(
    adverts: Iterable[ServerAdvert],
    *,
    allow_dev_servers: bool = False,
    rng: random.Random | None = None,
    warnings: list[str] | None = None,
) -> list[ServerAdvert]:
    """Lowest ``pri`` first, equal ``pri`` in random order, dev servers only if allowed (D3)."""
    chooser = rng or random.Random()
    groups: dict[int, list[ServerAdvert]] = {}
    for advert in adverts:
        if advert.priority >= DEV_PRIORITY_THRESHOLD and not allow_dev_servers:
            if warnings is not None:
                warnings.append(
                    f"ignored {advert.instance}: pri {advert.priority} marks a development server"
                    " (to try it: allow_dev_servers)"
                )
            continue
        groups.setdefault(advert.priority, []).append(advert)
    ordered: list[ServerAdvert] = []
    for priority in sorted(groups):
        group = groups[priority]
        chooser.shuffle(group)
        ordered.extend(group)
    return ordered


def system_search_domain() -> str | None:
    """The first search domain (or ``domain``) of the system resolver configuration."""
    import dns.resolver

    try:
        resolver = dns.resolver.Resolver()
    except (dns.resolver.NoResolverConfiguration, OSError):
        return None
    for name in [*resolver.search, resolver.domain]:
        text = name.to_text(omit_final_dot=True) if name is not None else ""
        if text and text != "@":
            return text
    return None


def make_resolver(
    dns_server: str | None, timeout: float = DNS_TIMEOUT_SECONDS
) -> dns.resolver.Resolver:
    """A resolver for the system's DNS servers, or only for ``HOST[:PORT]`` when given."""
    server = None if dns_server is None else parse_host_port(dns_server, DNS_PORT)
    try:
        return resolver_for(server, timeout)
    except DnsServerError as exc:
        if server is None:
            raise DiscoveryError(
                str(exc),
                hint="name the DNS server to ask, or configure the EST server by hand",
                params=("dns_server", "server"),
            ) from None
        raise DiscoveryError(str(exc), hint=exc.hint) from None


_Record = TypeVar("_Record", bound="dns.rdata.Rdata")


class _Lookup:
    """DNS queries with the error translation every step of discovery needs."""

    def __init__(self, resolver: dns.resolver.Resolver) -> None:
        self.resolver = resolver

    def where(self) -> str:
        servers = ", ".join(str(ns) for ns in self.resolver.nameservers)
        return f"DNS server {servers} port {self.resolver.port}"

    def query(self, name: str, rdtype: str, kind: type[_Record]) -> list[_Record]:
        """Records of ``rdtype`` (dnspython class ``kind``) at ``name``; empty when the name or
        type does not exist."""
        import dns.exception
        import dns.resolver

        try:
            answer = self.resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.resolver.NoNameservers as exc:
            raise DiscoveryError(
                f"{self.where()} failed to answer {rdtype} {name}: {exc}",
                hint="check the DNS server and its zone",
            ) from None
        except (dns.exception.Timeout, dns.resolver.LifetimeTimeout):
            raise DiscoveryError(
                f"{self.where()} did not answer the {rdtype} query for {name}",
                hint="check that the DNS server is running and reachable",
                params=("dns_server",),
            ) from None
        except dns.exception.DNSException as exc:
            raise DiscoveryError(f"DNS {rdtype} query for {name} failed: {exc}") from None
        if answer.rrset is None:
            return []
        return [record for record in answer.rrset if isinstance(record, kind)]


def discover_unicast(
    domain: str | None = None,
    *,
    dns_server: str | None = None,
    allow_dev_servers: bool = False,
    rng: random.Random | None = None,
    resolver: dns.resolver.Resolver | None = None,
) -> DiscoveryResult:
    """Unicast DNS-SD browse of ``_nmos-certs._tcp.<domain>`` (D1-D5), best advert first.

    Raises :class:`DiscoveryError` when the DNS server cannot be asked, or when it answers but no
    advert is usable; the error then lists why each advert was ignored.
    """
    search_domain = (domain or system_search_domain() or "").strip().rstrip(".")
    if not search_domain:
        # A configuration problem: retrying cannot help, so it is not a DiscoveryError.
        raise NodeConfigError(
            "no DNS domain to search for EST servers",
            hint="name the DNS domain (e.g. example.com) or set a search domain on the system",
            params=("domain",),
        )
    from dns.rdtypes.ANY.PTR import PTR  # dnspython loads only when DNS is asked (issue 23)

    lookup = _Lookup(resolver or make_resolver(dns_server))
    service = f"{SERVICE_TYPE}.{search_domain}."
    warnings: list[str] = []
    pointers = lookup.query(service, "PTR", PTR)
    if not pointers:
        raise DiscoveryError(
            f"no PTR records for {service} at {lookup.where()}",
            hint="no EST server is advertised: check the zone and the domain, or name the EST "
            "server's host and port",
            params=("domain", "server"),
        )
    candidates: list[ServerAdvert] = []
    for pointer in pointers[:MAX_ADVERTS]:
        instance = pointer.target.to_text()
        try:
            advert = _resolve_instance(lookup, instance, warnings)
        except DiscoveryError as exc:
            # One broken advert must not hide the others (D5: several adverts allowed).
            warnings.append(f"ignored {instance.rstrip('.')}: {exc}")
            continue
        if advert is not None:
            candidates.append(advert)
    if len(pointers) > MAX_ADVERTS:
        warnings.append(f"only the first {MAX_ADVERTS} of {len(pointers)} adverts were considered")
    ordered = order_adverts(
        candidates, allow_dev_servers=allow_dev_servers, rng=rng, warnings=warnings
    )
    if not ordered:
        raise DiscoveryError(
            f"no usable EST server advert under {service}: " + "; ".join(warnings),
            hint="fix the SRV/TXT/A records (TXT 'pri' is required), or allow development "
            "servers (pri >= 100)",
            params=("allow_dev_servers",),
        )
    return DiscoveryResult(ordered, warnings, search_domain)


def _resolve_instance(lookup: _Lookup, instance: str, warnings: list[str]) -> ServerAdvert | None:
    from dns.rdtypes.ANY.TXT import TXT
    from dns.rdtypes.IN.A import A
    from dns.rdtypes.IN.AAAA import AAAA
    from dns.rdtypes.IN.SRV import SRV

    shown = instance.rstrip(".")
    srvs = lookup.query(instance, "SRV", SRV)
    if not srvs:
        warnings.append(f"ignored {shown}: no SRV record (D2)")
        return None
    # One SRV per instance is normal; if there are several, honour SRV priority among them.
    srv = min(srvs, key=lambda r: (r.priority, -r.weight))
    target = srv.target.to_text()
    if target == ".":
        warnings.append(f"ignored {shown}: SRV target '.' means the service is not offered here")
        return None
    txt_records = lookup.query(instance, "TXT", TXT)
    strings: list[bytes] = []
    for record in txt_records:
        strings.extend(record.strings)
    addresses: list[str] = []
    problems: list[str] = []
    address_kinds: tuple[tuple[str, type[A | AAAA]], ...] = (("A", A), ("AAAA", AAAA))
    for rdtype, kind in address_kinds:
        try:
            addresses.extend(record.address for record in lookup.query(target, rdtype, kind))
        except DiscoveryError as exc:
            # Some servers refuse AAAA (or A) queries outright; the other family may still work.
            problems.append(str(exc))
    if not addresses and problems:
        raise DiscoveryError("; ".join(problems))
    if not addresses:
        warnings.append(
            f"ignored {shown}: SRV target {target.rstrip('.')} has no A/AAAA record (D2)"
        )
        return None
    return advert_from_txt(
        shown,
        target,
        int(srv.port),
        parse_txt(strings),
        tuple(addresses),
        "unicast",
        warnings,
    )


def discover_mdns(
    *,
    browse_seconds: float = MDNS_BROWSE_SECONDS,
    allow_dev_servers: bool = False,
    rng: random.Random | None = None,
    interfaces: list[str] | None = None,
) -> DiscoveryResult:
    """Multicast DNS-SD browse; call only when the operator opted in (D1)."""
    from zeroconf import ServiceBrowser, ServiceListener, Zeroconf

    names: list[str] = []
    found = threading.Event()

    class _Listener(ServiceListener):
        def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            if name not in names:
                names.append(name)
            found.set()

        def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            self.add_service(zc, type_, name)

        def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            with contextlib.suppress(ValueError):
                names.remove(name)

    warnings: list[str] = []
    zeroconf = Zeroconf(interfaces=interfaces) if interfaces else Zeroconf()
    try:
        browser = ServiceBrowser(zeroconf, MDNS_SERVICE_TYPE, _Listener())
        try:
            # Listen for the whole window: later answers may carry better priorities.
            threading.Event().wait(browse_seconds)
        finally:
            browser.cancel()
        candidates: list[ServerAdvert] = []
        for name in list(names)[:MAX_ADVERTS]:
            info = zeroconf.get_service_info(
                MDNS_SERVICE_TYPE, name, timeout=int(browse_seconds * 1000)
            )
            if info is None or not info.server:
                warnings.append(f"ignored {name}: no SRV data answered over mDNS")
                continue
            txt = {
                key.decode("utf-8", "replace").lower(): (value or b"").decode("utf-8", "replace")
                for key, value in info.properties.items()
            }
            addresses = tuple(info.parsed_addresses())
            if not addresses:
                warnings.append(f"ignored {name}: no address for {info.server}")
                continue
            advert = advert_from_txt(
                name.rstrip("."), info.server, int(info.port or 0), txt, addresses, "mdns", warnings
            )
            if advert is not None:
                candidates.append(advert)
    finally:
        zeroconf.close()
    ordered = order_adverts(
        candidates, allow_dev_servers=allow_dev_servers, rng=rng, warnings=warnings
    )
    if not ordered:
        detail = "; ".join(warnings) if warnings else "nothing answered"
        raise DiscoveryError(
            f"no usable EST server advert over mDNS ({MDNS_SERVICE_TYPE}): {detail}",
            hint="check that the server advertises itself over mDNS on this link",
            params=("server_advertise",),
        )
    return DiscoveryResult(ordered, warnings, "local")


def manual_advert(host: str, port: int, label: str | None) -> ServerAdvert:
    """A hand-configured server (C3), in the same shape as a discovered one."""
    return ServerAdvert(
        instance=f"{host}:{port}", host=host, port=port, priority=0, label=label, source="manual"
    )
