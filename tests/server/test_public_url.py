"""The default public URL comes from the server's TLS certificate without a file look-up per
enrollment (issue 16: stat-ing the certificate files was about 3 % of an enrollment's server
CPU), and a replaced certificate with another name is still seen within
TLS_HOST_RECHECK_SECONDS (issue 17 item 2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from estkit.server import public_url
from estkit.server.config import CertificatePair, ServerConfig
from protocol.helpers import make_cert


def _write_certificate(path: Path, dns_name: str) -> None:
    certificate = make_cert(ec.generate_private_key(ec.SECP256R1()), dns_name, dns=[dns_name])
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def test_tls_host_is_read_once_per_recheck_interval_and_a_new_name_is_seen_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certificate = tmp_path / "tls.pem"
    _write_certificate(certificate, "est-one.example")
    config = ServerConfig(
        path=tmp_path / "estkit.toml",
        host="127.0.0.1",
        port=8443,
        tls_certificates=(CertificatePair(certificate, tmp_path / "tls.key"),),
    )
    clock = [1000.0]
    monkeypatch.setattr(public_url.time, "monotonic", lambda: clock[0])
    public_url._tls_hosts.clear()
    stats: list[Path] = []
    real_stat = os.stat

    def counting_stat(path: Path) -> os.stat_result:
        stats.append(path)
        return real_stat(path)

    monkeypatch.setattr(public_url.os, "stat", counting_stat)

    assert public_url.public_url_for(config, None) == "https://est-one.example:8443"
    assert len(stats) == 1
    _write_certificate(certificate, "est-two.example")
    clock[0] += public_url.TLS_HOST_RECHECK_SECONDS / 2
    for _ in range(50):  # within the interval: the remembered name, no look-up
        assert public_url.public_url_for(config, None) == "https://est-one.example:8443"
    assert len(stats) == 1
    clock[0] += public_url.TLS_HOST_RECHECK_SECONDS
    assert public_url.public_url_for(config, None) == "https://est-two.example:8443"
    assert len(stats) == 2
    # Another configuration (a reload naming other files) is not answered from the first's entry.
    other = tmp_path / "other.pem"
    _write_certificate(other, "est-three.example")
    reloaded = ServerConfig(
        path=config.path,
        host="127.0.0.1",
        port=8443,
        tls_certificates=(CertificatePair(other, tmp_path / "tls.key"),),
    )
    assert public_url.public_url_for(reloaded, None) == "https://est-three.example:8443"
