"""The node's files: trust anchors, one certificate + key per algorithm, a pending key, the state.

Why a class of its own: every write here must be crash-safe (a device loses power mid-renewal and
must come back with a working pair), keys must be 0600 from birth, and the agent, the one-shot
workflow and ``estkit nmos status`` must agree on where things are. Layout of the output directory::

    root-ca.pem         trust anchors: the current EST root first, then older roots of the same
                        domain still inside a rollover window (C5)
    ca-chain.pem        intermediates and rollover certificates from /cacerts (C5: kept)
    rsa-cert.pem        certificate followed by its chain     rsa-key.pem    (0600)
    ecdsa-cert.pem      ...                                   ecdsa-key.pem  (0600)
    rsa-pending-key.pem key of a request waiting for manual approval (0600), so a restart sends
                        the same request again instead of queueing a new one (C10)
    state.json          schedule, failures and last error, so a restart resumes (agent)
    trust-origin.json   the node's DNS domain and discovery domain when the root was obtained:
                        the local evidence that a later root of another domain needs (C15)
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from estkit.errors import StoreError
from estkit.fileio import (
    PRIVATE_FILE_MODE,
    PUBLIC_FILE_MODE,
    CredentialMismatchError,
    FileToWrite,
    load_credential_pair,
    replace_credential_pair,
    write_file_atomic,
    write_files_atomic,
    write_private_file_atomic,
)
from estkit.nmos.errors import NmosError
from estkit.protocol.certs import certificates_to_pem
from estkit.protocol.keys import (
    PrivateKey,
    load_private_key,
    private_key_to_pem,
    supported_private_key,
)

STATE_FILENAME = "state.json"
CHAIN_FILENAME = "ca-chain.pem"
STATE_FORMAT = 1


@dataclass(frozen=True)
class InstalledCredential:
    """A certificate (leaf first, then its chain) with its private key, as found on disk."""

    slot: str
    chain: list[x509.Certificate]
    key: PrivateKey
    cert_path: Path
    key_path: Path

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]


class CredentialStoreError(NmosError, StoreError):
    """A file of the node's store is unreadable or inconsistent."""


