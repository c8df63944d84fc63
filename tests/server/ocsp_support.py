"""Helpers for the OCSP/CRL tests: issue certificates into a test server's CA and store, and run
``openssl ocsp`` as the real client."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estkit.ca.authority import CertificateAuthority
from estkit.ca.profiles import Profile

from .witness import tool

if TYPE_CHECKING:
    from conftest import EstkitTestServer


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    path: Path

    @property
    def serial_hex(self) -> str:
        return format(self.certificate.serial_number, "x")


def issuer_pem(server: EstkitTestServer, tmp_path: Path) -> Path:
    authority = CertificateAuthority.load(server.paths.data_dir / "ca")
    path = tmp_path / "issuer.pem"
    path.write_bytes(authority.issuer_certificate.public_bytes(serialization.Encoding.PEM))
    return path


def issue(server: EstkitTestServer, tmp_path: Path, name: str) -> Issued:
    """A leaf issued by the server's CA and recorded in its store (as an enrollment would)."""
    authority = CertificateAuthority.load(server.paths.data_dir / "ca")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    certificate = authority.issue(csr, Profile())
    server.open_store().record_issued(certificate, operation="simpleenroll", label=None)
    path = tmp_path / f"{name}.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return Issued(certificate, path)


def openssl_ocsp(
    server: EstkitTestServer,
    issuer: Path,
    cert: Path,
    *extra: str | Path,
    url: str | None = None,
    respin: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``openssl ocsp`` against the server's /ocsp over HTTPS (or ``url``, or checking the
    answer in the file ``respin`` instead of asking), verifying with the CA bundle."""
    source: list[str | Path] = (
        ["-respin", respin] if respin else ["-url", url or f"{server.url}/ocsp"]
    )
    return subprocess.run(
        [
            tool("openssl"),
            "ocsp",
            *source,
            "-issuer",
            issuer,
            "-cert",
            cert,
            "-CAfile",
            server.paths.ca_certificates,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
