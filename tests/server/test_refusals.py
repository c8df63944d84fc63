"""Every refusal: the request reaches the server (audit event with status, path and reason) and
the client gets a text/plain explanation (T5 hygiene, S3, E15, T4, S5)."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from estkit.ca.manufacturer import (
    ManufacturerCA,
    create_manufacturer_ca,
    issue_device_certificate,
)
from estkit.protocol.limits import MAX_REQUEST_BODY_BYTES

from .witness import HttpResult, curl, last_event_id, last_refusal, openssl_csr, run, tool

if TYPE_CHECKING:
    from conftest import EstkitTestServer


def _send(
    server: EstkitTestServer,
    tmp_path: Path,
    *,
    operation: str = "simpleenroll",
    label: str | None = None,
    data: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    with_device: bool = True,
    **kwargs,
) -> tuple[HttpResult, int]:
    store = server.open_store()
    before = last_event_id(store)
    if with_device and cert is None:
        cert, key = server.paths.device_certificate, server.paths.device_key
    response = curl(
        server.est_url(operation, label),
        cacert=server.paths.ca_certificates,
        cert=cert,
        key=key,
        data=data,
        workdir=tmp_path,
        **kwargs,
    )
    return response, before


def _assert_refused(
    server: EstkitTestServer, response: HttpResult, before: int, status: int, *reason: str
) -> None:
    assert response.status == status, response.text
    assert response.header("Content-Type") == "text/plain; charset=utf-8"
    assert "Traceback" not in response.text
    event = last_refusal(server.open_store(), before)
    assert event.fields["status"] == status
    assert event.fields["path"].startswith(("/.well-known/est", "/crl"))
    for fragment in reason:
        assert fragment in response.text, response.text
        assert fragment in event.message, event.message


# --- HTTP hygiene -----------------------------------------------------------------------------


def test_wrong_method_405(estkit_server: EstkitTestServer, tmp_path: Path) -> None:
    response, before = _send(estkit_server, tmp_path, method="GET", content_type=None)
    _assert_refused(estkit_server, response, before, 405, "GET is not allowed on /simpleenroll")
    assert response.header("Allow") == "POST"
    csr = openssl_csr(tmp_path)
    response, before = _send(estkit_server, tmp_path, operation="cacerts", data=csr.b64)
    _assert_refused(estkit_server, response, before, 405, "POST is not allowed on /cacerts")
    assert response.header("Allow") == "GET, HEAD"


def test_oversized_body_413(estkit_server: EstkitTestServer, tmp_path: Path) -> None:
    big = tmp_path / "big.b64"
    big.write_bytes(b"A" * (MAX_REQUEST_BODY_BYTES + 1))
    response, before = _send(estkit_server, tmp_path, data=big)
    _assert_refused(estkit_server, response, before, 413, "over the limit of 65536 bytes")
    # Without a Content-Length (chunked), the streaming limit catches it.
    response, before = _send(
        estkit_server, tmp_path, data=big, headers=["Transfer-Encoding: chunked"]
    )
    _assert_refused(estkit_server, response, before, 413, "over the limit of 65536 bytes")


def test_wrong_content_type_415(estkit_server: EstkitTestServer, tmp_path: Path) -> None:
    csr = openssl_csr(tmp_path)
    response, before = _send(estkit_server, tmp_path, data=csr.b64, content_type="text/plain")
    _assert_refused(estkit_server, response, before, 415, "application/pkcs10, got text/plain")
    response, before = _send(
        estkit_server, tmp_path, data=csr.b64, content_type=None, headers=["Content-Type:"]
    )
    _assert_refused(estkit_server, response, before, 415, "none was sent")


def test_media_type_parameters_are_tolerated(
    estkit_server: EstkitTestServer, tmp_path: Path
) -> None:
    """E16: parameters and case do not matter."""
    csr = openssl_csr(tmp_path)
    response, _ = _send(
        estkit_server, tmp_path, data=csr.b64, content_type="Application/PKCS10; charset=x"
    )
    assert response.status == 200, response.text


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"!!!! not base64 !!!!", "not a usable PKCS#10 CSR"),
        (base64.b64encode(b"\x30\x03\x02\x01\x05"), "not a usable PKCS#10 CSR"),
    ],
)
def test_bad_body_400(
    estkit_server: EstkitTestServer, tmp_path: Path, body: bytes, reason: str
) -> None:
    data = tmp_path / "bad.b64"
    data.write_bytes(body)
    response, before = _send(estkit_server, tmp_path, data=data)
    _assert_refused(estkit_server, response, before, 400, reason)


def test_bad_csr_signature_400(estkit_server: EstkitTestServer, tmp_path: Path) -> None:
    csr = openssl_csr(tmp_path)
    der = bytearray(csr.der.read_bytes())
    der[-5] ^= 0x01  # inside the signature value
    tampered = tmp_path / "tampered.b64"
    tampered.write_bytes(base64.encodebytes(bytes(der)))
    response, before = _send(estkit_server, tmp_path, data=tampered)
    _assert_refused(estkit_server, response, before, 400, "signature")


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"key": "rsa1024"}, "1024"),
        ({"digest": "sha1"}, "sha1 is not accepted"),
        ({"cn": "*.example.com"}, "*.example.com"),
        ({"cn": "node.example.com", "sans": ["*.example.com"]}, "*.example.com"),
    ],
)
def test_csr_policy_400(
    estkit_server: EstkitTestServer, tmp_path: Path, kwargs: dict, reason: str
) -> None:
    """Weak keys, SHA-1 signatures and wildcards are refused (T4, C7)."""
    csr = openssl_csr(tmp_path, **kwargs)
    response, before = _send(estkit_server, tmp_path, data=csr.b64)
    _assert_refused(estkit_server, response, before, 400, reason)


def test_ip_address_refused_in_nmos_profile(
    estkit_server: EstkitTestServer, tmp_path: Path
) -> None:
    key = tmp_path / "ip.key"
    pem = tmp_path / "ip.csr"
    run([tool("openssl"), "req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-keyout", key, "-subj", "/CN=node.example.com", "-addext",
         "subjectAltName=DNS:node.example.com,IP:192.0.2.7", "-out", pem])  # fmt: skip
    response, before = _send(estkit_server, tmp_path, data=pem)
    _assert_refused(estkit_server, response, before, 400, "192.0.2.7")


# --- paths and labels -------------------------------------------------------------------------


def test_unknown_label_404(estkit_server: EstkitTestServer, tmp_path: Path) -> None:
    response, before = _send(estkit_server, tmp_path, operation="cacerts", label="nosuchlabel")
    _assert_refused(estkit_server, response, before, 404, "unknown EST label 'nosuchlabel'")


def test_unknown_operation_404(estkit_server: EstkitTestServer, tmp_path: Path) -> None:
    response, before = _send(estkit_server, tmp_path, operation="enrol")
    _assert_refused(estkit_server, response, before, 404, "no such EST resource")


def test_fullcmc_501(estkit_server: EstkitTestServer, tmp_path: Path) -> None:
    csr = openssl_csr(tmp_path)
    response, before = _send(estkit_server, tmp_path, operation="fullcmc", data=csr.b64)
    _assert_refused(estkit_server, response, before, 501, "fullcmc is not supported")


# --- client authentication (S3, S5) -----------------------------------------------------------


def test_no_client_certificate_403_without_challenge(
    estkit_server: EstkitTestServer, tmp_path: Path
) -> None:
    """S5: nmos mode never answers 401, not even to a client offering HTTP credentials."""
    csr = openssl_csr(tmp_path)
    response, before = _send(
        estkit_server,
        tmp_path,
        data=csr.b64,
        with_device=False,
        extra=["--user", "alice:wonderland", "--anyauth"],
    )
    _assert_refused(estkit_server, response, before, 403, "a TLS client certificate is required")
    assert response.header("WWW-Authenticate") is None


def _device(directory: Path, manufacturer: ManufacturerCA, **kwargs) -> tuple[Path, Path]:
    credential = issue_device_certificate(manufacturer, device_serial="TEST-1", **kwargs)
    cert, key = directory / "dev.pem", directory / "dev.key"
    credential.write(cert, key)
    return cert, key


def test_rogue_manufacturer_403(estkit_server: EstkitTestServer, tmp_path: Path) -> None:
    rogue = create_manufacturer_ca(tmp_path / "rogue", common_name="Rogue Devices Inc CA")
    cert, key = _device(tmp_path, rogue)
    csr = openssl_csr(tmp_path)
    response, before = _send(estkit_server, tmp_path, data=csr.b64, cert=cert, key=key)
    _assert_refused(
        estkit_server, response, before, 403, "client certificate not trusted", "Rogue Devices"
    )


def test_forged_issuer_name_403(estkit_server: EstkitTestServer, tmp_path: Path) -> None:
    """A rogue CA copying the trusted manufacturer's name: the signature gives it away."""
    forged = create_manufacturer_ca(tmp_path / "forged")  # same default name as the demo CA
    cert, key = _device(tmp_path, forged)
    csr = openssl_csr(tmp_path)
    response, before = _send(estkit_server, tmp_path, data=csr.b64, cert=cert, key=key)
    _assert_refused(estkit_server, response, before, 403, "signature does not verify")


