"""Client authentication: rfc7030-mode HTTP Basic/Digest (E9), manufacturer CRLs and the
expired-manufacturer option (S3)."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from estkit.ca.crl import RevokedEntry
from estkit.ca.manufacturer import ManufacturerCA, create_manufacturer_ca, issue_device_certificate
from estkit.fileio import write_file_atomic
from estkit.server.config import add_trusted_client_root, load_config

from .witness import curl, last_event_id, last_refusal, openssl_csr

if TYPE_CHECKING:
    from conftest import EstkitTestServer


def test_rfc7030_label_challenges_with_basic_and_digest(
    estkit_server: EstkitTestServer, tmp_path: Path
) -> None:
    csr = openssl_csr(tmp_path)
    store = estkit_server.open_store()
    before = last_event_id(store)
    response = curl(
        estkit_server.est_url("simpleenroll", "http"),
        cacert=estkit_server.paths.ca_certificates,
        data=csr.b64,
        workdir=tmp_path,
    )
    assert response.status == 401
    challenges = response.headers["www-authenticate"]
    assert challenges[0].startswith('Digest realm="estkit", qop="auth", algorithm=SHA-256')
    assert any("algorithm=MD5" in c for c in challenges)
    assert any(c.startswith("Basic ") for c in challenges)
    assert "authentication required" in last_refusal(store, before).message


def test_basic_and_digest_users_get_certificates(
    estkit_server: EstkitTestServer, tmp_path: Path
) -> None:
    paths = estkit_server.paths
    for scheme in ("--basic", "--digest"):
        csr = openssl_csr(tmp_path)
        response = curl(
            estkit_server.est_url("simpleenroll", "http"),
            cacert=paths.ca_certificates,
            data=csr.b64,
            extra=[scheme, "--user", "alice:wonderland"],
            workdir=tmp_path,
        )
        assert response.status == 200, (scheme, response.text)
    records = estkit_server.open_store().list_issued(label="http")
    assert {record.requester for record in records} >= {"user:alice"}


def test_rfc7030_label_with_approval_still_challenges_clients_without_credentials(
    fresh_server, tmp_path: Path
) -> None:
    server = fresh_server(
        users={"alice": "wonderland"},
        queued={"auth_mode": "rfc7030", "approval": "untrusted", "retry_after_seconds": 1},
    )
    paths = server.paths
    url = server.est_url("simpleenroll", "queued")
    # No certificate, no credentials: a 401 challenge, not a silent queue entry.
    bare = curl(url, cacert=paths.ca_certificates, data=openssl_csr(tmp_path).b64, workdir=tmp_path)
    assert bare.status == 401, bare.text
    assert any(c.startswith("Digest ") for c in bare.headers["www-authenticate"])
    # curl --digest starts without credentials (and without a body): it needs that challenge.
    for scheme in ("--digest", "--basic"):
        answer = curl(
            url,
            cacert=paths.ca_certificates,
            data=openssl_csr(tmp_path).b64,
            extra=[scheme, "--user", "alice:wonderland"],
            workdir=tmp_path,
        )
        assert answer.status == 200, (scheme, answer.text)
    # An untrusted client certificate is what the queue is for: 202, seen by the operator.
    rogue_ca = create_manufacturer_ca(tmp_path / "rogue", common_name="Unknown Vendor CA")
    rogue = issue_device_certificate(rogue_ca, device_serial="R-1")
    rogue.write(tmp_path / "rogue.pem", tmp_path / "rogue.key")
    queued = curl(
        url,
        cacert=paths.ca_certificates,
        cert=tmp_path / "rogue.pem",
        key=tmp_path / "rogue.key",
        data=openssl_csr(tmp_path).b64,
        workdir=tmp_path,
    )
    assert queued.status == 202, queued.text
    assert [r.status for r in server.open_store().list_requests()] == ["pending"]


def test_digest_with_httpx_client(estkit_server: EstkitTestServer, tmp_path: Path) -> None:
    """A second, independent Digest implementation (httpx) gets through as well."""
    csr = openssl_csr(tmp_path)
    with httpx.Client(
        verify=ssl.create_default_context(cafile=str(estkit_server.paths.ca_certificates))
    ) as client:
        response = client.post(
            estkit_server.est_url("simpleenroll", "http"),
            content=csr.b64.read_bytes(),
            headers={"Content-Type": "application/pkcs10"},
            auth=httpx.DigestAuth("alice", "wonderland"),
        )
    assert response.status_code == 200, response.text


def test_wrong_password_is_refused(estkit_server: EstkitTestServer, tmp_path: Path) -> None:
    store = estkit_server.open_store()
    for scheme in ("--basic", "--digest"):
        before = last_event_id(store)
        csr = openssl_csr(tmp_path)
        response = curl(
            estkit_server.est_url("simpleenroll", "http"),
            cacert=estkit_server.paths.ca_certificates,
            data=csr.b64,
            extra=[scheme, "--user", "alice:queen-of-hearts"],
            workdir=tmp_path,
        )
        assert response.status == 401, scheme
        assert "wrong user name or password for 'alice'" in last_refusal(store, before).message


def test_trusted_certificate_needs_no_password_on_rfc7030_label(
    estkit_server: EstkitTestServer, tmp_path: Path
) -> None:
    csr = openssl_csr(tmp_path)
    response = curl(
        estkit_server.est_url("simpleenroll", "http"),
        cacert=estkit_server.paths.ca_certificates,
        cert=estkit_server.paths.device_certificate,
        key=estkit_server.paths.device_key,
        data=csr.b64,
        workdir=tmp_path,
    )
    assert response.status == 200, response.text


def test_manufacturer_crl_revokes_a_device(fresh_server, tmp_path: Path) -> None:
    """S3: revocation of manufacturer certificates via a configured CRL file, picked up by the
    running server when the configuration changes."""
    server = fresh_server()
    manufacturer = ManufacturerCA.load(server.paths.manufacturer_ca.parent)
    credential = issue_device_certificate(manufacturer, device_serial="REVOKED-1")
    device_cert, device_key = tmp_path / "dev.pem", tmp_path / "dev.key"
    credential.write(device_cert, device_key)
    serial = credential.certificate.serial_number
    crl = manufacturer.build_crl([RevokedEntry(serial, dt.datetime.now(dt.UTC))])
    crl_path = tmp_path / "manufacturer.crl"
    write_file_atomic(crl_path, crl)
    add_trusted_client_root(server.paths.config, server.paths.manufacturer_ca, crl_path)
    assert load_config(server.paths.config).trusted_client_roots[0].crl == crl_path

    store = server.open_store()
    before = last_event_id(store)
    response = curl(
        server.est_url("simpleenroll"),
        cacert=server.paths.ca_certificates,
        cert=device_cert,
        key=device_key,
        data=openssl_csr(tmp_path).b64,
        workdir=tmp_path,
    )
    assert response.status == 403
    assert "is revoked by" in response.text
    assert last_refusal(store, before).fields["status"] == 403
    # The demo device (not on the CRL) still enrolls.
    ok = curl(
        server.est_url("simpleenroll"),
        cacert=server.paths.ca_certificates,
        cert=server.paths.device_certificate,
        key=server.paths.device_key,
        data=openssl_csr(tmp_path).b64,
        workdir=tmp_path,
    )
    assert ok.status == 200, ok.text


def test_expired_manufacturer_certificate_accepted_when_configured(
    fresh_server, tmp_path: Path
) -> None:
    """S3 MAY: an expired, unrevoked manufacturer certificate with accept_expired = true."""
    server = fresh_server()
    manufacturer = ManufacturerCA.load(server.paths.manufacturer_ca.parent)
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)
    credential = issue_device_certificate(
        manufacturer, device_serial="OLD-1", now=earlier, validity_seconds=60
    )
    cert, key = tmp_path / "old.pem", tmp_path / "old.key"
    credential.write(cert, key)

    def enroll() -> int:
        return curl(
            server.est_url("simpleenroll"),
            cacert=server.paths.ca_certificates,
            cert=cert,
            key=key,
            data=openssl_csr(tmp_path).b64,
            workdir=tmp_path,
        ).status

    assert enroll() == 403
    add_trusted_client_root(server.paths.config, server.paths.manufacturer_ca, accept_expired=True)
    assert enroll() == 200
