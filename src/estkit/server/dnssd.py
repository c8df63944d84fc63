"""DNS-SD for the EST server: unicast zone records to paste (D1–D4) and opt-in mDNS for labs.

Why both: BCP-003-03 D1 wants unicast DNS-SD (an administrator adds PTR/SRV/TXT/A records to the
site's zone) and says the server SHOULD NOT be advertised over mDNS. A lab without a DNS server
still benefits from mDNS, so `serve --advertise` offers it explicitly, never by default.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dns.name
import dns.rrset

from estkit.errors import EstkitError

if TYPE_CHECKING:  # the code imports zeroconf where it uses it; annotations need the name
    from zeroconf import Zeroconf

SERVICE_TYPE = "_nmos-certs._tcp"
DEFAULT_TTL_SECONDS = 3600
DEFAULT_INSTANCE = "estkit"
# RFC 6763 §4.1.1: instance names are at most 63 octets (one DNS label).
MAX_INSTANCE_LENGTH = 63


class MdnsError(EstkitError, RuntimeError):
    """The mDNS advertisement could not be registered (no multicast on the interface, …)."""


@dataclass(frozen=True)
class DnsSdRecords:
    """The unicast DNS-SD records of one advertisement, as zone-file lines."""

    lines: tuple[str, ...]
    # Things the operator must do by hand (e.g. the target's address lives in another zone).
    notes: tuple[str, ...] = ()

    def zone_text(self) -> str:
        return "\n".join(self.lines) + "\n"


def target_name(host: str, domain: dns.name.Name) -> dns.name.Name:
    """The SRV target: ``est`` (one label) is relative to ``domain``; a name with a dot
    (``est.example.com`` or ``est.example.com.``) is already a fully qualified name, which is
    what people type, so it is never suffixed with the domain a second time."""
    name = host.strip()
    if not name or name == ".":
        raise ValueError("the host name is empty")
    if name.endswith(".") or "." in name:
        return dns.name.from_text(name.rstrip(".") + ".")
    return dns.name.from_text(name, origin=domain)


def _quote_txt(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def txt_values(pri: int, label: str | None) -> dict[str, str]:
    """TXT keys of BCP-003-03 D3/D4: ``pri`` always, ``api_selector`` only with a label."""
    if pri < 0:
        raise ValueError(f"pri must be a non-negative integer (0-99 live, 100+ dev), got {pri}")
    values = {"pri": str(pri)}
    if label:
        values["api_selector"] = label
    return values


def unicast_records(
    *,
    domain: str,
    host: str,
    port: int,
    addresses: Sequence[str],
    pri: int,
    label: str | None = None,
    instance: str = DEFAULT_INSTANCE,
    ttl: int = DEFAULT_TTL_SECONDS,
) -> DnsSdRecords:
    """PTR, SRV, TXT and A/AAAA records for ``_nmos-certs._tcp`` under ``domain``.

    ``host`` may be relative to ``domain`` (``est``) or a fully qualified name, with or without
    the trailing dot (``est.example.com``). For a target outside ``domain`` a note says that its
    A/AAAA records belong in its own zone. Every record is built and checked by dnspython, so a
    typo fails here and not in the zone.
    """
    if not instance or len(instance.encode()) > MAX_INSTANCE_LENGTH:
        raise ValueError(f"instance name must be 1-{MAX_INSTANCE_LENGTH} octets")
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be 1-65535, got {port}")
    origin = dns.name.from_text(domain)
    service = dns.name.from_text(SERVICE_TYPE, origin=origin)
    instance_name = dns.name.Name((instance.encode(), *service.labels))
    target = target_name(host, origin)
    txt = " ".join(_quote_txt(f"{key}={value}") for key, value in txt_values(pri, label).items())
    rrsets = [
        # RFC 6763 §9: lets generic browsers enumerate the service types of the domain.
        dns.rrset.from_text(
            dns.name.from_text("_services._dns-sd._udp", origin=origin),
            ttl,
            "IN",
            "PTR",
            service.to_text(),
        ),
        dns.rrset.from_text(service, ttl, "IN", "PTR", instance_name.to_text()),
        # D3: TXT pri decides; SRV priority/weight are left neutral.
        dns.rrset.from_text(instance_name, ttl, "IN", "SRV", f"0 0 {port} {target.to_text()}"),
        dns.rrset.from_text(instance_name, ttl, "IN", "TXT", txt),
    ]
    if not addresses:
        raise ValueError("at least one address is needed for the host's A/AAAA record (D2)")
    notes: list[str] = []
    for address in addresses:
        parsed = ipaddress.ip_address(address)
        rdtype = "AAAA" if parsed.version == 6 else "A"
        rrsets.append(dns.rrset.from_text(target, ttl, "IN", rdtype, str(parsed)))
    if not target.is_subdomain(origin):
        notes.append(
            f"{target.to_text()} is outside {origin.to_text()}: its address records belong in "
            "its own zone (a server loading this zone ignores them as out-of-zone data)"
        )
    lines = [line for rrset in rrsets for line in rrset.to_text().splitlines()]
    return DnsSdRecords(tuple(lines), tuple(notes))


MDNS_DOMAIN_SUFFIX = ".local"


def mdns_host_name(certificate_names: Sequence[str]) -> str | None:
    """The first ``.local`` name of the server certificate, without the suffix: the only kind
    of SRV target that mDNS resolves *and* that a node's hostname verification then accepts
    (BCP-003-01 T4 puts names, not addresses, in the certificate). None when there is none."""
    for name in certificate_names:
        bare = name.rstrip(".")
        if bare.lower().endswith(MDNS_DOMAIN_SUFFIX) and len(bare) > len(MDNS_DOMAIN_SUFFIX):
            return bare[: -len(MDNS_DOMAIN_SUFFIX)]
    return None


class MdnsAdvertisement:
    """An mDNS advertisement of the server (lab use only; BCP-003-03 D1 prefers unicast).

    ``interfaces`` limits where zeroconf listens and answers (tests pass the loopback address).
    """

    def __init__(
        self,
        *,
        port: int,
        addresses: Sequence[str],
        pri: int,
        label: str | None = None,
        instance: str = DEFAULT_INSTANCE,
        host_name: str | None = None,
        interfaces: Sequence[str] | None = None,
    ) -> None:
        from zeroconf import ServiceInfo

        self._interfaces = list(interfaces) if interfaces else None
        host = (host_name or socket.gethostname().split(".")[0] or "estkit").rstrip(".")
        self.host = f"{host}.local."
        self.service_type = f"{SERVICE_TYPE}.local."
        self.name = f"{instance}.{self.service_type}"
        self.info = ServiceInfo(
            self.service_type,
            self.name,
            port=port,
            properties=txt_values(pri, label),
            server=self.host,
            parsed_addresses=list(addresses),
        )
        self._zeroconf: Zeroconf | None = None

    def start(self) -> None:
        """Register the service (blocks for zeroconf's probing, about two seconds).

        Runs in its own thread: zeroconf's blocking API adopts a running event loop of the
        calling thread, and the server's loop must never wait on itself.
        """
        from zeroconf import InterfaceChoice, IPVersion, Zeroconf

        failure: list[BaseException] = []

        def register() -> None:
            try:
                interfaces = self._interfaces if self._interfaces else InterfaceChoice.All
                zc = Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
                zc.register_service(self.info, allow_name_change=True)
                self._zeroconf = zc
            except BaseException as exc:  # handed to the caller below
                failure.append(exc)

        thread = threading.Thread(target=register, name="estkit-mdns", daemon=True)
        thread.start()
        thread.join()
        if failure:
            raise MdnsError(f"mDNS advertisement failed: {failure[0]}") from failure[0]

    def stop(self) -> None:
        zc = self._zeroconf
        if zc is None:
            return
        self._zeroconf = None

        def unregister() -> None:
            zc.unregister_service(self.info)
            zc.close()

        thread = threading.Thread(target=unregister, name="estkit-mdns-stop", daemon=True)
        thread.start()
        thread.join(timeout=10)