def test_expired_manufacturer_certificate_403(
    estkit_server: EstkitTestServer, tmp_path: Path
) -> None:
    manufacturer = ManufacturerCA.load(estkit_server.paths.manufacturer_ca.parent)
    # The demo CA is backdated an hour: a device issued 30 minutes ago for 60 s has expired.
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)
    cert, key = _device(tmp_path, manufacturer, now=earlier, validity_seconds=60)
    csr = openssl_csr(tmp_path)
    response, before = _send(estkit_server, tmp_path, data=csr.b64, cert=cert, key=key)
    _assert_refused(estkit_server, response, before, 403, "expired on")


# --- internal errors --------------------------------------------------------------------------


def test_internal_error_is_500_with_incident_id(
    fresh_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """No traceback reaches the client; the log has it under the incident id."""
    import estkit.server.app as app_module

    def broken(*args: object) -> None:
        raise RuntimeError("simulated bug")

    server = fresh_server()
    monkeypatch.setattr(app_module, "enroll", broken)
    csr = openssl_csr(tmp_path)
    with caplog.at_level("ERROR", logger="estkit.server"):
        response, _ = _send(server, tmp_path, data=csr.b64)
    assert response.status == 500
    assert "incident" in response.text and "simulated bug" not in response.text
    incident = response.text.split("incident ")[1].split(")")[0]
    assert any(incident in record.getMessage() for record in caplog.records)
