"""``serverkeygen(encrypt_key=True)`` with an ECDSA client certificate against the real server.

Why its own file: NMOS device certificates are usually ECDSA, so the server answers with CMS
EnvelopedData using key agreement (kari, RFC 5753) and the client must open it with its EC key;
until this existed only RSA client certificates could receive an encrypted key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from estkit.client import (
    AsyncEstClient,
    ClientCredentials,
    CsrSpec,
    EstClient,
    ServerKeygenResult,
)
from estkit.protocol import (
    common_name,
    describe_public_key,
    generate_private_key,
    public_keys_equal,
)


def _device(server: Any) -> ClientCredentials:
    """The manufacturer-issued device credential: ECDSA P-256, like an NMOS device's."""
    return ClientCredentials.from_files(server.paths.device_certificate, server.paths.device_key)


def _enrolled(server: Any, tmp_path: Path, key_type: str) -> ClientCredentials:
    """A CA-issued client certificate with a ``key_type`` key, to encrypt to."""
    spec = CsrSpec(key=generate_private_key(key_type), common_name="ec-client.example")
    with EstClient(
        server.url, trust=server.paths.ca_certificates, credentials=_device(server)
    ) as client:
        result = client.simpleenroll(spec, pop=False)
    cert_file, key_file = tmp_path / "client.pem", tmp_path / "client.key"
    cert_file.write_bytes(result.fullchain_pem())
    key_file.write_bytes(result.key_pem())
    return ClientCredentials.from_files(cert_file, key_file)


def _check(result: ServerKeygenResult, credentials: ClientCredentials, name: str) -> None:
    assert result.key_was_encrypted
    assert "server-generated-key" in result.key_media_type
    assert not any("unencrypted" in warning for warning in result.warnings), result.warnings
    assert public_keys_equal(result.certificate.public_key(), result.private_key.public_key())
    assert not public_keys_equal(result.private_key.public_key(), credentials.key.public_key())
    assert common_name(result.certificate) == name


def test_key_encrypted_to_the_ecdsa_device_certificate(estkit_server: Any) -> None:
    device = _device(estkit_server)
    assert describe_public_key(device.certificate.public_key()).curve == "secp256r1"
    with EstClient(
        estkit_server.url, trust=estkit_server.paths.ca_certificates, credentials=device
    ) as client:
        result = client.serverkeygen(common_name="sealed-ec.example", encrypt_key=True)
    _check(result, device, "sealed-ec.example")


@pytest.mark.parametrize("key_type", ["p256", "p384"])
def test_key_encrypted_to_an_enrolled_ecdsa_certificate(
    estkit_server: Any, tmp_path: Path, key_type: str
) -> None:
    credentials = _enrolled(estkit_server, tmp_path, key_type)
    with EstClient(
        estkit_server.url, trust=estkit_server.paths.ca_certificates, credentials=credentials
    ) as client:
        # A certificate of this CA may ask only for its own names (issue 24): re-key.
        result = client.serverkeygen(common_name="ec-client.example", encrypt_key=True)
    _check(result, credentials, "ec-client.example")


async def test_async_client_opens_the_ec_envelope(estkit_server: Any) -> None:
    device = _device(estkit_server)
    async with AsyncEstClient(
        estkit_server.url, trust=estkit_server.paths.ca_certificates, credentials=device
    ) as client:
        result = await client.serverkeygen(common_name="sealed-async.example", encrypt_key=True)
    _check(result, device, "sealed-async.example")
