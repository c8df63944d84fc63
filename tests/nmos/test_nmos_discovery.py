"""Unicast DNS-SD discovery against a real DNS server (dnsmasq) — BCP-003-03 D1-D5."""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Callable

import pytest
from click.testing import CliRunner

from estkit.cli.main import cli
from estkit.nmos.discovery import (
    ServerAdvert,
    discover_mdns,
    discover_unicast,
    make_resolver,
    order_adverts,
    parse_txt,
)
from estkit.nmos.errors import DiscoveryError, NodeConfigError

from .dns_fixture import DOMAIN, DnsServer, Zone

StartDns = Callable[[Zone], DnsServer]


def lab_zone() -> Zone:
    """Four adverts: two live servers (pri 10 with a label, pri 20), a dev server, one broken."""
    zone = Zone().host("est1.nmos.test", "127.0.0.1").host("est2.nmos.test", "127.0.0.2")
    zone.advert("primary", "est1.nmos.test", 8443, txt=("pri=10", "api_selector=nmos"))
    zone.advert("backup", "est2.nmos.test", 9443, txt=("pri=20",))
    zone.advert("lab", "est1.nmos.test", 7443, txt=("pri=100", "api_selector=dev"))
    zone.advert("nopri", "est2.nmos.test", 6443, txt=("api_selector=x",))
    return zone


def test_adverts_are_ordered_by_pri_with_label_and_address_d2_d3_d4(dns_server: StartDns) -> None:
    dns = dns_server(lab_zone())
    result = discover_unicast(DOMAIN, dns_server=dns.address)
    assert [(a.host, a.port, a.priority, a.label) for a in result.adverts] == [
        ("est1.nmos.test", 8443, 10, "nmos"),  # D4: api_selector becomes the label
        ("est2.nmos.test", 9443, 20, None),  # D4: no api_selector, no label
    ]
    assert result.adverts[0].addresses == ("127.0.0.1",)  # D2: A record resolved
    assert result.adverts[0].est_url == "https://est1.nmos.test:8443/.well-known/est/nmos/"
    assert result.adverts[1].est_url == "https://est2.nmos.test:9443/.well-known/est/"
    # D3: the advert without pri is ignored with a warning, the dev server is skipped.
    assert any("nopri" in w and "'pri'" in w for w in result.warnings)
    assert any("lab" in w and "development" in w for w in result.warnings)
    # The lookups really went to this DNS server.
    log = dns.queries()
    assert f"query[PTR] _nmos-certs._tcp.{DOMAIN}" in log
    assert "query[SRV] primary._nmos-certs._tcp.nmos.test" in log
    assert "query[TXT] backup._nmos-certs._tcp.nmos.test" in log
    assert "query[A] est2.nmos.test" in log


def test_dev_servers_only_with_allow_dev_servers_d3(dns_server: StartDns) -> None:
    dns = dns_server(lab_zone())
    result = discover_unicast(DOMAIN, dns_server=dns.address, allow_dev_servers=True)
    assert [a.priority for a in result.adverts] == [10, 20, 100]
    assert result.adverts[-1].label == "dev"


def test_equal_priorities_are_shuffled_so_a_fleet_spreads_d3(dns_server: StartDns) -> None:
    zone = Zone().host("est1.nmos.test")
    for name in ("a", "b", "c"):
        zone.advert(name, "est1.nmos.test", 8443, txt=("pri=5",))
    zone.advert("first", "est1.nmos.test", 1443, txt=("pri=1",))
    dns = dns_server(zone)
    orders = set()
    for seed in range(12):
        result = discover_unicast(DOMAIN, dns_server=dns.address, rng=random.Random(seed))
        assert result.adverts[0].instance.startswith("first.")
        orders.add(tuple(a.instance.split(".")[0] for a in result.adverts[1:]))
    assert len(orders) > 1  # not always the same order ...
    assert all(sorted(order) == ["a", "b", "c"] for order in orders)  # ... but always all three


def test_txt_pri_beats_srv_priority_d3(dns_server: StartDns) -> None:
    zone = Zone().host("est1.nmos.test")
    zone.srvs.append(("low._nmos-certs._tcp.nmos.test", "est1.nmos.test", 1111))
    zone.ptrs.append((f"_nmos-certs._tcp.{DOMAIN}", "low._nmos-certs._tcp.nmos.test"))
    zone.txts.append(("low._nmos-certs._tcp.nmos.test", ("pri=50",)))
    zone.advert("high", "est1.nmos.test", 2222, txt=("pri=3",))
    dns = dns_server(zone)
    result = discover_unicast(DOMAIN, dns_server=dns.address)
    assert [a.port for a in result.adverts] == [2222, 1111]


@pytest.mark.parametrize(
    ("txt", "warning"),
    [
        (("pri=ten",), "not a non-negative integer"),
        (("pri=-1",), "not a non-negative integer"),
        (("pri=1", "api_selector=a/b"), "not a valid label"),
    ],
)
def test_invalid_txt_values_are_ignored_with_a_warning(
    dns_server: StartDns, txt: tuple[str, ...], warning: str
) -> None:
    zone = Zone().host("est1.nmos.test").advert("bad", "est1.nmos.test", 1, txt=txt)
    zone.advert("good", "est1.nmos.test", 2, txt=("pri=0",))
    dns = dns_server(zone)
    result = discover_unicast(DOMAIN, dns_server=dns.address)
    assert [a.port for a in result.adverts] == [2]
    assert any(warning in w for w in result.warnings)


