"""Fixtures for the CA tests: keys made once per session, CAs, an openssl runner, store URLs.

Key generation dominates the run time (RSA 4096 takes seconds), so every key type is generated
once and shared; tests that need a fresh CA use the cheap P-256 type.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from cryptography import x509

from estkit.ca import CertificateAuthority
from estkit.protocol import PrivateKey, certificates_to_pem, generate_private_key

from .pg_fixture import PostgresServer, postgres_server

try:
    from tests.system_packages import ensure_program
except ModuleNotFoundError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from system_packages import ensure_program  # type: ignore[no-redef]

__all__ = ["postgres_server"]

SUBJECT_KEY_TYPES = ("rsa2048", "rsa3072", "rsa4096", "p256", "p384", "p521")


@pytest.fixture(scope="session")
def subject_keys() -> dict[str, PrivateKey]:
    """One private key per supported subject key type (generated once: RSA 4096 is slow)."""
    return {key_type: generate_private_key(key_type) for key_type in SUBJECT_KEY_TYPES}


@pytest.fixture(scope="session")
def openssl_bin() -> str:
    return ensure_program("openssl", "openssl")


class OpenSSL:
    """Runs the openssl command line as an independent witness of what we produce."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self._counter = 0

    def write_pem(self, certs: Sequence[x509.Certificate], name: str | None = None) -> Path:
        self._counter += 1
        path = self.workdir / (name or f"certs-{self._counter}.pem")
        path.write_bytes(certificates_to_pem(certs))
        return path

    def run(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, *map(str, args)], capture_output=True, text=True, timeout=60
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"openssl {' '.join(map(str, args))} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def text(self, cert: x509.Certificate) -> str:
        return self.run("x509", "-noout", "-text", "-in", self.write_pem([cert])).stdout

    def verify(
        self,
        leaf: x509.Certificate,
        *,
        roots: Sequence[x509.Certificate],
        untrusted: Sequence[x509.Certificate] = (),
        extra: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        """``openssl verify -CAfile roots -untrusted intermediates leaf`` (not checked)."""
        args: list[str | Path] = ["verify", "-CAfile", self.write_pem(roots)]
        if untrusted:
            args += ["-untrusted", self.write_pem(untrusted)]
        args += [*extra, self.write_pem([leaf])]
        return self.run(*args, check=False)


@pytest.fixture
def openssl(openssl_bin: str, tmp_path: Path) -> OpenSSL:
    return OpenSSL(openssl_bin, tmp_path)


@pytest.fixture(scope="session")
def ca_p384(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    """The default CA (ECDSA P-384 root + issuing CA), shared by read-only tests."""
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca-p384"))


@pytest.fixture(scope="session")
def ca_rsa(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    """An RSA 2048 CA, to show RSA-signed certificates (BCP-003-03 C18)."""
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca-rsa"), key_type="rsa2048")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store: an SQLite file, then a database on the throwaway PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'estkit.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        yield server.create_database()
