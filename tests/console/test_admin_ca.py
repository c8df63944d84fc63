"""Operator certificates: issued by the console's own CA, keys 0600, names checked, and the
verification the console applies to a presented certificate."""

from __future__ import annotations

import datetime as dt
import json
import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from estkit.cli.admin import admin_cert
from estkit.console.admin_ca import (
    OperatorCertificateError,
    admin_ca_paths,
    ensure_admin_ca,
    export_pkcs12,
    issue_admin_certificate,
    load_admin_ca,
    validate_operator_name,
    verify_operator_certificate,
)
from estkit.server.datadir import init_data_dir

from .helpers import ensure_program


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    # A server data directory: operator certificates are recorded in its store.
    return init_data_dir(tmp_path / "data", key_type="p256").data_dir


def test_issued_certificate_is_a_client_certificate_from_the_operators_ca(data_dir: Path) -> None:
    cert_path, key_path = issue_admin_certificate(data_dir, "alice")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    ca_path, ca_key_path = admin_ca_paths(data_dir)
    assert stat.S_IMODE(ca_key_path.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    operator = verify_operator_certificate(cert, load_admin_ca(data_dir)[0])
    assert (operator.name, operator.method) == ("alice", "certificate")
    assert operator.fingerprint and operator.fingerprint.startswith("sha256:")
    openssl = ensure_program("openssl", "openssl")
    verified = subprocess.run(
        [openssl, "verify", "-purpose", "sslclient", "-CAfile", str(ca_path), str(cert_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 0, verified.stderr


def test_existing_operator_is_not_overwritten_without_force(data_dir: Path) -> None:
    first, _ = issue_admin_certificate(data_dir, "bob")
    original = first.read_bytes()
    with pytest.raises(OperatorCertificateError, match=r"already exists") as refused:
        issue_admin_certificate(data_dir, "bob")
    assert refused.value.params == ("force",)  # the CLI says --force
    assert first.read_bytes() == original
    second, _ = issue_admin_certificate(data_dir, "bob", force=True)
    assert second.read_bytes() != original


def test_operators_ca_is_created_once(data_dir: Path) -> None:
    ca_path = ensure_admin_ca(data_dir)
    before = ca_path.read_bytes()
    issue_admin_certificate(data_dir, "carol")
    assert ensure_admin_ca(data_dir).read_bytes() == before


@pytest.mark.parametrize("name", ["", "../etc/passwd", "with space", "-dash", "x" * 65, "a/b"])
def test_unusable_operator_names_are_refused(data_dir: Path, name: str) -> None:
    with pytest.raises(OperatorCertificateError, match="not usable"):
        validate_operator_name(name)
    with pytest.raises(OperatorCertificateError):
        issue_admin_certificate(data_dir, name)
    assert not (data_dir / "console" / "operators").exists()


def test_missing_data_directory_is_explained(tmp_path: Path) -> None:
    with pytest.raises(OperatorCertificateError, match="estkit server init"):
        issue_admin_certificate(tmp_path / "nowhere", "dave")


def test_certificate_from_another_ca_is_refused(data_dir: Path, tmp_path: Path) -> None:
    other = init_data_dir(tmp_path / "other", key_type="p256").data_dir
    foreign_cert_path, _ = issue_admin_certificate(other, "mallory")
    foreign = x509.load_pem_x509_certificate(foreign_cert_path.read_bytes())
    ensure_admin_ca(data_dir)
    with pytest.raises(OperatorCertificateError, match="not issued by the console operators CA"):
        verify_operator_certificate(foreign, load_admin_ca(data_dir)[0])


def test_expired_operator_certificate_is_refused(data_dir: Path) -> None:
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=800)
    ensure_admin_ca(data_dir, now=long_ago)
    cert_path, _ = issue_admin_certificate(data_dir, "erin", now=long_ago)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    with pytest.raises(OperatorCertificateError, match="outside its validity period"):
        verify_operator_certificate(cert, load_admin_ca(data_dir)[0])


def test_pkcs12_export_opens_with_its_password(data_dir: Path) -> None:
    cert_path, key_path = issue_admin_certificate(data_dir, "frank")
    p12_path, password = export_pkcs12(cert_path, key_path)
    assert stat.S_IMODE(p12_path.stat().st_mode) == 0o600
    loaded = pkcs12.load_pkcs12(p12_path.read_bytes(), password.encode())
    assert loaded.cert is not None
    assert loaded.cert.certificate.serial_number == (
        x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number
    )
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(p12_path.read_bytes(), b"wrong")


def test_cli_admin_cert_prints_paths_and_refuses_a_repeat(data_dir: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(admin_cert, [str(data_dir), "grace", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert Path(document["certificate"]).is_file()
    assert Path(document["key"]).is_file()
    assert pkcs12.load_pkcs12(
        Path(document["pkcs12"]).read_bytes(), document["pkcs12_password"].encode()
    )
    again = runner.invoke(admin_cert, [str(data_dir), "grace"])
    assert again.exit_code == 1
    assert "already exists" in again.output
    assert "Traceback" not in again.output