def test_missing_records_explain_what_is_wrong_d2(dns_server: StartDns) -> None:
    zone = Zone().host("est1.nmos.test")
    zone.advert("nosrv", "est1.nmos.test", 1, txt=("pri=1",), srv=False)
    zone.advert("noaddr", "ghost.nmos.test", 2, txt=("pri=1",))
    dns = dns_server(zone)
    with pytest.raises(DiscoveryError) as info:
        discover_unicast(DOMAIN, dns_server=dns.address)
    message = str(info.value)
    assert "nosrv._nmos-certs._tcp.nmos.test: no SRV record" in message
    assert "ghost.nmos.test has no A/AAAA record" in message
    assert "query[A] ghost.nmos.test" in dns.queries()


def test_no_adverts_at_all_is_a_clear_error(dns_server: StartDns) -> None:
    dns = dns_server(Zone().host("est1.nmos.test"))
    with pytest.raises(DiscoveryError, match="no PTR records") as info:
        discover_unicast(DOMAIN, dns_server=dns.address)
    assert "host and port" in (info.value.hint or "") and info.value.params == ("domain", "server")
    assert f"query[PTR] _nmos-certs._tcp.{DOMAIN}" in dns.queries()


def test_dns_server_not_answering_is_reported(dns_server: StartDns) -> None:
    dns = dns_server(Zone())
    dns.stop()
    resolver = make_resolver(dns.address, timeout=0.3)
    with pytest.raises(DiscoveryError, match=r"did not answer|failed to answer"):
        discover_unicast(DOMAIN, resolver=resolver)


def test_order_adverts_is_pure() -> None:
    adverts = [
        ServerAdvert("x", "h", 1, 30),
        ServerAdvert("y", "h", 2, 100),
        ServerAdvert("z", "h", 3, 0),
    ]
    warnings: list[str] = []
    assert [a.port for a in order_adverts(adverts, warnings=warnings)] == [3, 1]
    assert len(warnings) == 1
    assert parse_txt([b"PRI=7", b"pri=9", b"flag"]) == {"pri": "7", "flag": ""}


def test_cli_discover_prints_json(dns_server: StartDns) -> None:
    dns = dns_server(lab_zone())
    result = CliRunner().invoke(
        cli, ["nmos", "discover", "--domain", DOMAIN, "--dns-server", dns.address, "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [s["port"] for s in data["servers"]] == [8443, 9443]
    assert data["servers"][0]["label"] == "nmos"


def test_cli_discover_failure_is_one_message_not_a_traceback(dns_server: StartDns) -> None:
    dns = dns_server(Zone())
    result = CliRunner().invoke(
        cli, ["nmos", "discover", "--domain", DOMAIN, "--dns-server", dns.address]
    )
    assert result.exit_code == 1
    assert "no PTR records" in result.stderr
    assert "Traceback" not in result.output + result.stderr
    # The library names the settings (domain, server); the CLI names its flags for them.
    assert "on the command line: --domain, --ip/--port" in result.stderr


def test_mdns_only_when_asked_and_with_the_same_rules_d1() -> None:
    """A real multicast DNS-SD advert on the loopback interface, browsed with zeroconf."""
    zeroconf_module = pytest.importorskip("zeroconf")
    responder = zeroconf_module.Zeroconf(interfaces=["127.0.0.1"])
    adverts = [
        zeroconf_module.ServiceInfo(
            "_nmos-certs._tcp.local.",
            f"{name}._nmos-certs._tcp.local.",
            addresses=[socket.inet_aton("127.0.0.1")],
            port=port,
            properties=properties,
            server=f"{name}.local.",
        )
        for name, port, properties in (
            ("mdns-b", 9443, {"pri": "20"}),
            ("mdns-a", 8443, {"pri": "10", "api_selector": "nmos"}),
            ("mdns-nopri", 7443, {"api_selector": "x"}),
        )
    ]
    for info in adverts:
        # Our own names on our own loopback: skip the conflict probing (seconds per name).
        responder.register_service(info, cooperating_responders=True)
    try:
        result = discover_mdns(browse_seconds=2.5, interfaces=["127.0.0.1"])
    finally:
        responder.close()
    assert [(a.port, a.label, a.source) for a in result.adverts] == [
        (8443, "nmos", "mdns"),
        (9443, None, "mdns"),
    ]
    assert any("mdns-nopri" in w and "'pri'" in w for w in result.warnings)


def test_no_domain_is_a_configuration_error_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    import estkit.nmos.discovery as discovery

    monkeypatch.setattr(discovery, "system_search_domain", lambda: None)
    with pytest.raises(NodeConfigError, match="no DNS domain") as info:
        discover_unicast(None, dns_server="127.0.0.1:1")
    assert "DNS domain" in (info.value.hint or "") and info.value.params == ("domain",)
