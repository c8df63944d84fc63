"""D1-D5: the server's ``_nmos-certs._tcp`` advert judged off a real dnsmasq, and C8.

Each broken zone breaks one thing; the estkit-independent fake EST server (its certificate names
est.nmos.test) is the server advertised. The dnsmasq query log shows the suite really asked.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from estkit.cli.main import cli
from estkit.conformance import Status, run_suite

from .conftest import FakeFactory, fake_target
from .fake_est import Faults
from .pki import FakePki

try:
    from tests.nmos.dns_fixture import DOMAIN, DnsServer, Zone, start_dnsmasq
except ImportError:  # pragma: no cover - depends on how pytest put tests/ on sys.path
    from nmos.dns_fixture import DOMAIN, DnsServer, Zone, start_dnsmasq  # type: ignore[no-redef]

HOST = f"est.{DOMAIN}"
D_CASES = ["dns-advertised", "dns-srv-target", "dns-txt-pri", "dns-api-selector"]
PASS, FAIL, SKIP = Status.PASS, Status.FAIL, Status.SKIP


def _good(zone: Zone, port: int, txt: tuple[str, ...] = ("pri=10",)) -> Zone:
    return zone.advert("est", HOST, port, txt=txt).host(HOST)


# variant → (zone builder, expected statuses of D_CASES, fragment of the failing message)
VARIANTS = {
    "good": (lambda z, p: _good(z, p), [PASS, PASS, PASS, PASS], None),
    "no-ptr": (
        lambda z, p: z.advert("est", HOST, p, txt=("pri=10",), ptr=False).host(HOST),
        [FAIL, SKIP, SKIP, SKIP],
        "no PTR record",
    ),
    "no-a-record": (
        lambda z, p: z.advert("est", HOST, p, txt=("pri=10",)),
        [FAIL, FAIL, PASS, PASS],
        "has no A record",
    ),
    "name-not-in-certificate": (
        lambda z, p: z.advert("est", f"other.{DOMAIN}", p, txt=("pri=10",)).host(f"other.{DOMAIN}"),
        [PASS, FAIL, PASS, PASS],
        "does not name the SRV target",
    ),
    "no-txt": (
        lambda z, p: z.advert("est", HOST, p).host(HOST),
        [PASS, PASS, FAIL, PASS],
        "no TXT record",
    ),
    "no-pri": (lambda z, p: _good(z, p, ("foo=bar",)), [PASS, PASS, FAIL, PASS], "has no pri"),
    "pri-not-integer": (
        lambda z, p: _good(z, p, ("pri=high",)),
        [PASS, PASS, FAIL, PASS],
        "is not an integer",
    ),
    "api-selector-mismatch": (
        lambda z, p: _good(z, p, ("pri=10", "api_selector=elsewhere")),
        [PASS, PASS, PASS, FAIL],
        "api_selector='elsewhere'",
    ),
}


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[list[DnsServer]]:
    started: list[DnsServer] = []
    yield started
    for server in started:
        server.stop()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_dns_advert_cases(
    fake_pki: FakePki,
    fake_server: FakeFactory,
    dnsmasq: list[DnsServer],
    tmp_path: Path,
    variant: str,
) -> None:
    server = fake_server(Faults(server_names=(HOST,)))
    build, expected, fragment = VARIANTS[variant]
    dns = start_dnsmasq(build(Zone(), server.port), tmp_path / "dns")
    dnsmasq.append(dns)
    target = fake_target(fake_pki, server, dns_domain=DOMAIN, dns_server=dns.address)
    report = run_suite(target, only=D_CASES)
    statuses = [report.result(case).status for case in D_CASES]
    messages = {r.id: r.message for r in report.results}
    assert statuses == expected, messages
    if fragment is not None:
        failing = [r.message for r in report.results if r.status is FAIL]
        assert any(fragment in message for message in failing), messages
        assert all(any(i in message for i in ("D1", "D2", "D3", "D4")) for message in failing)
    assert f"_nmos-certs._tcp.{DOMAIN}" in dns.queries()  # the suite asked this DNS server


def test_label_given_by_api_selector(
    fake_pki: FakePki, fake_server: FakeFactory, dnsmasq: list[DnsServer], tmp_path: Path
) -> None:
    server = fake_server(Faults(server_names=(HOST,)), labels=frozenset({"arena"}))
    dns = start_dnsmasq(_good(Zone(), server.port, ("pri=0", "api_selector=arena")), tmp_path)
    dnsmasq.append(dns)
    with_label = fake_target(fake_pki, server, label="arena", dns_domain=DOMAIN,
                             dns_server=dns.address)  # fmt: skip
    assert run_suite(with_label, only=["dns-api-selector"]).exit_status == 0
    without = fake_target(fake_pki, server, dns_domain=DOMAIN, dns_server=dns.address)
    result = run_suite(without, only=["dns-api-selector"]).result("dns-api-selector")
    assert result.status is FAIL and "tested with no label" in result.message


def test_dns_cases_not_applicable_without_a_domain_or_under_rfc7030(
    fake_pki: FakePki, fake_server: FakeFactory
) -> None:
    server = fake_server()
    for target in (
        fake_target(fake_pki, server),
        fake_target(fake_pki, server, profile="rfc7030", dns_domain=DOMAIN),
    ):
        report = run_suite(target, only=D_CASES)
        assert {r.status for r in report.results} == {Status.NA}


def test_unreachable_dns_server_fails_d1_with_the_reason(
    fake_pki: FakePki, fake_server: FakeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from estkit.conformance import dnssd

    monkeypatch.setattr(dnssd, "DNS_TIMEOUT_SECONDS", 0.3)
    server = fake_server()
    # A UDP port nobody listens on: the query times out (or is refused).
    target = fake_target(fake_pki, server, dns_domain=DOMAIN, dns_server="127.0.0.1:9")
    result = run_suite(target, only=["dns-advertised"]).result("dns-advertised")
    assert result.status is FAIL and "cannot browse" in result.message


def test_c8_enrollment_with_the_manufacturer_certificate_alone(
    fake_pki: FakePki, fake_server: FakeFactory
) -> None:
    good = fake_server()
    result = run_suite(fake_target(fake_pki, good), only=["enroll-manufacturer-only"]).result(
        "enroll-manufacturer-only"
    )
    assert result.status is PASS
    exchanges = result.evidence["exchanges"]
    assert [x.get("status") for x in exchanges if x["request"].endswith("simpleenroll")] == [200]
    assert all("authorization" not in str(x).lower() for x in exchanges)
    # A server that wants HTTP credentials on top of a valid manufacturer certificate fails C8,
    # even with credentials at hand: a node has none to give.
    challenging = fake_server(Faults(basic_challenge=True))
    target = fake_target(fake_pki, challenging, basic="user:secret")
    result = run_suite(target, only=["enroll-manufacturer-only"]).result("enroll-manufacturer-only")
    assert result.status is FAIL and "C8" in result.message and "401" in result.message
    assert challenging.statuses("/simpleenroll") == [401]


def test_cli_dns_options(
    fake_pki: FakePki, fake_server: FakeFactory, dnsmasq: list[DnsServer], tmp_path: Path
) -> None:
    server = fake_server(Faults(server_names=(HOST,)))
    dns = start_dnsmasq(_good(Zone(), server.port, ("pri=high",)), tmp_path)
    dnsmasq.append(dns)
    args = [
        "test-server",
        "--ip", "127.0.0.1",
        "--port", str(server.port),
        "--cacert", str(fake_pki.cacert),
        "--cert", str(fake_pki.device_cert),
        "--key", str(fake_pki.device_key_path),
        "--only", ",".join(D_CASES),
        "--dns-domain", DOMAIN,
        "--dns-server", dns.address,
        "--json", "-",
    ]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    statuses = {r["id"]: r["status"] for r in json.loads(result.stdout)["results"]}
    assert statuses == {
        "dns-advertised": "pass",
        "dns-srv-target": "pass",
        "dns-txt-pri": "fail",
        "dns-api-selector": "pass",
    }
    bad_port = CliRunner().invoke(cli, [*args[:-2], "--dns-server", "127.0.0.1:99999"])
    assert bad_port.exit_code == 2 and "out of range" in bad_port.output
    base = [a for a in args[:-6]]  # without --dns-domain, --dns-server and --json
    no_domain = CliRunner().invoke(cli, [*base, "--dns-server", dns.address])
    assert no_domain.exit_code == 2 and "no DNS domain" in no_domain.output
    empty = CliRunner().invoke(cli, [*base, "--dns-domain", " "])
    assert empty.exit_code == 2 and "DNS domain is empty" in empty.output
    both = CliRunner().invoke(cli, [*base, "--dns-domain", DOMAIN, "--mdns"])
    assert both.exit_code == 2 and "not both" in both.output


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({"pri": "10"}, [Status.WARN, PASS, PASS, PASS]),
        ({"api_selector": "x"}, [Status.WARN, PASS, FAIL, FAIL]),
    ],
)
def test_mdns_advert_is_judged_and_warned_about_d1(
    fake_pki: FakePki,
    fake_server: FakeFactory,
    properties: dict[str, str],
    expected: list[Status],
) -> None:
    zeroconf = pytest.importorskip("zeroconf")
    server = fake_server(Faults(server_names=("est-mdns.local",)))
    responder = zeroconf.Zeroconf(interfaces=["127.0.0.1"])
    info = zeroconf.ServiceInfo(
        "_nmos-certs._tcp.local.",
        "est-mdns._nmos-certs._tcp.local.",
        addresses=[socket.inet_aton("127.0.0.1")],
        port=server.port,
        properties=properties,
        server="est-mdns.local.",
    )
    # Our own name on our own loopback: skip the conflict probing (seconds per name).
    responder.register_service(info, cooperating_responders=True)
    try:
        target = fake_target(fake_pki, server, mdns=True, mdns_interfaces=("127.0.0.1",))
        report = run_suite(target, only=D_CASES)
    finally:
        responder.close()
    statuses = [report.result(case).status for case in D_CASES]
    assert statuses == expected, {r.id: r.message for r in report.results}
    advertised = report.result("dns-advertised")
    assert "D1" in advertised.message and "multicast" in advertised.message
