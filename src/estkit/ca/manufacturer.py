"""A demo "manufacturer" CA and the device certificates it issues (BCP-003-03 C1).

Why estkit ships this: an NMOS node's first enrollment is authenticated with a certificate its
manufacturer put on the device at the factory. A self-hosted lab has no manufacturer, so
``estkit server init`` makes a stand-in: a 30-year CA and one device certificate with the
``serialNumber`` subject attribute and the clientAuth EKU, which the server trusts for
``/simpleenroll``. Nothing here is used to sign operational certificates.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from estkit.ca.builders import (
    MAX_COMMON_NAME_LENGTH,
    YEAR_SECONDS,
    Validity,
    authority_key_identifier,
    clamp_validity,
    leaf_key_usage,
    new_serial,
    sign_root_certificate,
    simple_name,
    subject_key_identifier,
    utc_now,
)
from estkit.ca.crl import DEFAULT_NEXT_UPDATE_SECONDS, RevokedEntry, sign_crl
from estkit.ca.errors import CaError
from estkit.fileio import (
    load_credential_pair,
    replace_credential_pair,
    write_file_atomic,
    write_private_file_atomic,
)
from estkit.protocol.certs import certificates_to_pem
from estkit.protocol.keys import (
    PrivateKey,
    generate_private_key,
    private_key_to_pem,
    signature_hash_for,
    supported_private_key,
)

# BCP-003-03 C1: manufacturer device certificates RECOMMENDED valid for at least 30 years.
MANUFACTURER_CA_VALIDITY_SECONDS = 30 * YEAR_SECONDS
DEVICE_CERT_VALIDITY_SECONDS = 30 * YEAR_SECONDS
MANUFACTURER_CA_BACKDATE_SECONDS = 3600
DEVICE_BACKDATE_SECONDS = 300
MANUFACTURER_CERT_FILE = "manufacturer-ca.pem"
MANUFACTURER_KEY_FILE = "manufacturer-ca.key"


class ManufacturerError(CaError):
    """The manufacturer CA cannot be created or loaded; the message says why."""


@dataclass(frozen=True)
class ManufacturerCA:
    """A manufacturer CA loaded in memory, with where its files live."""

    certificate: x509.Certificate
    private_key: PrivateKey
    certificate_path: Path
    key_path: Path

    @classmethod
    def load(cls, directory: Path) -> ManufacturerCA:
        """Load ``manufacturer-ca.pem``/``.key`` from ``directory``."""
        directory = Path(directory)
        cert_path, key_path = directory / MANUFACTURER_CERT_FILE, directory / MANUFACTURER_KEY_FILE
        try:
            certs, key = load_credential_pair(cert_path, key_path)
            ca_key = supported_private_key(key)
        except (OSError, ValueError) as exc:
            raise ManufacturerError(
                f"cannot load the manufacturer CA from {directory}: {exc}"
            ) from None
        return cls(certs[0], ca_key, cert_path, key_path)

    def build_crl(
        self,
        revoked: Iterable[RevokedEntry],
        *,
        now: datetime | None = None,
        next_update_seconds: int = DEFAULT_NEXT_UPDATE_SECONDS,
    ) -> bytes:
        """A DER CRL of this manufacturer (for the server's manufacturer-CRL files)."""
        return sign_crl(
            self.certificate,
            self.private_key,
            revoked,
            now=utc_now(now),
            next_update_seconds=next_update_seconds,
        )


@dataclass(frozen=True)
class DeviceCredential:
    """A device's factory certificate, its key, and the manufacturer CA that signed it."""

    certificate: x509.Certificate
    private_key: PrivateKey
    manufacturer_certificate: x509.Certificate

    @property
    def certificate_chain_pem(self) -> bytes:
        """Device certificate then manufacturer CA: what a client presents in TLS."""
        return certificates_to_pem([self.certificate, self.manufacturer_certificate])

    @property
    def private_key_pem(self) -> bytes:
        return private_key_to_pem(self.private_key)

    def write(self, certificate_path: Path, key_path: Path) -> None:
        """Install certificate chain and key as a pair (key 0600, both atomic)."""
        replace_credential_pair(
            certificate_path, self.certificate_chain_pem, key_path, self.private_key_pem
        )


def create_manufacturer_ca(
    directory: Path,
    *,
    common_name: str = "estkit Demo Manufacturer CA",
    organization: str | None = "estkit demo manufacturer",
    key_type: str = "p384",
    validity_seconds: int = MANUFACTURER_CA_VALIDITY_SECONDS,
    now: datetime | None = None,
) -> ManufacturerCA:
    """Create a self-signed manufacturer CA in ``directory`` (key 0600, written atomically)."""
    directory = Path(directory)
    now = utc_now(now)
    try:
        name = simple_name(common_name, organization)
        key = generate_private_key(key_type)
    except ValueError as exc:
        raise ManufacturerError(str(exc)) from None
    validity = clamp_validity(
        now, validity_seconds, backdate_seconds=MANUFACTURER_CA_BACKDATE_SECONDS, issuer=None
    )
    certificate = sign_root_certificate(name=name, key=key, validity=validity, path_length=0)
    cert_path, key_path = directory / MANUFACTURER_CERT_FILE, directory / MANUFACTURER_KEY_FILE
    # Key first: a crash in between leaves a key without certificate, which load() reports.
    write_private_file_atomic(key_path, private_key_to_pem(key))
    write_file_atomic(cert_path, certificates_to_pem([certificate]))
    return ManufacturerCA(certificate, key, cert_path, key_path)


def issue_device_certificate(
    manufacturer: ManufacturerCA,
    *,
    device_serial: str,
    common_name: str | None = None,
    key_type: str = "p256",
    private_key: PrivateKey | None = None,
    validity_seconds: int = DEVICE_CERT_VALIDITY_SECONDS,
    now: datetime | None = None,
) -> DeviceCredential:
    """A factory device certificate: subject ``CN``, ``serialNumber`` (the device serial, C1) and
    ``O`` of the manufacturer; EKU clientAuth; validity clamped to the manufacturer CA."""
    if not device_serial or len(device_serial) > 64:
        raise ManufacturerError(
            f"device serial {device_serial!r} must be 1 to 64 characters (X.520 serialNumber)"
        )
    device_name = common_name or f"estkit-device-{device_serial}"[:MAX_COMMON_NAME_LENGTH]
    if len(device_name) > MAX_COMMON_NAME_LENGTH:
        raise ManufacturerError(
            f"device common name {device_name!r} is longer than {MAX_COMMON_NAME_LENGTH} characters"
        )
    now = utc_now(now)
    try:
        key = private_key if private_key is not None else generate_private_key(key_type)
    except ValueError as exc:
        raise ManufacturerError(str(exc)) from None
    public_key = key.public_key()
    attributes: list[x509.NameAttribute[str | bytes]] = [
        x509.NameAttribute(NameOID.COMMON_NAME, device_name),
        x509.NameAttribute(NameOID.SERIAL_NUMBER, device_serial),
    ]
    issuer_orgs = manufacturer.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    if issuer_orgs:
        attributes.insert(0, issuer_orgs[0])
    try:
        validity: Validity = clamp_validity(
            now,
            validity_seconds,
            backdate_seconds=DEVICE_BACKDATE_SECONDS,
            issuer=manufacturer.certificate,
        )
    except ValueError as exc:
        raise ManufacturerError(str(exc)) from None
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attributes))
        .issuer_name(manufacturer.certificate.subject)
        .public_key(public_key)
        .serial_number(new_serial())
        .not_valid_before(validity.not_before)
        .not_valid_after(validity.not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(leaf_key_usage(public_key), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(subject_key_identifier(public_key), critical=False)
        .add_extension(authority_key_identifier(manufacturer.certificate), critical=False)
    )
    certificate = builder.sign(
        manufacturer.private_key, signature_hash_for(manufacturer.private_key)
    )
    return DeviceCredential(certificate, key, manufacturer.certificate)


__all__ = [
    "DEVICE_CERT_VALIDITY_SECONDS",
    "MANUFACTURER_CA_VALIDITY_SECONDS",
    "DeviceCredential",
    "ManufacturerCA",
    "ManufacturerError",
    "create_manufacturer_ca",
    "issue_device_certificate",
]
