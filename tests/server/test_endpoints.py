"""Every EST endpoint, both key types, labels and body encodings, witnessed by curl and openssl
(S1, S6, S7, E1-E5, E7, E15, T4)."""

from __future__ import annotations

import base64
import email
import email.policy
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from estkit.protocol.csrattrs import CHALLENGE_PASSWORD_OID, decode_csrattrs
from estkit.protocol.encoding import decode_base64_body
from estkit.protocol.keys import load_private_key, public_keys_equal

from .witness import (
    certificate_from_response,
    curl,
    openssl_csr,
    openssl_verify,
    openssl_x509_text,
    pkcs7_to_pem,
    run,
    tool,
)

if TYPE_CHECKING:
    from conftest import EstkitTestServer

BASE64_LINE = re.compile(rb"^[A-Za-z0-9+/=]{1,64}$")


def _assert_base64_wrapped(body: bytes) -> None:
    """RFC 8951 interop: 64-column lines, LF line ends, final newline."""
    assert body.endswith(b"\n")
    lines = body.rstrip(b"\n").split(b"\n")
    assert all(BASE64_LINE.match(line) for line in lines), lines[:3]
    assert all(len(line) == 64 for line in lines[:-1])


def _enroll(
    server: EstkitTestServer, tmp_path: Path, *, key: str = "ec", label: str | None = None, **kw
):
    csr = openssl_csr(tmp_path, key=key, **kw)
    paths = server.paths
    return csr, curl(
        server.est_url("simpleenroll", label),
        cacert=paths.ca_certificates,
        cert=paths.device_certificate,
        key=paths.device_key,
        data=csr.b64,
        workdir=tmp_path,
    )


def test_cacerts_is_the_ca_bundle(estkit_server: EstkitTestServer, tmp_path: Path) -> None:
    response = curl(
        estkit_server.est_url("cacerts"),
        cacert=estkit_server.paths.ca_certificates,
        content_type=None,
        workdir=tmp_path,
    )
    assert response.status == 200
    assert response.header("Content-Type").startswith("application/pkcs7-mime")
    assert response.header("Content-Transfer-Encoding") == "base64"
    _assert_base64_wrapped(response.body)
    served = pkcs7_to_pem(response.body, tmp_path)
    expected = x509.load_pem_x509_certificates(estkit_server.paths.ca_certificates.read_bytes())
    assert x509.load_pem_x509_certificates(served.read_bytes()) == expected
    root = x509.load_pem_x509_certificate(estkit_server.paths.root_ca.read_bytes())
    assert root in expected


@pytest.mark.parametrize("key", ["ec", "ec384", "rsa"])
def test_simpleenroll_issues_a_verifiable_certificate(
    estkit_server: EstkitTestServer, tmp_path: Path, key: str
) -> None:
    csr, response = _enroll(estkit_server, tmp_path, key=key, cn="node1.example.com")
    assert response.status == 200, response.text
    assert response.header("Content-Type") == "application/pkcs7-mime; smime-type=certs-only"
    assert response.header("Content-Transfer-Encoding") == "base64"
    _assert_base64_wrapped(response.body)
    leaf = pkcs7_to_pem(response.body, tmp_path)
    verdict = openssl_verify(
        leaf, root=estkit_server.paths.root_ca, untrusted=estkit_server.paths.ca_certificates
    )
    assert verdict.strip().endswith(": OK"), verdict
    text = openssl_x509_text(leaf)
    # S7 + T4: both EKUs, the CN repeated as a DNS SAN, not a CA.
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert "DNS:node1.example.com" in text
    assert "CA:FALSE" in text
    cert = x509.load_pem_x509_certificate(leaf.read_bytes())
    assert cert.version == x509.Version.v3
    assert cert.serial_number > 0 and cert.serial_number.bit_length() >= 64
    key_obj = load_private_key(csr.key.read_bytes())
    assert public_keys_equal(cert.public_key(), key_obj.public_key())
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert ski.value.digest and aki.value.key_identifier
    # Committed before the response was sent (the store is read through another connection).
    record = estkit_server.open_store().get_issued(format(cert.serial_number, "x"))
    assert record is not None and record.operation == "simpleenroll"


def test_csr_body_forms_pem_der_and_spaced_base64(
    estkit_server: EstkitTestServer, tmp_path: Path
) -> None:
    """E15: base64 with any whitespace, PEM, raw DER are all accepted."""
    csr = openssl_csr(tmp_path)
    spaced = tmp_path / "spaced.b64"
    flat = base64.b64encode(csr.der.read_bytes()).decode()
    spaced.write_text(" \r\n\t".join(flat[i : i + 10] for i in range(0, len(flat), 10)))
    paths = estkit_server.paths
    for body in (csr.pem, csr.der, spaced):
        response = curl(
            estkit_server.est_url("simpleenroll"),
            cacert=paths.ca_certificates,
            cert=paths.device_certificate,
            key=paths.device_key,
            data=body,
            workdir=tmp_path,
        )
        assert response.status == 200, (body.name, response.text)


