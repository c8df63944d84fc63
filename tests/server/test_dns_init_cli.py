"""`estkit server dns-records --host` with fully qualified names and `server init --hostname`
refusing IP and wildcard names (issue 15, item 7; BCP-003-03 D2, BCP-003-01 T4)."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import dns.zone
import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from zeroconf import IPVersion, Zeroconf

from estkit.cli.main import cli
from estkit.server.dnssd import SERVICE_TYPE

from .test_cli import SERVE_TIMEOUT_SECONDS, _start_serve
from .test_dnssd import LOOKUP_TIMEOUT_MS


def _server(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["server", *map(str, args)])


def _zone(text: str) -> dns.zone.Zone:
    """The records as a real zone: dnspython refuses out-of-zone data and malformed records."""
    return dns.zone.from_text(
        "$ORIGIN example.com.\n@ 3600 IN SOA ns hostmaster 1 7200 900 1209600 300\n"
        "@ 3600 IN NS ns\nns 3600 IN A 192.0.2.1\n" + text,
        origin="example.com.",
    )


def _srv_target(zone: dns.zone.Zone) -> str:
    instance = next(iter(zone.find_rdataset("_nmos-certs._tcp", "PTR"))).target
    srv = next(iter(zone.find_rdataset(instance, "SRV")))
    return str(srv.target.derelativize(zone.origin).to_text())


@pytest.mark.parametrize("host", ["est.example.com", "est.example.com.", "est", "EST.example.com"])
def test_dns_records_host_forms(estkit_server: Any, host: str) -> None:
    result = _server(
        "dns-records", estkit_server.data_dir, "--domain", "example.com", "--host", host,
        "--address", "192.0.2.10",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "example.com.example.com" not in result.stdout.lower()
    zone = _zone(result.stdout)
    assert _srv_target(zone).lower() == "est.example.com."
    assert next(iter(zone.find_rdataset("est", "A"))).address == "192.0.2.10"


def test_dns_records_target_in_another_zone(estkit_server: Any) -> None:
    result = _server(
        "dns-records", estkit_server.data_dir, "--domain", "example.com",
        "--host", "est.lab.example.net", "--address", "192.0.2.10",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "; est.lab.example.net. is outside example.com.: its address records belong" in (
        result.stdout
    )
    assert "est.lab.example.net. 3600 IN A 192.0.2.10" in result.stdout
    assert re.search(r"IN SRV 0 0 \d+ est\.lab\.example\.net\.$", result.stdout, re.M)


@pytest.mark.parametrize(
    ("name", "why"),
    [("192.0.2.7", "is an IP address"), ("::1", "is an IP address"), ("*.example.com", "wildcard")],
)
def test_init_refuses_ip_and_wildcard_hostnames(tmp_path: Path, name: str, why: str) -> None:
    refused = _server("init", tmp_path / "d", "--hostname", name)
    assert refused.exit_code == 2
    assert why in refused.stderr and "BCP-003-01 T4" in refused.stderr
    assert "--allow-ip-or-wildcard" in refused.stderr
    assert not (tmp_path / "d").exists(), "nothing is created for a refused name"

    allowed = _server("init", tmp_path / "d", "--hostname", name, "--allow-ip-or-wildcard")
    assert allowed.exit_code == 0, allowed.stderr
    assert f"warning: {name} {why}" in allowed.stderr or why in allowed.stderr
    assert "warning:" in allowed.stderr


def test_init_refuses_a_malformed_hostname(tmp_path: Path) -> None:
    refused = _server("init", tmp_path / "d", "--hostname", "not a name")
    assert refused.exit_code == 2
    assert "is not a DNS host name" in refused.stderr


def test_init_takes_a_plain_dns_name_silently(tmp_path: Path) -> None:
    result = _server("init", tmp_path / "d", "--hostname", "est.example.com")
    assert result.exit_code == 0, result.stderr
    assert "warning" not in result.stderr
    cert = x509.load_pem_x509_certificates(
        next((tmp_path / "d" / "tls").glob("*.pem")).read_bytes()
    )[0]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["est.example.com"]


def test_dns_records_json(estkit_server: Any) -> None:
    result = _server(
        "dns-records", estkit_server.data_dir, "--domain", "example.com", "--host", "est",
        "--address", "192.0.2.10", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert "est.example.com. 3600 IN A 192.0.2.10" in document["records"]
    assert any(" SRV 0 0 " in line for line in document["records"])
    assert document["notes"] == []


def _advertise(data_dir: Path, cwd: Path) -> tuple[str | None, str, str]:
    """Serve with --advertise; the SRV target an independent zeroconf browser sees, stdout and
    stderr of the server."""
    process, _url, lines = _start_serve([str(data_dir), "--port", "0", "--advertise"], cwd)
    browser = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        info = browser.get_service_info(
            f"{SERVICE_TYPE}.local.", f"estkit.{SERVICE_TYPE}.local.", timeout=LOOKUP_TIMEOUT_MS
        )
        server = info.server if info is not None else None
    finally:
        browser.close()
        process.send_signal(signal.SIGTERM)
        output, errors = process.communicate(timeout=SERVE_TIMEOUT_SECONDS)
    return server, "".join(lines) + output, errors


def test_advertise_announces_the_certificates_local_name(tmp_path: Path) -> None:
    data = tmp_path / "d"
    made = _server("init", data, "--hostname", "estlab.local", "--hostname", "localhost")
    assert made.exit_code == 0, made.stderr
    server, output, errors = _advertise(data, tmp_path)
    assert server == "estlab.local."
    assert "on host estlab.local." in output
    assert "not in the server certificate" not in errors


def test_advertise_warns_when_the_certificate_has_no_local_name(tmp_path: Path) -> None:
    data = tmp_path / "d"
    assert _server("init", data, "--hostname", "est.example.com").exit_code == 0
    server, _output, errors = _advertise(data, tmp_path)
    assert server is not None and server.endswith(".local.")
    assert f"warning: mDNS announces the host {server}, which is not in the server" in " ".join(
        errors.split()
    )
    assert "(est.example.com)" in errors
