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
import threading
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from estkit.errors import EstkitError

PRIVATE_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644


class CredentialMismatchError(EstkitError, ValueError):
    """The private key on disk does not belong to the certificate next to it."""


class MissingDirectoryError(EstkitError, FileNotFoundError):
    """The directory a file was to be written in does not exist (and was not to be created)."""

    def __init__(self, directory: Path, path: Path) -> None:
        super().__init__(
            f"the directory {directory} does not exist (writing {path}); create it first"
        )
        self.directory = directory
        self.filename = str(path)

    def __str__(self) -> str:
        return str(self.args[0])


def _write_temp(
    path: Path, data: bytes, mode: int, create_parents: bool = True, durable: bool = True
) -> Path:
    # Paths a person names (curl -o, openssl -out) never get directories made for them: a typo
    # would scatter files. Layouts the library owns (data directory, node store) are created.
    if create_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.parent.is_dir():
        raise MissingDirectoryError(path.parent, path)
    # mkstemp creates the file 0600 from the start, so a key is never readable by others,
    # not even for the instant between creation and chmod.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
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
    path: str | os.PathLike[str],
    data: bytes,
    mode: int = PUBLIC_FILE_MODE,
    *,
    create_parents: bool = True,
    durable: bool = True,
) -> None:
    """Replace ``path`` with ``data`` atomically (readers never see a partial file).

    With ``create_parents=False`` a missing directory is a :class:`MissingDirectoryError`
    (nothing is written) instead of being created. ``durable=False`` skips the two fsyncs (file
    and directory), for scratch files in a private temporary directory that is deleted before the
    process ends (nothing there has to survive a power loss); the file is still complete when it
    appears and has its mode from creation.
    """
    write_files_atomic([(path, data, mode)], create_parents=create_parents, durable=durable)


def write_private_file_atomic(
    path: str | os.PathLike[str], data: bytes, *, create_parents: bool = True, durable: bool = True
) -> None:
    """Like :func:`write_file_atomic`, with mode 0600 from the moment the file exists."""
    write_file_atomic(path, data, PRIVATE_FILE_MODE, create_parents=create_parents, durable=durable)


# (path, data, mode) of one file to write; an existing temporary file (complete, synced, in the
# target's directory, with its final mode) may stand for the data: it is renamed into place.
FileToWrite = tuple[str | os.PathLike[str], bytes | Path, int]


def write_files_atomic(
    files: Sequence[FileToWrite], *, create_parents: bool = True, durable: bool = True
) -> None:
    """Replace several files, each atomically, with one directory sync per directory.

    Every temporary file is complete and synced before the first rename, the renames follow the
    order given, and each directory is synced once after them (issue 23: a root and its chain,
    or a certificate and its key, cost one directory sync instead of one each). On return every
    file is durable; a crash before that leaves each file either old or whole new. Nothing is
    renamed if any temporary file cannot be written. ``data`` given as a :class:`Path` is a file
    already complete, synced and in place beside the target (a pending key becoming the key): it
    is renamed, not copied. ``create_parents`` and ``durable`` as for :func:`write_file_atomic`.
    """
    staged: list[tuple[Path, Path]] = []
    made: list[Path] = []
    try:
        for path, data, mode in files:
            target = Path(path)
            if isinstance(data, Path):
                staged.append((data, target))
                continue
            tmp = _write_temp(target, data, mode, create_parents, durable)
            made.append(tmp)
            staged.append((tmp, target))
        for tmp, target in staged:
            os.replace(tmp, target)
    except BaseException:
        for leftover in made:
            with contextlib.suppress(OSError):
                leftover.unlink()
        raise
    if durable:
        for directory in dict.fromkeys(target.parent for _, target in staged):
            _fsync_dir(directory)


