"""Operator certificates for the web console, issued by a console-only "operators CA".

Why a CA of its own instead of the EST CA: every device enrolled through EST holds a certificate
from the EST CA, so "chains to our CA" cannot mean "is an operator". The console trusts only the
operators CA kept in ``DIR/console/``; a device certificate is refused at the TLS handshake and
again by :func:`verify_operator_certificate`.

The certificates are built directly with ``cryptography``'s builders: an operator is a person, so
the EST issuing profile (DNS SAN copied from the CN, serverAuth) does not fit.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from estkit.ca.store import OperatorCertificateRecord, normalize_serial_hex, open_store
from estkit.errors import EstkitError
from estkit.fileio import write_file_atomic, write_private_file_atomic
from estkit.protocol import key_usage
from estkit.server import load_config

CONSOLE_DIR_NAME = "console"
OPERATORS_DIR_NAME = "operators"
ADMIN_CA_CERT_NAME = "operators-ca.pem"
ADMIN_CA_KEY_NAME = "operators-ca.key"

ADMIN_CA_VALIDITY = dt.timedelta(days=10 * 365)
# One year: long enough that operators are not locked out every quarter, short enough that a
# forgotten laptop certificate dies on its own.
OPERATOR_CERT_VALIDITY = dt.timedelta(days=365)
# Same clock-skew allowance the EST CA uses for device certificates.
BACKDATE = dt.timedelta(minutes=5)
MAX_OPERATOR_NAME_LENGTH = 64
_OPERATOR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
PKCS12_PASSWORD_BYTES = 12


class OperatorCertificateError(EstkitError, ValueError):
    """An operator certificate could not be issued or was refused; the message says why."""


@dataclass(frozen=True)
class Operator:
    """Who is acting in the console, as recorded in the audit log."""

    name: str
    method: str  # "certificate" or "token"
    fingerprint: str | None = None


def console_dir(data_dir: Path) -> Path:
    return Path(data_dir) / CONSOLE_DIR_NAME


def admin_ca_paths(data_dir: Path) -> tuple[Path, Path]:
    base = console_dir(data_dir)
    return base / ADMIN_CA_CERT_NAME, base / ADMIN_CA_KEY_NAME


def validate_operator_name(name: str) -> str:
    """Operator names end up in file names, certificate subjects and the audit log: keep
    them plain."""
    if not name or len(name) > MAX_OPERATOR_NAME_LENGTH or not _OPERATOR_NAME.match(name):
        raise OperatorCertificateError(
            f"operator name {name!r} is not usable: use 1 to {MAX_OPERATOR_NAME_LENGTH} letters, "
            "digits, '.', '_', '@' or '-', starting with a letter or digit (e.g. 'alice')"
        )
    return name


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "estkit"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "console operators"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def ensure_admin_ca(data_dir: Path, *, now: dt.datetime | None = None) -> Path:
    """Create the operators CA in ``DIR/console/`` unless it exists; return its certificate path."""
    cert_path, key_path = admin_ca_paths(data_dir)
    if cert_path.exists() and key_path.exists():
        return cert_path
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("estkit console operators CA")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + ADMIN_CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            key_usage(key_cert_sign=True, crl_sign=True),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    # Key first: a crash in between leaves a key without a certificate, which the next call
    # simply replaces, never a certificate whose key is missing.
    write_private_file_atomic(key_path, _key_pem(key))
    write_file_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def load_admin_ca(data_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = admin_ca_paths(data_dir)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise OperatorCertificateError(f"{key_path} is not the operators CA's EC key")
    return cert, key


def operator_paths(data_dir: Path, name: str) -> tuple[Path, Path]:
    base = console_dir(data_dir) / OPERATORS_DIR_NAME
    return base / f"{name}.pem", base / f"{name}.key"


def issue_admin_certificate(
    data_dir: Path,
    name: str,
    *,
    force: bool = False,
    now: dt.datetime | None = None,
) -> tuple[Path, Path]:
    """Issue an operator certificate for ``name``; return ``(cert_path, key_path)``.

    The key is written 0600. An existing certificate for the same name is kept unless ``force``
    (two live certificates for one name are allowed, but replacing one should be deliberate).
    """
    data_dir = Path(data_dir)
    validate_operator_name(name)
    if not data_dir.is_dir():
        raise OperatorCertificateError(
            f"{data_dir} is not a data directory; create one with 'estkit server init {data_dir}'"
        )
    cert_path, key_path = operator_paths(data_dir, name)
    if cert_path.exists() and not force:
        raise OperatorCertificateError(
            f"an operator certificate for {name!r} already exists at {cert_path}",
            hint="force it to issue a new one",
            params=("force",),
        )
    ensure_admin_ca(data_dir, now=now)
    ca_cert, ca_key = load_admin_ca(data_dir)
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + OPERATOR_CERT_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            key_usage(digital_signature=True, key_agreement=True),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    # Recorded before the files are written: a certificate the store does not know is refused by
    # the console, so a failure here leaves nothing usable behind.
    _record(data_dir, cert, name)
    write_private_file_atomic(key_path, _key_pem(key))
    write_file_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _store_url(data_dir: Path) -> str:
    try:
        return load_config(data_dir).database_url
    except (OSError, ValueError) as exc:
        raise OperatorCertificateError(
            f"{data_dir} is not a server data directory ({exc}); create one with "
            f"'estkit server init {data_dir}'"
        ) from None


def _record(data_dir: Path, cert: x509.Certificate, name: str) -> None:
    with open_store(_store_url(data_dir)) as store:
        store.record_operator_certificate(cert, name)


def revoke_operator_certificates(
    data_dir: Path, serial_or_name: str, *, by: str
) -> list[OperatorCertificateRecord]:
    """Revoke one operator certificate (hex serial) or every valid one of an operator (name).

    The console checks the store on every request, so the revocation takes effect at once.
    Raises :class:`OperatorCertificateError` when nothing matches."""
    with open_store(_store_url(data_dir)) as store:
        records = store.list_operator_certificates()
        by_name = [r for r in records if r.name == serial_or_name]
        if by_name:
            targets = [r.serial for r in by_name if r.status == "valid"] or [by_name[-1].serial]
        else:
            try:
                serial = normalize_serial_hex(serial_or_name)
            except ValueError:
                serial = None
            if serial is None or not any(r.serial == serial for r in records):
                raise OperatorCertificateError(
                    f"no operator certificate with serial or operator name {serial_or_name!r}; "
                    "list them with 'estkit server admin-certs DIR'"
                )
            targets = [serial]
        return [store.revoke_operator_certificate(serial, by=by) for serial in targets]


def list_operator_certificates(data_dir: Path) -> list[OperatorCertificateRecord]:
    with open_store(_store_url(data_dir)) as store:
        return store.list_operator_certificates()


def export_pkcs12(cert_path: Path, key_path: Path, password: str | None = None) -> tuple[Path, str]:
    """Write ``NAME.p12`` next to the certificate for importing into a browser.

    Browsers insist on a password for PKCS#12 imports, so one is generated when not given.
    Returns the file path and the password.
    """
    password = password or secrets.token_urlsafe(PKCS12_PASSWORD_BYTES)
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise OperatorCertificateError(f"{key_path} is not an operator EC key")
    data = pkcs12.serialize_key_and_certificates(
        name=cert.subject.rfc4514_string().encode(),
        key=key,
        cert=cert,
        cas=None,
        encryption_algorithm=serialization.BestAvailableEncryption(password.encode()),
    )
    p12_path = Path(cert_path).with_suffix(".p12")
    write_private_file_atomic(p12_path, data)
    return p12_path, password


def verify_operator_certificate(
    cert: x509.Certificate, ca_cert: x509.Certificate, *, now: dt.datetime | None = None
) -> Operator:
    """Return the :class:`Operator` a presented certificate stands for, or raise why not.

    The TLS layer already verified the chain; this repeats the check in the application so that a
    console mounted with a TLS context trusting other roots still only lets operators in.
    """
    now = now or dt.datetime.now(dt.UTC)
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise OperatorCertificateError(
            "the client certificate was not issued by the console operators CA; "
            "get one with 'estkit server admin-cert DIR NAME'"
        ) from exc
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        raise OperatorCertificateError(
            f"the operator certificate is outside its validity period "
            f"({cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}); "
            # Flag kept: a browser shows this to an operator, who needs the command to type.
            "issue a new one with 'estkit server admin-cert DIR NAME --force'"
        )
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise OperatorCertificateError("the operator certificate has no clientAuth usage") from exc
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise OperatorCertificateError("the operator certificate has no clientAuth usage")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise OperatorCertificateError("the operator certificate has no common name")
    name = str(names[0].value)
    validate_operator_name(name)
    fingerprint = "sha256:" + cert.fingerprint(hashes.SHA256()).hex()
    return Operator(name=name, method="certificate", fingerprint=fingerprint)
