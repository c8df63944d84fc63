"""Re-enrollment (E3, C13) and revocation: revoke → the CRL lists it → re-enroll refused."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from .test_approval import estkit_cli
from .witness import (
    HttpResult,
    certificate_from_response,
    curl,
    last_event_id,
    last_refusal,
    openssl_csr,
    pkcs7_to_pem,
    run,
    tool,
)

if TYPE_CHECKING:
    from conftest import EstkitTestServer


def _enroll_node(server: EstkitTestServer, tmp_path: Path, cn: str) -> tuple[Path, Path]:
    """First enrollment with the manufacturer certificate; returns (cert PEM, key)."""
    csr = openssl_csr(tmp_path, cn=cn)
    response = curl(
        server.est_url("simpleenroll"),
        cacert=server.paths.ca_certificates,
        cert=server.paths.device_certificate,
        key=server.paths.device_key,
        data=csr.b64,
        workdir=tmp_path,
    )
    assert response.status == 200, response.text
    return pkcs7_to_pem(response.body, tmp_path), csr.key


def _reenroll(
    server: EstkitTestServer, tmp_path: Path, cert: Path, key: Path, **csr_args
) -> HttpResult:
    csr = openssl_csr(tmp_path, **csr_args)
    return curl(
        server.est_url("simplereenroll"),
        cacert=server.paths.ca_certificates,
        cert=cert,
        key=key,
        data=csr.b64,
        workdir=tmp_path,
    )


def test_reenroll_with_the_issued_certificate(
    estkit_server: EstkitTestServer, tmp_path: Path
) -> None:
    cert, key = _enroll_node(estkit_server, tmp_path, "renew.example.com")
    response = _reenroll(estkit_server, tmp_path, cert, key, cn="renew.example.com")
    assert response.status == 200, response.text
    renewed = certificate_from_response(response.body)
    # The CA-built subject: the CN, and (NMOS default) the device serial, which came from the
    # manufacturer certificate at enrollment and from the renewed certificate now.
    assert renewed.subject.rfc4514_string() == "2.5.4.5=ESTKIT-DEMO-0001,CN=renew.example.com"
    record = estkit_server.open_store().get_issued(format(renewed.serial_number, "x"))
    assert record is not None and record.operation == "simplereenroll"


def test_reenroll_refuses_changed_names(estkit_server: EstkitTestServer, tmp_path: Path) -> None:
    """RFC 7030 §4.2.2 and issue 24: a changed CN, or a SAN-only change, is 409 (the full name
    set is compared, not just the CN)."""
    cert, key = _enroll_node(estkit_server, tmp_path, "same.example.com")
    store = estkit_server.open_store()
    before = last_event_id(store)
    response = _reenroll(estkit_server, tmp_path, cert, key, cn="other.example.com")
    assert response.status == 409, response.text
    assert "differ from the certificate being renewed" in response.text
    assert "CN:other.example.com" in response.text
    assert "differ from the certificate being renewed" in last_refusal(store, before).message
    before = last_event_id(store)
    response = _reenroll(
        estkit_server,
        tmp_path,
        cert,
        key,
        cn="same.example.com",
        sans=["same.example.com", "extra.example.com"],
    )
    assert response.status == 409, response.text
    assert "DNS:extra.example.com" in response.text
    assert "certificate has [CN:same.example.com, DNS:same.example.com]" in response.text
    assert last_refusal(store, before).fields["status"] == 409


def test_reenroll_needs_a_certificate_of_this_ca(
    estkit_server: EstkitTestServer, tmp_path: Path
) -> None:
    response = _reenroll(
        estkit_server,
        tmp_path,
        estkit_server.paths.device_certificate,
        estkit_server.paths.device_key,
        cn="estkit-demo-device",
    )
    assert response.status == 403
    assert "simplereenroll needs a valid certificate issued by this CA" in response.text


def test_revoke_then_crl_lists_it_and_reenroll_is_refused(fresh_server, tmp_path: Path) -> None:
    server = fresh_server()
    cert_pem, key = _enroll_node(server, tmp_path, "doomed.example.com")
    serial = run([tool("openssl"), "x509", "-in", cert_pem, "-noout", "-serial"]).stdout
    serial_hex = serial.decode().strip().split("=")[1].lower().lstrip("0")

    revoked = estkit_cli(
        "server", "revoke", server.data_dir, serial_hex, "--reason", "keyCompromise", "--json"
    )
    assert json.loads(revoked.stdout)["status"] == "revoked"
    listing = json.loads(estkit_cli("server", "certs", server.data_dir, "--json").stdout)[
        "certificates"
    ]
    assert {row["serial"]: row["status"] for row in listing}[serial_hex] == "revoked"

    response = curl(
        f"{server.url}/crl",
        cacert=server.paths.ca_certificates,
        content_type=None,
        workdir=tmp_path,
    )
    crl = tmp_path / "crl.der"
    crl.write_bytes(response.body)
    text = run(
        [tool("openssl"), "crl", "-inform", "DER", "-in", crl, "-noout", "-text"]
    ).stdout.decode()
    listed = [int(line.split(":")[1], 16) for line in text.splitlines() if "Serial Number:" in line]
    assert int(serial_hex, 16) in listed
    assert "Key Compromise" in text
    # The CRL verifies against the issuing CA (openssl as witness).
    verify = [tool("openssl"), "crl", "-inform", "DER", "-in", crl, "-noout", "-CAfile"]
    verified = run([*verify, server.paths.ca_certificates])
    assert b"verify OK" in verified.stdout + verified.stderr

    store = server.open_store()
    before = last_event_id(store)
    response = _reenroll(server, tmp_path, cert_pem, key, cn="doomed.example.com")
    assert response.status == 403
    assert "was revoked on" in response.text
    assert last_refusal(store, before).fields["status"] == 403


def test_after_a_rollover_older_certificates_are_revoked_on_their_own_issuers_crl(
    fresh_server, tmp_path: Path
) -> None:
    """A CRL must be signed by the certificate's issuer (RFC 5280): the pre-rollover issuing CA
    keeps publishing one at /crl/<generation>, which openssl then uses to refuse the leaf."""
    from estkit.ca.authority import CertificateAuthority

    server = fresh_server()
    cert_pem, _key = _enroll_node(server, tmp_path, "before-rollover.example.com")
    old_chain = tmp_path / "old-chain.pem"
    old_chain.write_bytes((server.data_dir / "ca" / "chain.pem").read_bytes())
    authority = CertificateAuthority.load(server.data_dir / "ca")
    old_generation = authority.generation
    authority.rollover()
    serial = run([tool("openssl"), "x509", "-in", cert_pem, "-noout", "-serial"]).stdout
    serial_hex = serial.decode().strip().split("=")[1].lower().lstrip("0")
    estkit_cli("server", "revoke", server.data_dir, serial_hex, "--reason", "keyCompromise")
    assert (server.data_dir / f"crl-{old_generation}.der").is_file()

    def fetch(path: str) -> Path:
        response = curl(
            f"{server.url}{path}",
            cacert=server.paths.ca_certificates,
            content_type=None,
            workdir=tmp_path,
        )
        assert response.status == 200, response.text
        out = tmp_path / (path.strip("/").replace("/", "-") + ".der")
        out.write_bytes(response.body)
        pem = out.with_suffix(".pem")
        run([tool("openssl"), "crl", "-inform", "DER", "-in", out, "-out", pem])
        return pem

    def verify_with(crl_pem: Path) -> subprocess.CompletedProcess[bytes]:
        return run(
            [tool("openssl"), "verify", "-crl_check", "-CRLfile", crl_pem,
             "-CAfile", old_chain, cert_pem],
            check=False,
        )  # fmt: skip

    refused = verify_with(fetch(f"/crl/{old_generation}"))
    assert refused.returncode != 0
    assert b"certificate revoked" in refused.stdout + refused.stderr
    # The current issuer's CRL cannot speak for the old generation's leaves.
    current = verify_with(fetch("/crl"))
    assert b"certificate revoked" not in current.stdout + current.stderr
    unknown = curl(
        f"{server.url}/crl/g99", cacert=server.paths.ca_certificates, content_type=None,
        workdir=tmp_path,
    )  # fmt: skip
    assert unknown.status == 404 and "no CA generation 'g99'" in unknown.text
