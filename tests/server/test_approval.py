"""Manual approval (S4, E8): 202 + Retry-After, what the operator sees, and the round trip
through `estkit server requests / approve / reject`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from estkit.ca.manufacturer import create_manufacturer_ca, issue_device_certificate
from estkit.protocol.certs import sha256_fingerprint
from estkit.protocol.keys import load_private_key, public_keys_equal

from .witness import HttpResult, certificate_from_response, curl, openssl_csr, run

if TYPE_CHECKING:
    from conftest import EstkitTestServer


def estkit_cli(*args: str | Path, check: bool = True):
    return run([sys.executable, "-m", "estkit.cli.main", *args], check=check)


def _post(
    server: EstkitTestServer,
    tmp_path: Path,
    csr: Path,
    label: str,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    anonymous: bool = False,
) -> HttpResult:
    if not anonymous and cert is None:
        cert, key = server.paths.device_certificate, server.paths.device_key
    return curl(
        server.est_url("simpleenroll", label),
        cacert=server.paths.ca_certificates,
        cert=cert,
        key=key,
        data=csr,
        workdir=tmp_path,
    )


def _request_id(response: HttpResult) -> int:
    assert response.status == 202, response.text
    assert response.header("Retry-After") == "1"
    return int(response.text.split("request ")[1].split()[0])


def test_manual_approval_round_trip(estkit_server: EstkitTestServer, tmp_path: Path) -> None:
    csr = openssl_csr(
        tmp_path, cn="waiting.example.com", sans=["waiting.example.com", "alias.example.com"]
    )
    first = _post(estkit_server, tmp_path, csr.b64, "manual")
    request_id = _request_id(first)
    # Repeating the identical request does not queue a second one.
    assert _request_id(_post(estkit_server, tmp_path, csr.b64, "manual")) == request_id

    listing = estkit_cli("server", "requests", estkit_server.data_dir, "--json")
    rows = {row["id"]: row for row in json.loads(listing.stdout)["requests"]}
    row = rows[request_id]
    device = estkit_server.paths.device_certificate.read_bytes()
    device_cert = x509.load_pem_x509_certificates(device)[0]
    # S4: what an operator needs to decide.
    assert row["status"] == "pending"
    assert row["common_name"] == "waiting.example.com"
    assert row["dns_names"] == ["waiting.example.com", "alias.example.com"]
    assert row["key_type"] == "ECDSA P-256"
    assert row["client_subject"] == device_cert.subject.rfc4514_string()
    assert row["client_issuer"] == device_cert.issuer.rfc4514_string()
    assert row["client_fingerprint"] == sha256_fingerprint(device_cert)
    assert row["peer_address"].startswith("127.0.0.1:")
    human = estkit_cli("server", "requests", estkit_server.data_dir).stdout.decode()
    assert "waiting.example.com" in human and f"request {request_id}" in human

    estkit_cli("server", "approve", estkit_server.data_dir, str(request_id))
    issued = _post(estkit_server, tmp_path, csr.b64, "manual")
    assert issued.status == 200, issued.text
    cert = certificate_from_response(issued.body)
    assert public_keys_equal(cert.public_key(), load_private_key(csr.key.read_bytes()).public_key())
    record = estkit_server.open_store().get_request(request_id)
    assert record is not None and record.status == "issued"
    assert record.serial == format(cert.serial_number, "x")
    # A lost response can be fetched again: the same certificate, not a second one.
    again = certificate_from_response(_post(estkit_server, tmp_path, csr.b64, "manual").body)
    assert again == cert


def test_an_approval_does_not_cover_a_csr_asking_for_other_names(
    estkit_server: EstkitTestServer, tmp_path: Path
) -> None:
    approved = openssl_csr(tmp_path, cn="approved.example.com")
    request_id = _request_id(_post(estkit_server, tmp_path, approved.b64, "manual"))
    estkit_cli("server", "approve", estkit_server.data_dir, str(request_id))
    # Same key pair and device, other names: the operator never saw these.
    sneaky = openssl_csr(
        tmp_path, cn="sneaky.example.com", sans=["other.example.com"], key_file=approved.key
    )
    refused = _post(estkit_server, tmp_path, sneaky.b64, "manual")
    assert refused.status == 409, refused.text
    assert f"request {request_id} for this key pair is approved for other names" in refused.text
    assert "sneaky.example.com" in refused.text and "other.example.com" in refused.text
    store = estkit_server.open_store()
    assert store.get_request(request_id).status == "approved"  # nothing issued for it
    assert not [r for r in store.list_issued() if "sneaky" in r.subject]
    # The CSR the operator approved still gets its certificate.
    issued = _post(estkit_server, tmp_path, approved.b64, "manual")
    assert issued.status == 200, issued.text
    assert certificate_from_response(issued.body).subject.rfc4514_string() == (
        "2.5.4.5=ESTKIT-DEMO-0001,CN=approved.example.com"
    )


def test_rejected_request_gets_403(estkit_server: EstkitTestServer, tmp_path: Path) -> None:
    csr = openssl_csr(tmp_path, cn="unwanted.example.com")
    request_id = _request_id(_post(estkit_server, tmp_path, csr.b64, "manual"))
    estkit_cli("server", "reject", estkit_server.data_dir, str(request_id), "--note", "unknown")
    response = _post(estkit_server, tmp_path, csr.b64, "manual")
    assert response.status == 403
    assert "rejected by the operator" in response.text and "unknown" in response.text
    # Deciding twice is an error the CLI explains (no traceback).
    again = estkit_cli("server", "approve", estkit_server.data_dir, str(request_id), check=False)
    assert again.returncode != 0
    assert b"Traceback" not in again.stderr and b"rejected" in again.stderr


def test_untrusted_label_queues_only_the_unauthenticated(
    estkit_server: EstkitTestServer, tmp_path: Path
) -> None:
    trusted = _post(estkit_server, tmp_path, openssl_csr(tmp_path).b64, "untrusted")
    assert trusted.status == 200, trusted.text
    anonymous = _post(
        estkit_server, tmp_path, openssl_csr(tmp_path).b64, "untrusted", anonymous=True
    )
    anonymous_id = _request_id(anonymous)
    rogue_ca = create_manufacturer_ca(tmp_path / "rogue", common_name="Unknown Vendor CA")
    rogue = issue_device_certificate(rogue_ca, device_serial="X-1")
    rogue.write(tmp_path / "rogue.pem", tmp_path / "rogue.key")
    queued = _post(
        estkit_server,
        tmp_path,
        openssl_csr(tmp_path).b64,
        "untrusted",
        cert=tmp_path / "rogue.pem",
        key=tmp_path / "rogue.key",
    )
    rogue_id = _request_id(queued)
    store = estkit_server.open_store()
    assert store.get_request(anonymous_id).client_subject is None
    assert "Unknown Vendor CA" in store.get_request(rogue_id).client_issuer
