"""Create a server data directory: CA, TLS certificates, demo manufacturer PKI, config, store.

Why one function: `estkit server init`, the first run of `estkit server serve`, `estkit demo`
and every test fixture need the same complete, working directory, so they all call
:func:`init_data_dir` and get the same layout::

    DIR/estkit.toml                  server configuration (0600: holds Digest HA1 values)
    DIR/ca/                          the CA (estkit.ca): root.pem, cacerts.pem, chain.pem, …
    DIR/tls/server-rsa.pem|.key      TLS server chain + key, RSA 2048
    DIR/tls/server-ec.pem|.key       TLS server chain + key, ECDSA P-256
    DIR/manufacturer/                demo manufacturer CA + one demo device credential
    DIR/estkit.db                    the certificate store (SQLite) unless --db says otherwise
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from estkit.ca.authority import CaError, CertificateAuthority
from estkit.ca.manufacturer import create_manufacturer_ca, issue_device_certificate
from estkit.ca.pointers import crl_url, default_public_url, ocsp_url, revocation_pointer_extensions
from estkit.ca.profiles import Profile
from estkit.ca.store import open_store
from estkit.errors import EstkitError
from estkit.fileio import replace_credential_pair
from estkit.protocol.certs import certificates_to_pem, is_self_signed, sha256_fingerprint
from estkit.protocol.keys import generate_private_key, private_key_to_pem
from estkit.server.config import (
    CONFIG_FILE_NAME,
    DEFAULT_PORT,
    CertificatePair,
    ServerConfig,
    TrustedClientRoot,
    load_config,
    save_config,
)

DEFAULT_HOSTNAMES = ("localhost",)
# One year (plus the CA/B Forum's 32-day margin): the server's own TLS certificates are re-made
# by `estkit server init --force`, not renewed automatically.
TLS_CERTIFICATE_VALIDITY_SECONDS = 397 * 86400
TLS_KEY_TYPES = (("rsa", "rsa2048"), ("ec", "p256"))
DEMO_DEVICE_SERIAL = "ESTKIT-DEMO-0001"
DEMO_DEVICE_NAME = "estkit-demo-device"
# Things `--force` replaces (the CA itself keeps its old generations on disk, see estkit.ca).
_REPLACED_ON_FORCE = ("tls", "manufacturer")
_SQLITE_FILES = ("estkit.db", "estkit.db-wal", "estkit.db-shm")
# The data directory holds CA keys, TLS keys and the store: only its owner may even list it.
DATA_DIR_MODE = 0o700

logger = logging.getLogger("estkit.server")


def secure_data_dir(data_dir: Path) -> int | None:
    """Make an existing data directory owner-only (0700), logging a warning with its old mode.

    Returns the old mode when it had to change. Called by :func:`init_data_dir` and whenever a
    server starts on the directory, so directories made by older versions get fixed too.
    """
    try:
        mode = stat.S_IMODE(data_dir.stat().st_mode)
    except OSError:
        return None
    if not mode & 0o077:
        return None
    try:
        data_dir.chmod(DATA_DIR_MODE)
    except OSError as exc:
        logger.warning(
            "data directory %s has mode %04o and could not be tightened: %s", data_dir, mode, exc
        )
        return mode
    logger.warning(
        "data directory %s was open to others (mode %04o); changed to %04o",
        data_dir,
        mode,
        DATA_DIR_MODE,
    )
    return mode


class DataDirExistsError(EstkitError, FileExistsError):
    """The directory already holds a CA; ``force=True`` is needed to replace it."""

    hint = "force it to replace the CA (the old CA keys stay on disk under ca/generations/)"
    params = ("force",)


@dataclass(frozen=True)
class InitResult:
    """Absolute paths of everything :func:`init_data_dir` made."""

    data_dir: Path
    config: Path
    ca_certificates: Path
    root_ca: Path
    manufacturer_ca: Path
    manufacturer_ca_key: Path
    device_certificate: Path
    device_key: Path
    server_certificates: list[Path] = field(default_factory=list)
    server_keys: list[Path] = field(default_factory=list)
    database_url: str = ""
    ca_fingerprint: str = ""

    def to_json(self) -> dict[str, str | list[str]]:
        return {
            "data_dir": str(self.data_dir),
            "config": str(self.config),
            "ca_certificates": str(self.ca_certificates),
            "root_ca": str(self.root_ca),
            "manufacturer_ca": str(self.manufacturer_ca),
            "manufacturer_ca_key": str(self.manufacturer_ca_key),
            "device_certificate": str(self.device_certificate),
            "device_key": str(self.device_key),
            "server_certificates": [str(path) for path in self.server_certificates],
            "server_keys": [str(path) for path in self.server_keys],
            "database_url": self.database_url,
            "ca_fingerprint": self.ca_fingerprint,
        }

    @classmethod
    def for_directory(cls, directory: Path) -> InitResult:
        """The paths of an existing data directory (layout as made by :func:`init_data_dir`)."""
        data_dir = Path(directory).expanduser().absolute()
        config = load_config(data_dir / CONFIG_FILE_NAME)
        from estkit.server.upstream import load_authority  # RA mode: no CA here (issue 21)

        authority = load_authority(config)
        manufacturer = data_dir / "manufacturer"
        return cls(
            data_dir=data_dir,
            config=config.path,
            ca_certificates=authority.cacerts_path,
            root_ca=authority.root_path,
            manufacturer_ca=manufacturer / "manufacturer-ca.pem",
            manufacturer_ca_key=manufacturer / "manufacturer-ca.key",
            device_certificate=manufacturer / "device.pem",
            device_key=manufacturer / "device.key",
            server_certificates=[t.certificate for t in config.tls_certificates],
            server_keys=[t.key for t in config.tls_certificates],
            database_url=config.database_url,
            ca_fingerprint=sha256_fingerprint(authority.root_certificate),
        )


def _server_hostnames(hostnames: Sequence[str]) -> list[str]:
    # No loopback IP addresses are added for "localhost": BCP-003-01 (T4) wants no IP addresses in
    # server certificates, and the URLs we print use the name (https://localhost:8443). An operator
    # who really wants an IP name lists it with --hostname and the conformance suite will say so.
    return [name.strip() for name in hostnames if name.strip()] or list(DEFAULT_HOSTNAMES)


def _clear_for_force(data_dir: Path, db_url: str | None) -> None:
    for name in _REPLACED_ON_FORCE:
        shutil.rmtree(data_dir / name, ignore_errors=True)
    if db_url is None:
        # The default store only describes certificates of the CA being replaced.
        for name in _SQLITE_FILES:
            with contextlib.suppress(FileNotFoundError):
                (data_dir / name).unlink()


def init_data_dir(
    directory: Path,
    *,
    hostnames: Sequence[str] = DEFAULT_HOSTNAMES,
    key_type: str = "p256",
    db_url: str | None = None,
    force: bool = False,
    ca_key_uri: str | None = None,
) -> InitResult:
    """Create a complete server data directory in ``directory`` and return its paths.

    Refuses (:class:`DataDirExistsError`) when a CA already exists there, unless ``force``.
    ``ca_key_uri``: a PKCS#11 URI (RFC 7512); the CA keys are created in that token.
    """
    data_dir = Path(directory).expanduser().absolute()
    ca_dir = data_dir / "ca"
    if CertificateAuthority.exists(ca_dir) and not force:
        raise DataDirExistsError(f"{data_dir} already holds a certificate authority")
    if ca_key_uri is not None:
        # Module, token and PIN are checked before anything is written.
        from estkit.ca.pkcs11 import check_token

        check_token(ca_key_uri)
    existed = data_dir.is_dir()
    created = not data_dir.exists()
    # mode= applies to the last component only (and the umask may remove bits, never add).
    data_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
    if existed:
        secure_data_dir(data_dir)
    if force:
        _clear_for_force(data_dir, db_url)
    database_url = db_url or f"sqlite:///{data_dir / 'estkit.db'}"
    # Reach the store first: a wrong or unreachable --db must fail before anything is written.
    try:
        open_store(database_url).close()
        authority = CertificateAuthority.create(
            ca_dir, key_type=key_type, force=force, key_uri=ca_key_uri
        )
    except CaError as exc:
        if created:  # nothing half-made stays behind
            shutil.rmtree(data_dir, ignore_errors=True)
        raise ValueError(str(exc)) from None

    tls_dir = data_dir / "tls"
    server_names = _server_hostnames(hostnames)
    intermediates = [cert for cert in authority.chain if not is_self_signed(cert)]
    # AIA/CDP in the server's own certificates too (issue 17), at the default public URL.
    base = default_public_url(server_names[0], DEFAULT_PORT)
    tls_pointers = revocation_pointer_extensions(
        ocsp_url(base), crl_url(base, authority.generation)
    )
    tls_pairs: list[CertificatePair] = []
    for suffix, tls_key_type in TLS_KEY_TYPES:
        key = generate_private_key(tls_key_type)
        cert = authority.issue_tls_server_certificate(
            key.public_key(),
            server_names,
            validity_seconds=TLS_CERTIFICATE_VALIDITY_SECONDS,
            extensions=tls_pointers,
        )
        pair = CertificatePair(
            certificate=tls_dir / f"server-{suffix}.pem", key=tls_dir / f"server-{suffix}.key"
        )
        replace_credential_pair(
            pair.certificate,
            certificates_to_pem([cert, *intermediates]),
            pair.key,
            private_key_to_pem(key),
        )
        tls_pairs.append(pair)

    manufacturer_dir = data_dir / "manufacturer"
    # P-256 like the CA: the server's TLS stack checks the device signature on every handshake.
    manufacturer = create_manufacturer_ca(manufacturer_dir, key_type="p256")
    device = issue_device_certificate(
        manufacturer, device_serial=DEMO_DEVICE_SERIAL, common_name=DEMO_DEVICE_NAME
    )
    device_cert_path = manufacturer_dir / "device.pem"
    device_key_path = manufacturer_dir / "device.key"
    device.write(device_cert_path, device_key_path)

    config_path = data_dir / CONFIG_FILE_NAME
    config = ServerConfig(
        path=config_path,
        database_url=database_url,
        ca_directory=ca_dir,
        tls_certificates=tuple(tls_pairs),
        default_profile=Profile(),
        trusted_client_roots=(TrustedClientRoot(certificate=manufacturer.certificate_path),),
    )
    save_config(config, config_path)

    return InitResult(
        data_dir=data_dir,
        config=config_path,
        ca_certificates=authority.cacerts_path,
        root_ca=authority.root_path,
        manufacturer_ca=manufacturer.certificate_path,
        manufacturer_ca_key=manufacturer.key_path,
        device_certificate=device_cert_path,
        device_key=device_key_path,
        server_certificates=[pair.certificate for pair in tls_pairs],
        server_keys=[pair.key for pair in tls_pairs],
        database_url=config.database_url,
        ca_fingerprint=sha256_fingerprint(authority.root_certificate),
    )
