"""A rogue manufacturer chain: the same names as the real one, signed with different keys.

Why this shape: a server that checks a client certificate by comparing subject or issuer *names*
(or that trusts anything whose issuer "looks like" the manufacturer) accepts this chain; only a
server that verifies the signature against the real manufacturer CA refuses it (BCP-003-03 S3).
The prototype's rogue test used a fixed file; generating it on the fly makes the check work against
any manufacturer chain.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from estkit.conformance.target import Identity, PrivateKey
from estkit.protocol import key_usage, signature_hash_for

ROGUE_VALIDITY = timedelta(days=30)
ROGUE_BACKDATE = timedelta(hours=1)
MAX_MIRRORED_RSA_BITS = 4096
"""Bigger RSA keys only make generation slow; the key size does not matter to the check."""


def _like(public_key: object) -> PrivateKey:
    """A new private key of the same family and size as ``public_key``."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return ec.generate_private_key(public_key.curve)
    if isinstance(public_key, rsa.RSAPublicKey):
        bits = min(max(public_key.key_size, 2048), MAX_MIRRORED_RSA_BITS)
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return ec.generate_private_key(ec.SECP256R1())


def _mirror(
    subject: x509.Name,
    issuer: x509.Name,
    key: PrivateKey,
    signer: PrivateKey,
    *,
    is_ca: bool,
    now: datetime,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(now - ROGUE_BACKDATE)
        .not_valid_after(now + ROGUE_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
    )
    if is_ca:
        usage = key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True)
    else:
        usage = key_usage(
            digital_signature=True, key_encipherment=isinstance(key, rsa.RSAPrivateKey)
        )
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    builder = builder.add_extension(usage, critical=True)
    return builder.sign(signer, signature_hash_for(signer))


def make_rogue_identity(
    real: Identity, *, now: datetime | None = None
) -> tuple[Identity, list[x509.Certificate]]:
    """Mirror ``real`` (leaf + CAs) with fresh keys; returns the identity and the rogue CA(s).

    When ``real`` holds only the leaf, a rogue CA named like the leaf's issuer is made up.
    """
    now = now or datetime.now(UTC)
    real_cas = list(real.chain[1:])
    if real_cas:
        templates = [(ca.subject, ca.issuer, ca.public_key()) for ca in real_cas]
    else:
        leaf_issuer = real.certificate.issuer
        templates = [(leaf_issuer, leaf_issuer, real.certificate.public_key())]
    # Sign from the top of the chain down, each rogue CA signed by the rogue CA above it.
    rogue_cas: list[x509.Certificate] = []
    signer: PrivateKey | None = None
    for subject, issuer, public_key in reversed(templates):
        key = _like(public_key)
        cert = _mirror(subject, issuer, key, signer or key, is_ca=True, now=now)
        rogue_cas.insert(0, cert)
        signer = key
    assert signer is not None
    leaf_key = _like(real.certificate.public_key())
    leaf = _mirror(
        real.certificate.subject,
        real.certificate.issuer,
        leaf_key,
        signer,
        is_ca=False,
        now=now,
    )
    identity = Identity(name="rogue", chain=(leaf, *rogue_cas), key=leaf_key)
    return identity, rogue_cas
