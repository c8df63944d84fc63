"""What a running server holds: configuration, CA, trust anchors, store, and when to reload them.

Why reload on change: operators (and tests) edit the configuration with `estkit server …`
commands and roll the CA over while the server runs; a restart should not be needed for a new
label, user or manufacturer CA to take effect. A ``stat`` of two files per request is cheap.

Why one dedicated thread for the store and the CA: SQLite connections belong to the thread that
opened them, signing and committing must not stall the event loop, and one writer per process is
what SQLite serialises to anyway. Every worker process has its own thread and connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import logging
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from estkit.ca.authority import CertificateAuthority
from estkit.ca.store import CertificateStore, StoreError, StoreUnavailableError, open_store
from estkit.ca.store_backends import parse_sqlite_url
from estkit.protocol.certs import load_pem_certificates
from estkit.server.clientauth import ClientTrust, TrustGroup
from estkit.server.config import ServerConfig, load_config
from estkit.server.datadir import secure_data_dir
from estkit.server.httpauth import HttpAuthenticator
from estkit.server.upstream import (
    UpstreamCa,
    UpstreamCache,
    authority_stamp_file,
    check_ra_credentials,
    load_authority,
)

logger = logging.getLogger("estkit.server")

T = TypeVar("T")

# Length of the secret that signs Digest nonces (kept in the store: shared by every process).
DIGEST_SECRET_BYTES = 32
# Its name in the store's server_secrets table.
DIGEST_SECRET_NAME = "digest-nonce-key"


def _existing_local_database(url: str) -> bool:
    if "://" in url and not url.startswith("sqlite:"):
        return False
    try:
        path, _ = parse_sqlite_url(url)
    except StoreError:
        return False
    return path != ":memory:" and Path(path).is_file()


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size)


def build_client_trust(
    config: ServerConfig,
    authority: CertificateAuthority | UpstreamCa,
    own_revocation: Callable[[str], tuple[bool, dt.datetime | None]],
) -> ClientTrust:
    """Who may authenticate with a TLS client certificate: this server's CA (all generations)
    and the trusted manufacturer CAs of ``config``. Used by the server and by approval checks."""
    own_roots = list(authority.root_certificates)
    own_others = [cert for cert in authority.cacerts if cert not in own_roots]
    own_others += [cert for cert in authority.previous_issuers if cert not in own_others]
    groups = [
        TrustGroup(
            name="this server's CA",
            kind="own",
            roots=own_roots,
            intermediates=[cert for cert in own_others if cert not in own_roots],
        )
    ]
    for root in config.trusted_client_roots:
        try:
            certificates = load_pem_certificates(root.certificate.read_bytes())
        except (OSError, ValueError) as exc:
            logger.error("cannot load trusted client root %s: %s", root.certificate, exc)
            continue
        subject = certificates[0].subject.rfc4514_string()
        groups.append(
            TrustGroup.from_certificates(
                f"the trusted manufacturer CA {subject!r}",
                "manufacturer",
                certificates,
                accept_expired=root.accept_expired,
                crl_path=root.crl,
            )
        )
    return ClientTrust(groups, own_revocation)


def store_revocation(
    store: CertificateStore,
) -> Callable[[str], tuple[bool, dt.datetime | None]]:
    """``own_revocation`` for :func:`build_client_trust` reading ``store``: (ours?, revoked at)."""

    def lookup(serial_hex: str) -> tuple[bool, dt.datetime | None]:
        record = store.get_issued(serial_hex)
        if record is None:
            return False, None
        if record.status == "revoked":
            return True, record.revoked_at or dt.datetime.now(dt.UTC)
        return True, None

    return lookup


class ServerState:
    """Configuration, CA and store of one server process, reloaded when their files change."""

    def __init__(self, data_dir: Path, *, digest_secret: bytes | None = None) -> None:
        self.data_dir = Path(data_dir).expanduser().absolute()
        self._config_path = self.data_dir / "estkit.toml"
        self._lock = threading.Lock()
        self._config_stamp: tuple[int, int] | None = None
        self._ca_stamp: tuple[int, int] | None = None
        self.config: ServerConfig = load_config(self._config_path)
        self._config_stamp = _stamp(self.config.path)
        self.authority: CertificateAuthority | UpstreamCa = load_authority(self.config)
        # Looked at on every request (refresh): the path is made once per configuration.
        self._ca_stamp_file = authority_stamp_file(self.config)
        self._ca_stamp = _stamp(self._ca_stamp_file)
        # RA mode (issue 21): an unusable RA certificate stops the start with the reason.
        if self.config.upstream is not None:
            check_ra_credentials(self.config.upstream)
        self.upstream_cache = UpstreamCache()
        secure_data_dir(self.data_dir)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="estkit-store"
        )
        self._store: CertificateStore | None = None
        self.trust: ClientTrust = self._build_trust()
        self.authenticator = HttpAuthenticator(
            self.config.realm,
            lambda: self.config.users,
            self._shared_digest_secret(digest_secret),
            nonce_use=self._use_digest_nonce,
        )
        # The port this process listens on (set by the runner): default public URL (AIA/CDP).
        self.public_port: int | None = None
        # The plain-HTTP revocation listener's port, None when it is off (AIA/CDP are http then).
        self.revocation_port: int | None = None

    def _shared_digest_secret(self, fallback: bytes | None) -> bytes:
        """The Digest nonce key from the store, so that every process and every server on this
        store accepts the others' nonces. When the store cannot be written at start, a per-run
        key keeps Digest working in this process (nonces of other processes are then refused)."""
        try:
            with open_store(self.config.database_url) as store:
                return store.shared_secret(
                    DIGEST_SECRET_NAME, lambda: secrets.token_bytes(DIGEST_SECRET_BYTES)
                )
        except StoreError as exc:
            logger.warning("Digest nonces are valid in this process only: %s", exc)
            return fallback or secrets.token_bytes(DIGEST_SECRET_BYTES)

    def _use_digest_nonce(self, nonce: str, nc: int, expires: float) -> bool:
        """Record a Digest (nonce, nc) in the store (on the store thread); False for a replay.
        A store that cannot be written refuses the credentials (StoreUnavailableError → 503)
        rather than accepting a possible replay."""
        expires_at = dt.datetime.fromtimestamp(expires, dt.UTC)
        future = self._executor.submit(
            self._reopening,
            lambda: self.store.use_digest_nonce(nonce, nc, expires_at=expires_at),
            (),
        )
        return future.result()

    # -- reloading ---------------------------------------------------------------------------

    def _build_trust(self) -> ClientTrust:
        return build_client_trust(self.config, self.authority, self._own_revocation)

    def refresh(self) -> None:
        """Reload the configuration and/or CA when their files changed since the last look."""
        config_stamp = _stamp(self._config_path)
        ca_stamp = _stamp(self._ca_stamp_file)
        if config_stamp == self._config_stamp and ca_stamp == self._ca_stamp:
            return
        with self._lock:
            try:
                if config_stamp != self._config_stamp:
                    self.config = load_config(self._config_path)
                    self._config_stamp = config_stamp
                    logger.info("configuration reloaded from %s", self._config_path)
                    self._ca_stamp_file = authority_stamp_file(self.config)
                    ca_stamp = _stamp(self._ca_stamp_file)
                if ca_stamp != self._ca_stamp:
                    self.authority = load_authority(self.config)
                    self._ca_stamp = ca_stamp
                    logger.info("CA reloaded (generation %s)", self.authority.generation)
                self.trust = self._build_trust()
            except (OSError, ValueError) as exc:
                # Keep serving with the last good state; say what is wrong with the new one.
                logger.error("keeping the previous configuration: %s", exc)
                self._config_stamp, self._ca_stamp = config_stamp, ca_stamp

    # -- store thread ------------------------------------------------------------------------

    @property
    def store(self) -> CertificateStore:
        """The store of this process; only use it inside :meth:`run`."""
        if self._store is None:
            self._store = open_store(self.config.database_url)
        return self._store

    def check_store(self) -> None:
        """Open the store and talk to it once (on the store thread).

        An unreachable database is almost always a wrong URL or a database that is not running:
        say so at start (raises). A local SQLite file that exists but cannot be opened for
        writing right now (read-only or full file system) is a condition to ride out: serve,
        answer enrollments with 503, and recover by itself when the disk is writable again.
        """
        try:
            self.store.ping()
        except StoreUnavailableError as exc:
            if not _existing_local_database(self.config.database_url):
                raise
            logger.warning(
                "the certificate store is unavailable at start (%s); serving anyway, "
                "enrollments get 503 until it can be written again",
                exc,
            )

    def _own_revocation(self, serial_hex: str) -> tuple[bool, dt.datetime | None]:
        return store_revocation(self.store)(serial_hex)

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func(*args)`` on the store thread (store, CA signing, trust checks)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._reopening, func, args)

    def _reopening(self, func: Callable[..., T], args: tuple[Any, ...]) -> T:
        """Call ``func``; after a :class:`StoreUnavailableError` drop the store connection and
        call it once more on a fresh one (raising if that fails too). Why: SQLite opens a file on
        a read-only file system in read-only mode and stays so after the file system is writable
        again; a PostgreSQL connection may be half-broken. A new connection sees the store as it
        is now."""
        try:
            return func(*args)
        except StoreUnavailableError:
            self._drop_store()
        # Once more on a fresh connection: after an outage every worker process holds a stale
        # one, which would otherwise cost each worker one refused request after the store is
        # back. Store writes are transactions, so the failed attempt committed nothing.
        try:
            return func(*args)
        except StoreUnavailableError:
            self._drop_store()
            raise

    def _drop_store(self) -> None:
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
            self._store = None

    def close(self) -> None:
        """Close the store (on its own thread) and stop the thread."""

        def close_store() -> None:
            if self._store is not None:
                self._store.close()
                self._store = None

        try:
            self._executor.submit(close_store).result(timeout=10)
        except (concurrent.futures.TimeoutError, RuntimeError) as exc:
            logger.warning("store did not close cleanly: %s", exc)
        self._executor.shutdown(wait=True)
