"""`serve --advertise`: the mDNS advertisement (lab use, D1) seen by an independent zeroconf
browser on loopback, with TXT pri and api_selector (D3, D4)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from zeroconf import IPVersion, Zeroconf

from estkit.server.config import add_label
from estkit.server.datadir import init_data_dir
from estkit.server.dnssd import SERVICE_TYPE, txt_values, unicast_records

from .test_cli import SERVE_TIMEOUT_SECONDS, _start_serve

LOOKUP_TIMEOUT_MS = 5000


def test_serve_advertise_publishes_nmos_certs_over_mdns(tmp_path: Path) -> None:
    paths = init_data_dir(tmp_path / "data")
    add_label(paths.data_dir, "lab")  # an api_selector must name a label the server has
    process, url, _ = _start_serve(
        [
            str(paths.data_dir),
            "--port",
            "0",
            "--advertise",
            "--advertise-label",
            "lab",
            "--pri",
            "100",
        ],
        tmp_path,
    )
    port = int(url.rsplit(":", 1)[1])
    browser = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        info = browser.get_service_info(
            f"{SERVICE_TYPE}.local.", f"estkit.{SERVICE_TYPE}.local.", timeout=LOOKUP_TIMEOUT_MS
        )
        assert info is not None, "no mDNS answer for the estkit instance"
        assert info.port == port
        assert info.properties == {b"pri": b"100", b"api_selector": b"lab"}
        assert "127.0.0.1" in info.parsed_addresses()
    finally:
        browser.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=SERVE_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0


def test_txt_values_follow_d3_d4() -> None:
    assert txt_values(0, None) == {"pri": "0"}  # no api_selector without a label (D4)
    assert txt_values(7, "lab") == {"pri": "7", "api_selector": "lab"}
    with pytest.raises(ValueError, match="non-negative"):
        txt_values(-1, None)


def test_unicast_records_need_an_address() -> None:
    with pytest.raises(ValueError, match="A/AAAA"):
        unicast_records(domain="example.com", host="est", port=8443, addresses=[], pri=0)
    records = unicast_records(
        domain="example.com", host="est.example.net.", port=443, addresses=["2001:db8::7"], pri=0
    )
    assert "est.example.net. 3600 IN AAAA 2001:db8::7" in records.lines
