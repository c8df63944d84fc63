"""Building blocks for the certificates our CAs sign: CA certificates, leaf extensions, validity.

Why one module: the operational CA, the root rollover and the demo manufacturer CA must produce
certificates with the same extension rules (SKI/AKI, key usage per key type, basicConstraints,
validity clamped to the issuer), so those rules are written once here. Everything is built with
``cryptography``'s ``CertificateBuilder``; nothing here encodes ASN.1 by hand.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from estkit.ca.signer import Signer, sign_certificate
from estkit.protocol.certs import is_hostname, key_usage
from estkit.protocol.csr import MAX_COMMON_NAME_LENGTH
from estkit.protocol.keys import PrivateKey, PublicKey, supported_public_key

DAY_SECONDS = 86400
YEAR_SECONDS = 365 * DAY_SECONDS
# MAX_COMMON_NAME_LENGTH (X.520 ub-common-name, 64) lives with the CSR policy in protocol.csr.
# RFC 5280 §4.1.2.2: a positive integer of at most 20 octets.
MAX_SERIAL_BITS = 159


@dataclass(frozen=True)
class Validity:
    """A certificate's validity window (both ends timezone-aware UTC)."""

    not_before: datetime
    not_after: datetime


def utc_now(now: datetime | None = None) -> datetime:
    """``now`` checked to be timezone-aware, or the current UTC time."""
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("times must be timezone-aware UTC datetimes, got a naive datetime")
    return now.astimezone(UTC)


def clamp_validity(
    now: datetime,
    validity_seconds: int,
    *,
    backdate_seconds: int,
    issuer: x509.Certificate | None,
) -> Validity:
    """notBefore = now - backdate, notAfter = now + validity, both kept inside the issuer's window.

    Why clamp rather than refuse: a leaf outliving its issuer would fail validation on the day the
    issuer expires anyway; issuing it shorter keeps the certificate honest about when it stops
    working, which is what renewal agents schedule against.
    """
    not_before = now - timedelta(seconds=backdate_seconds)
    not_after = now + timedelta(seconds=validity_seconds)
    if issuer is not None:
        issuer_start = issuer.not_valid_before_utc
        issuer_end = issuer.not_valid_after_utc
        if now >= issuer_end:
            raise ValueError(
                f"the issuing CA '{issuer.subject.rfc4514_string()}' expired on "
                f"{issuer_end.isoformat()}; roll the CA over or create a new one"
            )
        if now < issuer_start:
            raise ValueError(
                f"the issuing CA '{issuer.subject.rfc4514_string()}' is not valid before "
                f"{issuer_start.isoformat()}; check the system clock"
            )
        not_before = max(not_before, issuer_start)
        not_after = min(not_after, issuer_end)
    # X.509 times have one-second resolution; drop microseconds so what we log is what is signed.
    return Validity(not_before.replace(microsecond=0), not_after.replace(microsecond=0))


def check_serial(serial: int) -> int:
    """A caller-supplied serial must be a positive RFC 5280 serial."""
    if isinstance(serial, bool) or not isinstance(serial, int):
        raise ValueError(f"a certificate serial must be an int, got {serial!r}")
    if serial <= 0 or serial.bit_length() > MAX_SERIAL_BITS:
        raise ValueError(
            f"certificate serial {serial} is out of range: RFC 5280 requires a positive number "
            "of at most 20 octets"
        )
    return serial


def new_serial() -> int:
    """A positive random serial of 159 bits (``x509.random_serial_number``)."""
    return x509.random_serial_number()


def subject_key_identifier(public_key: PublicKey) -> x509.SubjectKeyIdentifier:
    """RFC 5280 §4.2.1.2 method 1 (SHA-1 of the subjectPublicKey), as OpenSSL computes it."""
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


def authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The AKI pointing at ``issuer``: its SKI when it has one, else one derived from its key."""
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(
            supported_public_key(issuer.public_key())
        )
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def leaf_key_usage(public_key: PublicKey) -> x509.KeyUsage:
    """digitalSignature for every key; keyEncipherment too for RSA (TLS 1.2 RSA key transport)."""
    return key_usage(
        digital_signature=True, key_encipherment=isinstance(public_key, rsa.RSAPublicKey)
    )


CA_KEY_USAGE = key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True)


def simple_name(common_name: str, organization: str | None = None) -> x509.Name:
    """``CN=…[, O=…]`` with the length limit checked so the error is ours, not an ASN.1 one."""
    if not common_name or len(common_name) > MAX_COMMON_NAME_LENGTH:
        raise ValueError(
            f"common name {common_name!r} must be 1 to {MAX_COMMON_NAME_LENGTH} characters"
        )
    attributes = []
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def sign_ca_certificate(
    *,
    subject: x509.Name,
    public_key: PublicKey,
    issuer_name: x509.Name,
    issuer_key: PrivateKey | Signer,
    issuer_key_identifier: x509.AuthorityKeyIdentifier | None,
    validity: Validity,
    path_length: int | None,
    serial: int | None = None,
) -> x509.Certificate:
    """A CA certificate (CA:TRUE, keyCertSign + cRLSign, SKI, AKI).

    ``issuer_key_identifier`` is None for a self-signed root, whose AKI then names its own key.
    Rollover cross certificates pass the other key's identifier.
    """
    aki = issuer_key_identifier or x509.AuthorityKeyIdentifier.from_issuer_public_key(
        issuer_key.public_key()
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(check_serial(serial) if serial is not None else new_serial())
        .not_valid_before(validity.not_before)
        .not_valid_after(validity.not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(subject_key_identifier(public_key), critical=False)
        .add_extension(aki, critical=False)
    )
    return sign_certificate(builder, issuer_key)


def sign_root_certificate(
    *,
    name: x509.Name,
    key: PrivateKey | Signer,
    validity: Validity,
    path_length: int | None,
) -> x509.Certificate:
    """A self-signed CA certificate for ``key``: issuer and subject ``name``, AKI its own key."""
    return sign_ca_certificate(
        subject=name,
        public_key=key.public_key(),
        issuer_name=name,
        issuer_key=key,
        issuer_key_identifier=None,
        validity=validity,
        path_length=path_length,
    )


def parse_ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``name`` spells, or None."""
    try:
        return ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return None


def general_names_for_hosts(hostnames: Sequence[str]) -> list[x509.GeneralName]:
    """DNS names as DNSName, IP literals as IPAddress (a server reached as https://127.0.0.1
    needs an IP SAN for hostname verification to pass)."""
    names: list[x509.GeneralName] = []
    for host in hostnames:
        address = parse_ip(host)
        if address is not None:
            names.append(x509.IPAddress(address))
        elif is_hostname(host):
            names.append(x509.DNSName(host))
        else:
            raise ValueError(
                f"{host!r} is neither a DNS host name nor an IP address; use names like "
                "'est.example.com' or '127.0.0.1'"
            )
    return names


def server_ekus() -> x509.ExtendedKeyUsage:
    """serverAuth + clientAuth: what BCP-003-03 (S7) asks of every NMOS certificate."""
    return x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])


def public_key_of(key: PrivateKey | PublicKey) -> PublicKey:
    """The public half of a private key, or the key itself when it is already public."""
    if isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        return key.public_key()
    return key


__all__ = [
    "CA_KEY_USAGE",
    "DAY_SECONDS",
    "MAX_COMMON_NAME_LENGTH",
    "YEAR_SECONDS",
    "Validity",
    "authority_key_identifier",
    "check_serial",
    "clamp_validity",
    "general_names_for_hosts",
    "leaf_key_usage",
    "new_serial",
    "parse_ip",
    "public_key_of",
    "server_ekus",
    "sign_ca_certificate",
    "sign_root_certificate",
    "simple_name",
    "subject_key_identifier",
    "utc_now",
]