def replace_credential_pair(
    cert_path: str | os.PathLike[str],
    cert_pem: bytes,
    key_path: str | os.PathLike[str],
    key_pem: bytes | Path,
    *,
    create_parents: bool = True,
) -> None:
    """Install a new certificate and key as a pair.

    Both temporary files are complete and synced before either is renamed, so the only window is
    between the two renames; :func:`load_credential_pair` detects that case instead of serving a
    mismatched pair. ``create_parents`` as for :func:`write_file_atomic`. ``key_pem`` may be the
    path of a key file already written and synced beside ``key_path`` (see
    :func:`write_files_atomic`): it is moved into place.
    """
    write_files_atomic(
        [(key_path, key_pem, PRIVATE_FILE_MODE), (cert_path, cert_pem, PUBLIC_FILE_MODE)],
        create_parents=create_parents,
    )


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


# (st_dev, st_ino, st_size, st_mtime_ns) of a file: an atomic replacement (new inode) or any
# write changes it, so an unchanged identity means unchanged contents.
FileIdentity = tuple[int, int, int, int]


def file_identity(path: str | os.PathLike[str]) -> FileIdentity:
    """The identity of the file at ``path`` (raises ``OSError`` like reading it would)."""
    status = os.stat(path)
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


class LoadedPairs:
    """Credential pairs this process has already loaded or written, by file identity.

    Why: loading a private key checks it, and for RSA that check (primality of p and q) costs
    50-80 ms per RSA-2048 key on a 2-core machine, more than generating one. A node that reads
    the same unchanged pair again (the manufacturer credential for each enrollment, an installed
    certificate at each agent check), or reads back the pair it has just written from the key
    object it still holds, learns nothing new from the check. Every pair read from disk for the
    first time, or after either file changed, is loaded and checked in full by
    :func:`load_credential_pair` (docs/security.md, "Start-up speed").

    Thread-safe: the NMOS workflow enrolls its certificates from several threads at once, and
    two of them asking for the same pair at the same moment load (and check) it once.
    """

    def __init__(self) -> None:
        # Reentrant: load() holds it while it looks the pair up and records it.
        self._lock = threading.RLock()
        self._pairs: dict[
            tuple[str, str],
            tuple[tuple[FileIdentity, FileIdentity], tuple[x509.Certificate, ...], PrivateKeyTypes],
        ] = {}

    def lookup(
        self, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]
    ) -> tuple[list[x509.Certificate], PrivateKeyTypes] | None:
        """The pair recorded for these paths if neither file changed since; else None."""
        where = (os.fspath(cert_path), os.fspath(key_path))
        with self._lock:
            entry = self._pairs.get(where)
            if entry is None:
                return None
            try:
                current = (file_identity(cert_path), file_identity(key_path))
            except OSError:
                return None
            if current != entry[0]:
                del self._pairs[where]
                return None
            return list(entry[1]), entry[2]

    def load(
        self, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]
    ) -> tuple[list[x509.Certificate], PrivateKeyTypes]:
        """:func:`load_credential_pair`, skipped when the same unchanged files were loaded."""
        with self._lock:
            known = self.lookup(cert_path, key_path)
            if known is not None:
                return known
            # Identities first: a file replaced while being read is recorded with its old
            # identity and so is read again next time, never the other way round.
            identities = (file_identity(cert_path), file_identity(key_path))
            chain, key = load_credential_pair(cert_path, key_path)
            self._record(cert_path, key_path, identities, chain, key)
            return chain, key

    def remember(
        self,
        cert_path: str | os.PathLike[str],
        key_path: str | os.PathLike[str],
        chain: list[x509.Certificate],
        key: PrivateKeyTypes,
        identities: tuple[FileIdentity, FileIdentity] | None = None,
    ) -> None:
        """Record a pair this process has just written to these paths, or loaded from them
        (then pass the files' ``identities`` as taken *before* reading, see :meth:`load`)."""
        if identities is None:
            try:
                identities = (file_identity(cert_path), file_identity(key_path))
            except OSError:
                return
        self._record(cert_path, key_path, identities, chain, key)

    def _record(
        self,
        cert_path: str | os.PathLike[str],
        key_path: str | os.PathLike[str],
        identities: tuple[FileIdentity, FileIdentity],
        chain: Sequence[x509.Certificate],
        key: PrivateKeyTypes,
    ) -> None:
        with self._lock:
            self._pairs[(os.fspath(cert_path), os.fspath(key_path))] = (
                identities,
                tuple(chain),
                key,
            )