class CredentialStore:
    """Reads and writes the node's files in ``output_dir`` (see module docstring)."""

    def __init__(self, output_dir: Path, root_ca_path: Path | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.root_ca_path = Path(root_ca_path) if root_ca_path else self.output_dir / "root-ca.pem"

    # --- paths ---------------------------------------------------------------------------------

    def cert_path(self, slot: str) -> Path:
        return self.output_dir / f"{slot}-cert.pem"

    def key_path(self, slot: str) -> Path:
        return self.output_dir / f"{slot}-key.pem"

    def pending_key_path(self, slot: str) -> Path:
        return self.output_dir / f"{slot}-pending-key.pem"

    @property
    def chain_path(self) -> Path:
        return self.output_dir / CHAIN_FILENAME

    @property
    def state_path(self) -> Path:
        return self.output_dir / STATE_FILENAME

    # --- trust anchors (C5) --------------------------------------------------------------------

    def load_roots(self) -> list[x509.Certificate]:
        """Installed trust anchors, current root first; empty when none are installed."""
        return _load_pem_file(self.root_ca_path)

    def load_chain(self) -> list[x509.Certificate]:
        return _load_pem_file(self.chain_path)

    def save_trust(
        self,
        roots: list[x509.Certificate],
        extra: list[x509.Certificate],
        *,
        also: Sequence[tuple[Path, bytes]] = (),
    ) -> None:
        """Install ``roots`` (current first) and the other /cacerts certificates (C5).

        ``also``: other (public) files written with them, such as the node's record of where
        the root was obtained. Each file is replaced atomically, root first; the directory is
        synced once for all of them (issue 23).
        """
        if not roots:
            raise ValueError("at least one root certificate is needed")
        files: list[FileToWrite] = [
            (self.root_ca_path, certificates_to_pem(roots), PUBLIC_FILE_MODE)
        ]
        if extra:
            files.append((self.chain_path, certificates_to_pem(extra), PUBLIC_FILE_MODE))
        files.extend((path, data, PUBLIC_FILE_MODE) for path, data in also)
        write_files_atomic(files)
        if not extra:
            with contextlib.suppress(FileNotFoundError):
                self.chain_path.unlink()

    def remove_trust(self) -> None:
        for path in (self.root_ca_path, self.chain_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # --- certificates and keys (C9) ------------------------------------------------------------

    def load_credential(self, slot: str) -> InstalledCredential | None:
        """The installed pair for ``slot``, or None when absent or broken (mismatch, garbage).

        A broken pair is treated as absent, so the agent re-provisions instead of serving it.
        """
        cert_path, key_path = self.cert_path(slot), self.key_path(slot)
        if not cert_path.exists() or not key_path.exists():
            return None
        try:
            chain, key = load_credential_pair(cert_path, key_path)
            usable_key = supported_private_key(key)  # an EncodingError, so a ValueError
        except (CredentialMismatchError, ValueError, OSError):
            return None
        return InstalledCredential(slot, chain, usable_key, cert_path, key_path)

    def install_credential(
        self, slot: str, chain: list[x509.Certificate], key: PrivateKey
    ) -> InstalledCredential:
        """Replace ``slot``'s pair atomically; the previous certificate and key are gone (C9).

        When the slot's pending key file holds this very key (the enrollment's key, saved and
        synced before the request was sent), that file becomes the key file: renamed, not
        written and synced a second time (issue 23).
        """
        key_pem = private_key_to_pem(key)
        pending = self.pending_key_path(slot)
        replace_credential_pair(
            self.cert_path(slot),
            certificates_to_pem(chain),
            self.key_path(slot),
            pending if _holds_private_key(pending, key_pem) else key_pem,
        )
        self.drop_pending_key(slot)
        return InstalledCredential(slot, chain, key, self.cert_path(slot), self.key_path(slot))

    def remove_credential(self, slot: str) -> None:
        """Delete a pair that must no longer be used (revoked, other domain: C15, C16)."""
        for path in (self.cert_path(slot), self.key_path(slot)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # --- pending requests (C10) ----------------------------------------------------------------

    def load_pending_key(self, slot: str) -> PrivateKey | None:
        path = self.pending_key_path(slot)
        try:
            return load_private_key(path.read_bytes())
        except (OSError, ValueError):
            return None

    def save_pending_key(self, slot: str, key: PrivateKey) -> None:
        write_private_file_atomic(self.pending_key_path(slot), private_key_to_pem(key))

    def drop_pending_key(self, slot: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.pending_key_path(slot).unlink()

    # --- state ---------------------------------------------------------------------------------

    def load_state(self) -> dict[str, Any]:
        """The saved agent state, or an empty one (a missing or corrupt file is not fatal)."""
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"format": STATE_FORMAT}
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            return {"format": STATE_FORMAT}
        return data

    def save_state(self, state: dict[str, Any]) -> None:
        payload = dict(state, format=STATE_FORMAT)
        write_file_atomic(
            self.state_path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()
        )


def _holds_private_key(path: Path, key_pem: bytes) -> bool:
    """True when ``path`` is a regular file (not a link), mode 0600, holding exactly ``key_pem``:
    then it may become the key file as it is. Anything else means the key is written anew."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as handle:
        status = os.fstat(handle.fileno())
        if not stat.S_ISREG(status.st_mode) or stat.S_IMODE(status.st_mode) != PRIVATE_FILE_MODE:
            return False
        return handle.read(len(key_pem) + 1) == key_pem


def _load_pem_file(path: Path) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise CredentialStoreError(
            f"cannot read {path}: {exc.strerror}", hint="check file permissions"
        ) from None
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CredentialStoreError(
            f"{path} holds no readable PEM certificate",
            hint="delete it so the node fetches the root again, or use `estkit nmos install`",
        ) from None
