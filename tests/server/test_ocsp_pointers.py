"""AIA (OCSP) and CRL distribution points in every certificate, by default, from the public URL
(issue 17 item 2): an enrolled leaf names this server's /ocsp and /crl/<generation>, and
`openssl ocsp` driven by the URL in the certificate gets a verified answer; per-label and
server-wide public_url override the default; the server's own TLS certificates carry both."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID

from estkit.ca.pointers import check_public_url, revocation_pointer_extensions
from estkit.server.config import ConfigError, load_config, save_config

from .ocsp_support import issuer_pem
from .witness import curl, openssl_csr, pkcs7_to_pem, run, tool

if TYPE_CHECKING:
    from conftest import EstkitTestServer


def _enroll(server: EstkitTestServer, tmp_path: Path, label: str | None = None) -> Path:
    csr = openssl_csr(tmp_path)
    paths = server.paths
    response = curl(
        server.est_url("simpleenroll", label),
        cacert=paths.ca_certificates,
        cert=paths.device_certificate,
        key=paths.device_key,
        data=csr.b64,
        workdir=tmp_path,
    )
    assert response.status == 200, response.text
    return pkcs7_to_pem(response.body, tmp_path)


def _pointers(certificate: x509.Certificate) -> tuple[list[str], list[str]]:
    aia = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    cdp = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    assert not aia.critical and not cdp.critical
    ocsp = [
        d.access_location.value
        for d in aia.value
        if d.access_method == AuthorityInformationAccessOID.OCSP
    ]
    crl = [name.value for point in cdp.value for name in point.full_name or []]
    return ocsp, crl


def test_enrolled_leaf_points_at_this_server_and_openssl_follows_it(
    fresh_server, tmp_path: Path
) -> None:
    server: EstkitTestServer = fresh_server()
    leaf_path = _enroll(server, tmp_path)
    leaf = x509.load_pem_x509_certificate(leaf_path.read_bytes())
    ocsp, crl = _pointers(leaf)
    assert ocsp == [f"https://localhost:{server.port}/ocsp"]
    assert crl == [f"https://localhost:{server.port}/crl/g1"]
    uri = run([tool("openssl"), "x509", "-in", leaf_path, "-noout", "-ocsp_uri"]).stdout.decode()
    assert uri.strip() == ocsp[0]
    result = subprocess.run(
        [
            tool("openssl"),
            "ocsp",
            "-url",
            uri.strip(),
            "-issuer",
            issuer_pem(server, tmp_path),
            "-cert",
            leaf_path,
            "-CAfile",
            server.paths.ca_certificates,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert f"{leaf_path}: good" in result.stdout, result.stdout + result.stderr
    assert "Response verify OK" in result.stderr
    # The CRL at the CDP URL answers and is signed by the leaf's issuer.
    crl_reply = curl(
        crl[0], cacert=server.paths.ca_certificates, content_type=None, workdir=tmp_path
    )
    assert crl_reply.status == 200
    assert x509.load_der_x509_crl(crl_reply.body).issuer == leaf.issuer


def test_public_url_server_wide_and_per_label(fresh_server, tmp_path: Path) -> None:
    server: EstkitTestServer = fresh_server(plant={})
    config = load_config(server.paths.config)
    save_config(
        dataclasses.replace(
            config,
            public_url="https://est.example.net:9443/pki/",
            label_public_urls={"plant": "http://plant-ca.example.org"},
        )
    )
    reloaded = load_config(server.paths.config)
    assert reloaded.public_url == "https://est.example.net:9443/pki"
    assert reloaded.label_public_urls == {"plant": "http://plant-ca.example.org"}
    assert "plant" in reloaded.labels
    default_leaf = x509.load_pem_x509_certificate(_enroll(server, tmp_path).read_bytes())
    assert _pointers(default_leaf) == (
        ["https://est.example.net:9443/pki/ocsp"],
        ["https://est.example.net:9443/pki/crl/g1"],
    )
    (tmp_path / "plant").mkdir()
    plant_leaf = x509.load_pem_x509_certificate(
        _enroll(server, tmp_path / "plant", "plant").read_bytes()
    )
    assert _pointers(plant_leaf) == (
        ["http://plant-ca.example.org/ocsp"],
        ["http://plant-ca.example.org/crl/g1"],
    )


def test_server_tls_certificates_carry_pointers(fresh_server) -> None:
    server: EstkitTestServer = fresh_server()
    for path in server.paths.server_certificates:
        certificate = x509.load_pem_x509_certificates(path.read_bytes())[0]
        assert _pointers(certificate) == (
            ["https://localhost:8443/ocsp"],
            ["https://localhost:8443/crl/g1"],
        )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ftp://x.example", "must look like https://host"),
        ("https://", "must look like https://host"),
        ("https://x.example/?a=b", "no query"),
        ("https://x.example:99999", "Port out of range"),
        ("https://" + "a" * 300, "at most 200"),
    ],
)
def test_bad_public_url_is_refused(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_public_url(value)


def test_bad_public_url_in_config_is_a_config_error(fresh_server) -> None:
    server: EstkitTestServer = fresh_server()
    text = server.paths.config.read_text()
    bad = text.replace("[server]\n", '[server]\npublic_url = "ftp://x.example"\n', 1)
    server.paths.config.write_text(bad)
    with pytest.raises(ConfigError, match=r"server\.public_url: .*must look like https://host"):
        load_config(server.paths.config)
    labelled = text + '\n[labels.plant]\npublic_url = "https://x.example/?q"\n'
    server.paths.config.write_text(labelled)
    with pytest.raises(ConfigError, match=r"\[labels\.plant\]\.public_url: .*no query"):
        load_config(server.paths.config)


def test_pointer_extensions_can_be_left_out() -> None:
    assert revocation_pointer_extensions(None, None) == []
    (only,) = revocation_pointer_extensions(None, "http://x.example/crl")
    assert isinstance(only.value, x509.CRLDistributionPoints)