def test_labels_have_their_own_endpoints(estkit_server: EstkitTestServer, tmp_path: Path) -> None:
    """E7: the same operations under /.well-known/est/<label>/; the short label's profile
    (validity_seconds=10) applies."""
    _, response = _enroll(estkit_server, tmp_path, label="short")
    assert response.status == 200, response.text
    cert = certificate_from_response(response.body)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime.total_seconds() <= 10 + 300  # profile validity plus clock-skew backdating
    default_cert = certificate_from_response(_enroll(estkit_server, tmp_path)[1].body)
    assert (default_cert.not_valid_after_utc - default_cert.not_valid_before_utc).days >= 89
    record = estkit_server.open_store().get_issued(format(cert.serial_number, "x"))
    assert record is not None and record.label == "short"


def test_csrattrs_default_and_pop_label(estkit_server: EstkitTestServer, tmp_path: Path) -> None:
    """E4 + E14: /csrattrs is a base64 CsrAttrs; the pop label lists challengePassword."""
    paths = estkit_server.paths
    default = curl(
        estkit_server.est_url("csrattrs"),
        cacert=paths.ca_certificates,
        content_type=None,
        workdir=tmp_path,
    )
    pop = curl(
        estkit_server.est_url("csrattrs", "pop"),
        cacert=paths.ca_certificates,
        content_type=None,
        workdir=tmp_path,
    )
    for response in (default, pop):
        assert response.status == 200
        assert response.header("Content-Type") == "application/csrattrs"
        _assert_base64_wrapped(response.body)
    # openssl parses the DER as an ASN.1 SEQUENCE (an independent decoder).
    der = decode_base64_body(pop.body)
    parsed = run([tool("openssl"), "asn1parse", "-inform", "DER"], input=der).stdout.decode()
    assert "challengePassword" in parsed
    default_attrs, _ = decode_csrattrs(decode_base64_body(default.body))
    pop_attrs, _ = decode_csrattrs(der)
    assert not default_attrs.requires_pop
    assert pop_attrs.requires_pop
    assert any(oid.dotted_string == CHALLENGE_PASSWORD_OID for oid in pop_attrs.oids)


def _multipart_parts(content_type: str, body: bytes) -> list[email.message.Message]:
    message = email.message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=email.policy.HTTP
    )
    assert message.is_multipart()
    return list(message.iter_parts())


@pytest.mark.parametrize(("key", "expected_type"), [("ec", "ECDSA"), ("rsa", "RSA")])
def test_serverkeygen_returns_key_and_certificate(
    estkit_server: EstkitTestServer, tmp_path: Path, key: str, expected_type: str
) -> None:
    """E5 + S8: multipart/mixed with a PKCS#8 key and the certificate for that key; the key
    type follows the CSR's."""
    csr = openssl_csr(tmp_path, key=key, cn="keygen.example.com")
    paths = estkit_server.paths
    response = curl(
        estkit_server.est_url("serverkeygen"),
        cacert=paths.ca_certificates,
        cert=paths.device_certificate,
        key=paths.device_key,
        data=csr.b64,
        workdir=tmp_path,
    )
    assert response.status == 200, response.text
    content_type = response.header("Content-Type")
    assert content_type.startswith("multipart/mixed; boundary=")
    key_part, cert_part = _multipart_parts(content_type, response.body)
    assert key_part.get_content_type() == "application/pkcs8"
    assert cert_part.get_content_type() == "application/pkcs7-mime"
    key_der = base64.b64decode(key_part.get_payload())
    key_file = tmp_path / "generated.der"
    key_file.write_bytes(key_der)
    # openssl reads the PKCS#8 key on its own.
    described = run(
        [tool("openssl"), "pkey", "-inform", "DER", "-in", key_file, "-noout", "-text"]
    ).stdout.decode()
    assert ("ASN1 OID: prime256v1" in described) == (expected_type == "ECDSA")
    cert = certificate_from_response(cert_part.get_payload().encode())
    generated = load_private_key(key_der)
    assert public_keys_equal(cert.public_key(), generated.public_key())
    # The server generated a new key: the CSR's key is not the certified one.
    assert not public_keys_equal(
        cert.public_key(), load_private_key(csr.key.read_bytes()).public_key()
    )
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku and ExtendedKeyUsageOID.SERVER_AUTH in eku
    record = estkit_server.open_store().get_issued(format(cert.serial_number, "x"))
    assert record is not None and record.operation == "serverkeygen"


def test_crl_endpoint_serves_a_der_crl(estkit_server: EstkitTestServer, tmp_path: Path) -> None:
    response = curl(
        f"{estkit_server.url}/crl",
        cacert=estkit_server.paths.ca_certificates,
        content_type=None,
        workdir=tmp_path,
    )
    assert response.status == 200
    assert response.header("Content-Type") == "application/pkix-crl"
    crl_file = tmp_path / "crl.der"
    crl_file.write_bytes(response.body)
    text = run(
        [tool("openssl"), "crl", "-inform", "DER", "-in", crl_file, "-noout", "-text"]
    ).stdout.decode()
    assert "Certificate Revocation List" in text


def test_crl_distribution_point_when_configured(fresh_server, tmp_path: Path) -> None:
    """S6/T4: issued certificates point at the server's /crl when server.crl_url is set."""
    import dataclasses

    from estkit.server.config import load_config, save_config

    server = fresh_server()
    config = load_config(server.paths.config)
    save_config(dataclasses.replace(config, crl_url=f"{server.url}/crl"))
    _, response = _enroll(server, tmp_path)
    assert response.status == 200, response.text
    leaf = pkcs7_to_pem(response.body, tmp_path)
    text = openssl_x509_text(leaf)
    assert "X509v3 CRL Distribution Points" in text
    assert f"URI:{server.url}/crl" in text
