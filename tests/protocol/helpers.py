"""Certificate factories and an ``openssl`` runner shared by the protocol tests."""

from __future__ import annotations

import datetime
import subprocess
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from estkit.protocol import PrivateKey

try:  # the tests/ directory is a package in some layouts and a sys.path entry in others
    from tests.system_packages import ensure_program
except ImportError:  # pragma: no cover - depends on how pytest was started
    from system_packages import ensure_program  # type: ignore[no-redef]

OPENSSL_TIMEOUT_SECONDS = 30
NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


def name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_cert(
    key: PrivateKey,
    subject: str,
    *,
    issuer_key: PrivateKey | None = None,
    issuer: str | None = None,
    ca: bool = True,
    not_before: datetime.datetime | None = None,
    dns: Sequence[str] = (),
    ski: bool = False,
) -> x509.Certificate:
    """A certificate for ``key``; self-signed unless ``issuer_key`` is given."""
    start = not_before or datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer or subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if dns:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False
        )
    if ski:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    return builder.sign(issuer_key or key, hashes.SHA256())


def openssl() -> str:
    return ensure_program("openssl", "openssl")


def run_openssl(*args: str, input_bytes: bytes | None = None, cwd: Path | None = None) -> bytes:
    """Run ``openssl`` and return stdout; fail the test with stderr when it exits non-zero."""
    result = subprocess.run(
        [openssl(), *args],
        input=input_bytes,
        capture_output=True,
        timeout=OPENSSL_TIMEOUT_SECONDS,
        cwd=cwd,
        check=False,
    )
    assert result.returncode == 0, (
        f"openssl {' '.join(args)} failed ({result.returncode}): {result.stderr.decode()}"
    )
    return result.stdout


def pem_key(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
