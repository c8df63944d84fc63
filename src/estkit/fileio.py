"""Crash-safe file writing for certificates and private keys.

Why: a half-written key file, a world-readable key, or a certificate paired with the wrong key all
take a device off the network. Every write here goes to a temporary file in the same directory,
is fsynced, and is moved into place with ``os.replace`` so readers see the old or the new file,
never a mix.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from estkit.errors import EstkitError

PRIVATE_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644


class CredentialMismatchError(EstkitError, ValueError):
    """The private key on disk does not belong to the certificate next to it."""


def _write_temp(path: Path, data: bytes, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600 from the start, so a key is never readable by others,
    # not even for the instant between creation and chmod.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_file_atomic(
    path: str | os.PathLike[str], data: bytes, mode: int = PUBLIC_FILE_MODE
) -> None:
    """Replace ``path`` with ``data`` atomically (readers never see a partial file)."""
    target = Path(path)
    tmp = _write_temp(target, data, mode)
    try:
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def write_private_file_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Like :func:`write_file_atomic`, with mode 0600 from the moment the file exists."""
    write_file_atomic(path, data, PRIVATE_FILE_MODE)


def replace_credential_pair(
    cert_path: str | os.PathLike[str],
    cert_pem: bytes,
    key_path: str | os.PathLike[str],
    key_pem: bytes,
) -> None:
    """Install a new certificate and key as a pair.

    Both temporary files are complete and synced before either is renamed, so the only window is
    between the two renames; :func:`load_credential_pair` detects that case instead of serving a
    mismatched pair.
    """
    cert_target, key_target = Path(cert_path), Path(key_path)
    key_tmp = _write_temp(key_target, key_pem, PRIVATE_FILE_MODE)
    try:
        cert_tmp = _write_temp(cert_target, cert_pem, PUBLIC_FILE_MODE)
    except BaseException:
        with contextlib.suppress(OSError):
            key_tmp.unlink()
        raise
    try:
        os.replace(key_tmp, key_target)
        os.replace(cert_tmp, cert_target)
    except BaseException:
        for leftover in (key_tmp, cert_tmp):
            with contextlib.suppress(OSError):
                leftover.unlink()
        raise
    _fsync_dir(key_target.parent)
    if cert_target.parent != key_target.parent:
        _fsync_dir(cert_target.parent)


def load_credential_pair(
    cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]
) -> tuple[list[x509.Certificate], PrivateKeyTypes]:
    """Load a PEM certificate chain and its private key, refusing a mismatched pair."""
    certs = x509.load_pem_x509_certificates(Path(cert_path).read_bytes())
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    cert_public = (
        certs[0]
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    key_public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if cert_public != key_public:
        raise CredentialMismatchError(
            f"the private key {key_path} does not belong to the certificate {cert_path}; "
            "reinstall both files together"
        )
    return certs, key
