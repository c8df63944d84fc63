"""Hostile inputs for the issuance tests: CSRs and client certificates that standard tools refuse
to make (several CNs, 5000-character names, NUL bytes, x400Address SANs, duplicated extensions).

Why DER patching: ``cryptography`` cannot write an x400Address or a duplicated extension, and
``openssl req``/``x509`` refuse them too. The certificate is built with a placeholder of the same
encoded length, the placeholder's bytes are swapped in the to-be-signed part, and the result is
signed again with the issuer's real key, so only the hostile part differs from a good one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from estkit.ca.manufacturer import ManufacturerCA
from estkit.protocol.keys import PrivateKey, generate_private_key, private_key_to_pem

# A DNSName "abcd" in a GeneralNames SEQUENCE: [2] IA5String, 4 octets.
PLACEHOLDER_NAME = "abcd"
PLACEHOLDER_DER = bytes.fromhex("8204") + PLACEHOLDER_NAME.encode()
# x400Address [3] of the same length holding ORAddress ::= SEQUENCE { SEQUENCE {} }.
X400_ADDRESS_DER = bytes.fromhex("a304") + bytes.fromhex("30023000")
# ediPartyName [5] of the same length: SEQUENCE { partyName [1] "" } shape, as raw bytes.
EDI_PARTY_DER = bytes.fromhex("a504") + bytes.fromhex("a1020c00")
# The same DNSName slot holding bytes that are not IA5 (ASCII): a malformed encoding.
NON_ASCII_DNS_DER = bytes.fromhex("8204") + bytes.fromhex("fffefdfc")
# Two private extensions whose OIDs differ in the last arc; patching makes them one OID twice.
DUPLICATE_FIRST = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1")
DUPLICATE_SECOND = x509.ObjectIdentifier("1.3.6.1.4.1.55555.2")


def _der_length(data: bytes, offset: int) -> tuple[int, int]:
    """(content length, offset of the content) of the TLV whose length byte is at ``offset``."""
    first = data[offset]
    if first < 0x80:
        return first, offset + 1
    count = first & 0x7F
    return int.from_bytes(data[offset + 1 : offset + 1 + count], "big"), offset + 1 + count


def _encode_tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + content


def _signature(key: PrivateKey, data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), algorithm)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key.sign(data, ec.ECDSA(algorithm))


def _resign(
    der: bytes,
    tbs: bytes,
    hash_algorithm: hashes.HashAlgorithm | None,
    key: PrivateKey,
    patches: Sequence[tuple[bytes, bytes]],
) -> bytes:
    """SEQUENCE { patched tbs, the same AlgorithmIdentifier, a new signature }."""
    original_tbs_length = len(tbs)
    for old, new in patches:
        assert len(old) == len(new), "a patch must keep the length"
        assert tbs.count(old) == 1, f"the patch target {old.hex()} must occur exactly once"
        tbs = tbs.replace(old, new)
    _, content = _der_length(der, 1)
    after_tbs = content + original_tbs_length
    algorithm_length, algorithm_content = _der_length(der, after_tbs + 1)
    algorithm_der = der[after_tbs : algorithm_content + algorithm_length]
    assert hash_algorithm is not None
    bit_string = _encode_tlv(0x03, b"\x00" + _signature(key, tbs, hash_algorithm))
    return _encode_tlv(0x30, tbs + algorithm_der + bit_string)


def resign_patched(
    certificate: x509.Certificate, key: PrivateKey, patches: Sequence[tuple[bytes, bytes]]
) -> bytes:
    """The DER of ``certificate`` with each ``(old, new)`` byte patch applied once to its
    to-be-signed part (same length), signed again with ``key``."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    return _resign(
        der, certificate.tbs_certificate_bytes, certificate.signature_hash_algorithm, key, patches
    )


def resign_patched_csr(
    csr: x509.CertificateSigningRequest, key: PrivateKey, patches: Sequence[tuple[bytes, bytes]]
) -> bytes:
    """Like :func:`resign_patched` for a CSR (signed again by the requester's own key)."""
    der = csr.public_bytes(serialization.Encoding.DER)
    return _resign(der, csr.tbs_certrequest_bytes, csr.signature_hash_algorithm, key, patches)


def oid_content(oid: x509.ObjectIdentifier) -> bytes:
    """The DER of an OBJECT IDENTIFIER (tag and length included), for patch targets."""
    from asn1crypto import core

    return bytes(core.ObjectIdentifier(oid.dotted_string).dump())


def device_certificate(
    manufacturer: ManufacturerCA,
    *,
    common_name: str = "hostile-device",
    serial_number: str = "HOSTILE-1",
    san: Sequence[x509.GeneralName] | None = None,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    patches: Sequence[tuple[bytes, bytes]] = (),
    key: PrivateKey | None = None,
    basic_constraints_ca: bool = False,
    ekus: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.CLIENT_AUTH,),
) -> tuple[bytes, PrivateKey]:
    """A manufacturer-signed client certificate (DER) with the given SAN and extensions, then
    the byte ``patches`` applied and signed again; returns (DER, device key). ``ekus=None``
    leaves the extendedKeyUsage out."""
    key = key or generate_private_key("p256")
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                    x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number),
                ]
            )
        )
        .issuer_name(manufacturer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.BasicConstraints(ca=basic_constraints_ca, path_length=None), critical=True
        )
    )
    if ekus is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    hash_algorithm = hashes.SHA256()
    certificate = builder.sign(manufacturer.private_key, hash_algorithm)  # type: ignore[arg-type]
    if not patches:
        return certificate.public_bytes(serialization.Encoding.DER), key
    return resign_patched(certificate, manufacturer.private_key, patches), key


def write_credential(directory: Path, name: str, der: bytes, key: PrivateKey) -> tuple[Path, Path]:
    """PEM files of a (possibly hostile) certificate and its key, for curl and ssl contexts."""
    import base64

    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    pem = "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_text(pem)
    key_path.write_bytes(private_key_to_pem(key))
    return cert_path, key_path


def hostile_csr(
    key: PrivateKey,
    attributes: Sequence[tuple[x509.ObjectIdentifier, str]],
    *,
    dns_names: Sequence[str] = (),
    general_names: Sequence[x509.GeneralName] = (),
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    patches: Sequence[tuple[bytes, bytes]] = (),
) -> bytes:
    """A CSR (DER) with exactly the given subject attributes, unvalidated (5000-character or
    NUL-holding names, several CNs), signed by ``key``."""
    name = x509.Name([x509.NameAttribute(oid, value, _validate=False) for oid, value in attributes])
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    sans = [x509.DNSName(dns) for dns in dns_names] + list(general_names)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    csr = builder.sign(key, hashes.SHA256())  # type: ignore[arg-type]
    if patches:
        return resign_patched_csr(csr, key, patches)
    return csr.public_bytes(serialization.Encoding.DER)
