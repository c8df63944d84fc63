"""Keys and certificates reused across the protocol tests (key generation is the slow part)."""

from __future__ import annotations

import pytest
from cryptography import x509

from estkit.protocol import PrivateKey, generate_private_key

from .helpers import make_cert


@pytest.fixture(scope="session")
def p256_key() -> PrivateKey:
    return generate_private_key("p256")


@pytest.fixture(scope="session")
def p384_key() -> PrivateKey:
    return generate_private_key("p384")


@pytest.fixture(scope="session")
def p521_key() -> PrivateKey:
    return generate_private_key("p521")


@pytest.fixture(scope="session")
def rsa_key() -> PrivateKey:
    return generate_private_key("rsa2048")


@pytest.fixture(scope="session")
def ca_key() -> PrivateKey:
    return generate_private_key("p256")


@pytest.fixture(scope="session")
def ca_cert(ca_key: PrivateKey) -> x509.Certificate:
    return make_cert(ca_key, "estkit Test Root")


@pytest.fixture(scope="session")
def leaf_cert(p256_key: PrivateKey, ca_key: PrivateKey) -> x509.Certificate:
    return make_cert(
        p256_key,
        "device.example",
        issuer_key=ca_key,
        issuer="estkit Test Root",
        ca=False,
        dns=("device.example", "alt.example"),
    )


@pytest.fixture(scope="session")
def rsa_cert(rsa_key: PrivateKey) -> x509.Certificate:
    """An RSA client certificate with an SKI, the recipient for encrypted server-generated keys."""
    return make_cert(rsa_key, "rsa-client.example", ca=False, ski=True)
