"""Revocation as every operator tool does it: record it in the store, then rewrite the CRL file.

Why one function for the CLI and the web console: the server signs a fresh CRL for each
``GET /crl``, but ``DIR/crl.der`` is the copy an operator publishes at other distribution points;
a revocation made either way must leave that file current.
"""

from __future__ import annotations

from pathlib import Path

from estkit.ca.authority import CertificateAuthority
from estkit.ca.store import CertificateStore, IssuedRecord
from estkit.fileio import write_file_atomic
from estkit.server.config import ServerConfig

CRL_FILE_NAME = "crl.der"


def write_crl_file(config: ServerConfig, store: CertificateStore) -> Path:
    """Sign a CRL of everything revoked so far and write it (atomically) to ``DIR/crl.der``.

    After a rollover, each earlier CA generation's CRL goes to ``DIR/crl-<generation>.der``
    (also served at ``/crl/<generation>``): leaves issued before it chain to that issuer.
    """
    authority = CertificateAuthority.load(config.ca_directory)
    entries = store.revoked_entries()
    path = config.data_dir / CRL_FILE_NAME
    for generation, issuer in authority.issuers_by_generation.items():
        der = authority.build_crl(entries, issuer=issuer)
        if generation == authority.generation:
            write_file_atomic(path, der)
        else:
            write_file_atomic(config.data_dir / f"crl-{generation}.der", der)
    return path


def revoke_certificate(
    config: ServerConfig, store: CertificateStore, serial: str, reason: str
) -> tuple[IssuedRecord, Path]:
    """Revoke ``serial`` (committed before the CRL is written) and rewrite the CRL file."""
    record = store.revoke(serial, reason)
    return record, write_crl_file(config, store)
