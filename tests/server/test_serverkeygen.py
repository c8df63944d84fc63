"""/serverkeygen with key encryption (S8, E5, RFC 7030 §4.4.1.2): the key comes back as CMS
EnvelopedData for the authenticating certificate, key transport for RSA and ECDH key agreement
for ECDSA (NMOS devices) certificates, decrypted by `openssl cms` as witness; other encryption
requests get a 501 that says what is supported."""

from __future__ import annotations

import base64
import email
import email.policy
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from asn1crypto import core
from cryptography import x509

from estkit.ca.manufacturer import ManufacturerCA, issue_device_certificate
from estkit.protocol.csr import build_csr, encode_csr_body
from estkit.protocol.keys import generate_private_key, load_private_key, public_keys_equal
from estkit.protocol.serverkeygen import (
    ASYMMETRIC_DECRYPT_KEY_IDENTIFIER,
    DECRYPT_KEY_IDENTIFIER,
)

from .witness import certificate_from_response, curl, last_event_id, last_refusal, run, tool

if TYPE_CHECKING:
    from conftest import EstkitTestServer


def _device(server: EstkitTestServer, directory: Path, key_type: str) -> tuple[Path, Path, bytes]:
    manufacturer = ManufacturerCA.load(server.paths.manufacturer_ca.parent)
    credential = issue_device_certificate(
        manufacturer, device_serial=f"KG-{key_type}", key_type=key_type
    )
    cert, key = directory / f"{key_type}.pem", directory / f"{key_type}.key"
    credential.write(cert, key)
    ski = credential.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    return cert, key, ski.value.digest


def _csr_file(directory: Path, oid: x509.ObjectIdentifier | None, identifier: bytes) -> Path:
    extra = [(oid, core.OctetString(identifier).dump())] if oid else []
    csr = build_csr(
        generate_private_key("p256"), common_name="keygen.example.com", extra_attributes=extra
    )
    path = directory / "keygen.b64"
    path.write_bytes(encode_csr_body(csr))
    return path


def _parts(content_type: str, body: bytes) -> list[email.message.Message]:
    message = email.message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=email.policy.HTTP
    )
    return list(message.iter_parts())


def _openssl_decrypts_the_key_part(
    server: EstkitTestServer, directory: Path, key_type: str
) -> bytes:
    """Ask for a key encrypted to a ``key_type`` device certificate; ``openssl cms`` opens it
    and the key matches the issued certificate. Returns ``openssl cms -cmsout -print``'s text."""
    cert, key, ski = _device(server, directory, key_type)
    response = curl(
        server.est_url("serverkeygen"),
        cacert=server.paths.ca_certificates,
        cert=cert,
        key=key,
        data=_csr_file(directory, ASYMMETRIC_DECRYPT_KEY_IDENTIFIER, ski),
        workdir=directory,
    )
    assert response.status == 200, response.text
    key_part, cert_part = _parts(response.header("Content-Type"), response.body)
    assert key_part.get_content_type() == "application/pkcs7-mime"
    assert key_part.get_param("smime-type") == "server-generated-key"
    envelope = directory / "envelope.der"
    envelope.write_bytes(base64.b64decode(key_part.get_payload()))
    decrypt = [tool("openssl"), "cms", "-decrypt", "-inform", "DER", "-in", str(envelope)]
    decrypted = run([*decrypt, "-recip", cert, "-inkey", key, "-binary"]).stdout
    generated = load_private_key(decrypted)
    issued = certificate_from_response(cert_part.get_payload().encode())
    assert public_keys_equal(issued.public_key(), generated.public_key())
    printed = run(
        [tool("openssl"), "cms", "-cmsout", "-print", "-inform", "DER", "-in", str(envelope)]
    )
    return printed.stdout


def test_key_encrypted_to_the_rsa_client_certificate(
    estkit_server: EstkitTestServer, tmp_path: Path
) -> None:
    printed = _openssl_decrypts_the_key_part(estkit_server, tmp_path, "rsa2048")
    assert b"d.ktri" in printed


@pytest.mark.parametrize(
    ("key_type", "scheme"),
    [
        ("p256", b"dhSinglePass-stdDH-sha256kdf-scheme"),
        ("p384", b"dhSinglePass-stdDH-sha384kdf-scheme"),
    ],
)
def test_key_encrypted_to_the_ecdsa_client_certificate(
    estkit_server: EstkitTestServer, tmp_path: Path, key_type: str, scheme: bytes
) -> None:
    # NMOS device certificates are usually ECDSA: key agreement (kari), not a 501.
    printed = _openssl_decrypts_the_key_part(estkit_server, tmp_path, key_type)
    assert b"d.kari" in printed
    assert scheme in printed
    assert b"id-aes256-wrap" in printed


@pytest.mark.parametrize(
    ("key_type", "oid", "identifier", "reason"),
    [
        ("rsa2048", DECRYPT_KEY_IDENTIFIER, b"symmetric-key-id", "symmetric key encryption"),
        ("rsa2048", ASYMMETRIC_DECRYPT_KEY_IDENTIFIER, b"\x01" * 20, "does not name the client"),
        ("p256", DECRYPT_KEY_IDENTIFIER, b"symmetric-key-id", "symmetric key encryption"),
        ("p256", ASYMMETRIC_DECRYPT_KEY_IDENTIFIER, b"\x02" * 20, "does not name the client"),
    ],
)
def test_unsupported_key_encryption_is_501(
    estkit_server: EstkitTestServer,
    tmp_path: Path,
    key_type: str,
    oid: x509.ObjectIdentifier,
    identifier: bytes,
    reason: str,
) -> None:
    cert, key, _ski = _device(estkit_server, tmp_path, key_type)
    store = estkit_server.open_store()
    before = last_event_id(store)
    response = curl(
        estkit_server.est_url("serverkeygen"),
        cacert=estkit_server.paths.ca_certificates,
        cert=cert,
        key=key,
        data=_csr_file(tmp_path, oid, identifier),
        workdir=tmp_path,
    )
    assert response.status == 501
    assert reason in response.text
    assert (
        "encrypt the generated key only to the RSA or EC (P-256, P-384, P-521) TLS" in response.text
    )
    assert last_refusal(store, before).fields["status"] == 501
