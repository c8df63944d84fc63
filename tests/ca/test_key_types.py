"""A CA key of a type the CA cannot sign with is refused when loaded, with the reason.

The manufacturer CA's key file may be anything an operator drops in; the type checker made the
narrowing to RSA/EC explicit at load time (issue 22 item 2), so a wrong type is a clear
ManufacturerError instead of a failure deep inside signing.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from estkit.ca.manufacturer import (
    MANUFACTURER_CERT_FILE,
    MANUFACTURER_KEY_FILE,
    ManufacturerCA,
    ManufacturerError,
    create_manufacturer_ca,
)


def test_manufacturer_ca_with_an_ed25519_key_is_refused_by_type(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Ed25519 manufacturer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, None)
    )
    (tmp_path / MANUFACTURER_CERT_FILE).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / MANUFACTURER_KEY_FILE).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ManufacturerError) as caught:
        ManufacturerCA.load(tmp_path)
    message = str(caught.value)
    assert f"cannot load the manufacturer CA from {tmp_path}" in message
    # The key type is named, and what to use instead (the wording belongs to protocol.keys).
    assert "Ed25519PrivateKey" in message
    assert "RSA or ECDSA" in message


def test_manufacturer_ca_with_an_ec_key_loads(tmp_path: Path) -> None:
    """Control: the CA estkit creates itself loads through the same narrowing."""
    created = create_manufacturer_ca(tmp_path)
    loaded = ManufacturerCA.load(tmp_path)
    assert loaded.certificate == created.certificate
    assert loaded.private_key.private_numbers() == created.private_key.private_numbers()
