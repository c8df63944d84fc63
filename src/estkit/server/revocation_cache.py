"""One cache for the server's revocation artifacts: CRLs and OCSP answers, signed ahead of time.

Why: a CRL or OCSP answer is a signature, and signing on every request makes revocation status
the cheapest way to load the CA (issue 14: /crl signed per request pushed enrollment p50 to
seconds). Here every artifact is signed once per change and again before it goes stale, on a
thread of its own (not the event loop, not the store thread that enrollments queue on), and the
request path only looks up bytes.

How a change is noticed, two ways:

* every revocation made on this host (``estkit server revoke``, the console) rewrites
  ``DIR/crl.der`` before it returns (``server/revocation.py``); /crl and /ocsp ``stat`` that file
  (about a microsecond; the exact-bytes lookup at most once per ``LOCAL_CRL_RECHECK_SECONDS``,
  1 ms) and, when it changed, bring the cache up to date before answering, so every request that
  arrives 1 ms or more after the revocation sees it;
* the store's *revocation stamp* (count of revoked certificates and the latest revocation time,
  one aggregate query) is polled every ``REVOCATION_POLL_SECONDS`` on the revocation thread. The
  store is the single source of truth whoever revokes (another host sharing a PostgreSQL store,
  a script calling ``store.revoke``), so nothing depends on every revoke path touching a file.

Each worker process keeps its own cache current by itself; the signed CRL is shared between the
workers of a host through ``DIR/revocation/`` (same bytes and ETag from each). A CA rollover is
noticed through ``ServerState.refresh`` (the CA pointer file) and rebuilds the issuer map,
responders and CRLs.

OCSP answers without a nonce are cached per CertID (bounded, oldest evicted first); the first
request for a certificate nobody asked about yet, and every request with a nonce (RFC 8954: the
nonce must be in the signed answer), is signed on the revocation thread, never on the event loop,
and at most ``MAX_PENDING_SIGNINGS`` of those wait at a time (beyond: ``tryLater``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from estkit.ca.authority import CertificateAuthority
from estkit.ca.crl import DEFAULT_NEXT_UPDATE_SECONDS, RevokedEntry
from estkit.ca.ocsp import (
    GOOD,
    UNKNOWN,
    CertId,
    CertStatus,
    OcspRequestError,
    Responder,
    issuer_cert_ids,
    load_or_issue_responder,
    parse_ocsp_request,
    sign_ocsp_response,
    unsuccessful_response,
)
from estkit.ca.store import CertificateStore, StoreError, open_store
from estkit.fileio import write_file_atomic
from estkit.server.revocation import CRL_FILE_NAME
from estkit.server.state import ServerState

logger = logging.getLogger("estkit.server.revocation")

T = TypeVar("T")

# How often the store's revocation stamp is read: the bound on how long a revocation made in
# another process takes to reach the answers (issue 17 target: 1 s). One aggregate query per
# poll per worker is negligible next to enrollment traffic.
REVOCATION_POLL_SECONDS = 0.25
# OCSP answers are valid an hour: a relying party that caches until nextUpdate (RFC 5019 §6)
# learns of a revocation within the hour; re-signing every cached answer twice an hour is cheap.
OCSP_NEXT_UPDATE_SECONDS = 3600
CRL_NEXT_UPDATE_SECONDS = DEFAULT_NEXT_UPDATE_SECONDS
# Re-sign when this fraction of an artifact's validity has passed, so that nothing served is
# ever close to its nextUpdate (RFC 5019 §4: responses are refreshed before they expire).
REFRESH_FRACTION = 0.5
# Bound on cached OCSP answers (~500 bytes each with the responder certificate: ~25 MB), which
# also bounds what a client asking for random serials can make us keep.
MAX_CACHED_OCSP_RESPONSES = 50_000
# Request bytes remembered for the exact-bytes lookup (:meth:`RevocationCache.cached_answer`),
# oldest forgotten first: as many as answers are cached. A client sending endless variants of
# one request (other hashes, requestor names) only pushes entries out, never grows the map.
MAX_REMEMBERED_REQUESTS = MAX_CACHED_OCSP_RESPONSES
# Longest request remembered there. What relying parties send (RFC 5019 §2.1.1: one CertID, no
# signature; with SHA-256 hashes and a 20-byte serial) is under 150 bytes; a longer request
# (padding, a signature, a chain) is answered but parsed each time. Without this bound, padded
# requests up to MAX_OCSP_REQUEST_BYTES would make the map hold ~400 MB.
MAX_REMEMBERED_REQUEST_BYTES = 256
# How long the exact-bytes lookup (cached_answer) trusts its last look at ``DIR/crl.der``. A stat
# per answer was 9 % of the plain-HTTP listener's CPU at 80,000 answers/s (py-spy, issue 17);
# looked at once per millisecond, a revocation made on this host shows in every answer to a
# request that arrives 1 ms or more after `server revoke` returned (the issue asks <= 1 s).
LOCAL_CRL_RECHECK_SECONDS = 0.001
# Certificates whose answers are signed ahead at start (newest first); beyond, on first request.
PRESIGN_LIMIT = 20_000
# Pre-signing goes in slices so that a first request or a nonce is never stuck behind all of it.
PRESIGN_BATCH = 500
# Requests that need a signature now (nonce, first ask) allowed to wait for the signing thread;
# beyond, tryLater (RFC 6960 §2.3): a nonce flood must not queue without bound.
MAX_PENDING_SIGNINGS = 64
# A response to a GET may be cached by HTTP caches this long (RFC 5019 §6.2 max-age); short, so
# that a re-signed answer after a revocation is fetched again soon.
OCSP_HTTP_MAX_AGE_SECONDS = 60
# Where worker processes share the signed CRLs (DIR/revocation/crl-<generation>.der + .json), so
# that every worker serves the same bytes and ETag and a CRL is signed once per change per host,
# not once per worker.
SHARED_DIR = "revocation"


@dataclass(frozen=True)
class Artifact:
    """Signed bytes with what HTTP caching needs."""

    body: bytes
    this_update: datetime
    next_update: datetime

    @functools.cached_property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'

    @functools.cached_property
    def http_dates(self) -> tuple[str, str]:
        """(Last-Modified, Expires) as HTTP dates, computed once per artifact, not per request."""
        return _http_date(self.this_update), _http_date(self.next_update)

    @functools.cached_property
    def expires_at(self) -> float:
        """nextUpdate as a POSIX time: the request path compares it with ``time.time()``."""
        return self.next_update.timestamp()

    def refresh_due(self, now: datetime) -> bool:
        lifetime = (self.next_update - self.this_update).total_seconds()
        return now >= self.this_update + timedelta(seconds=lifetime * REFRESH_FRACTION)


@dataclass(frozen=True)
class _CachedAnswer:
    generation: str
    status: CertStatus
    artifact: Artifact


@dataclass(frozen=True)
class OcspAnswer:
    """What /ocsp sends: the DER body and, for a cached answer, its artifact (HTTP caching)."""

    body: bytes
    artifact: Artifact | None = None
    outcome: str = "successful"


def _status_from_entry(entry: RevokedEntry) -> CertStatus:
    return CertStatus(
        ocsp.OCSPCertStatus.REVOKED, entry.revoked_at, x509.ReasonFlags(str(entry.reason))
    )


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    if certificate.issuer != issuer.subject:
        return False
    try:
        aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return True
    return aki.key_identifier is None or aki.key_identifier == ski.digest


class RevocationCache:
    """CRLs per CA generation and OCSP answers per CertID, for one server process."""

    def __init__(
        self, state: ServerState, *, poll_seconds: float = REVOCATION_POLL_SECONDS
    ) -> None:
        self._state = state
        self._poll_seconds = poll_seconds
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="estkit-revocation"
        )
        # Everything below is written only on the revocation thread and read on the event loop
        # (single dict reads and attribute loads: atomic under the GIL).
        self._store: CertificateStore | None = None
        self._generation: str | None = None
        self._stamp: tuple[int, str] | None = None
        self._issuer_ids: dict[tuple[str, bytes, bytes], str] = {}
        self._issuers: dict[str, x509.Certificate] = {}
        self._responders: dict[str, Responder] = {}
        self._revoked: dict[int, RevokedEntry] = {}
        self._crls: dict[str, Artifact] = {}
        self._answers: dict[CertId, _CachedAnswer] = {}
        # DER of requests without a nonce -> their CertID (written on the event loop only).
        self._request_ids: dict[bytes, CertId] = {}
        self._presigned = False
        self._stopping = False  # pending pre-signing slices return at once when set
        self._task: asyncio.Task[None] | None = None
        self._local_stamp: tuple[int, int, int] | None = None
        # cached_answer's last look at DIR/crl.der: (monotonic time, unchanged then?).
        self._local_look: tuple[float, bool] = (-math.inf, False)
        self._local_crl = self._state.data_dir / CRL_FILE_NAME  # stat per request: made once
        self._catching_up: asyncio.Future[None] | None = None
        self._signing: asyncio.Semaphore | None = None
        self.signatures = 0  # how many OCSP answers were signed (tests and benchmarks read it)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Build everything once (before serving), then keep it current in the background."""
        self._signing = asyncio.Semaphore(MAX_PENDING_SIGNINGS)
        self._local_stamp = self._stat_local()
        try:
            await self._on_thread(self._refresh)
        except Exception as exc:  # serve anyway: /crl and /ocsp say tryLater/503 until it works
            logger.error("revocation cache could not be built at start: %s", exc)
        self._task = asyncio.create_task(self._poll(), name="estkit-revocation-poll")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

        def close() -> None:
            if self._store is not None:
                self._store.close()
                self._store = None

        with contextlib.suppress(Exception):
            await self._on_thread(close)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _on_thread(self, func: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, func, *args)

    async def _poll(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._poll_seconds)
            self._state.refresh()  # notices a CA rollover even without traffic
            try:
                await self._on_thread(self._refresh)
                if failing:
                    logger.info("revocation cache current again")
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:  # one line per outage, not one per poll
                    logger.warning("revocation cache cannot refresh (keeps serving): %s", exc)
                failing = True
                if self._store is not None:
                    with contextlib.suppress(Exception):
                        await self._on_thread(self._drop_store)

    def _stat_local(self) -> tuple[int, int, int] | None:
        try:
            info = os.stat(self._local_crl)
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    async def _catch_up_with_local_revocations(self) -> None:
        """If a revocation was made on this host since the last look (``DIR/crl.der``
        rewritten), refresh before answering; concurrent requests wait for the same refresh."""
        if self._catching_up is not None:
            await asyncio.shield(self._catching_up)
            return
        stamp = self._stat_local()
        if stamp == self._local_stamp:
            return
        self._catching_up = asyncio.get_running_loop().create_future()
        try:
            self._local_stamp = stamp
            await self._on_thread(self._refresh)
        except Exception as exc:  # the poller retries and logs; answer from the cache meanwhile
            logger.warning("revocation cache cannot refresh (keeps serving): %s", exc)
        finally:
            self._catching_up.set_result(None)
            self._catching_up = None

    def _drop_store(self) -> None:
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
            self._store = None

    # -- the revocation thread ---------------------------------------------------------------

    def _open_store(self) -> CertificateStore:
        if self._store is None:
            self._store = open_store(self._state.config.database_url)
        return self._store

    def _release_store(self) -> None:
        """After each piece of work on this thread: a SQLite connection is not kept.

        Why: SQLite shares one WAL index per database file within a process. A connection this
        thread opened while the file system was read-only would keep every new connection of the
        server read-only too, after the file system is writable again (the server's own store
        reopens after an outage, see ServerState._reopening). Opening costs about a millisecond,
        a few times a second; a PostgreSQL connection has no such sharing and is kept.
        """
        if self._state.config.database_url.startswith("sqlite"):
            self._drop_store()

    def _refresh(self) -> None:
        """Re-sign whatever changed or is due (runs on the revocation thread)."""
        try:
            self._refresh_now()
        finally:
            self._release_store()

    def _refresh_now(self) -> None:
        now = datetime.now(UTC)
        authority = self._state.authority
        if not isinstance(authority, CertificateAuthority):
            return  # a registration authority signs nothing: /crl and /ocsp are the upstream's
        store = self._open_store()
        stamp = store.revocation_stamp()
        new_generation = authority.generation != self._generation
        changed = stamp != self._stamp or new_generation
        if changed:
            self._revoked = {entry.serial_number: entry for entry in store.revoked_entries()}
        issuers = authority.issuers_by_generation
        if new_generation:
            ids: dict[tuple[str, bytes, bytes], str] = {}
            for name, issuer in issuers.items():
                for key in issuer_cert_ids(issuer):
                    ids.setdefault(key, name)
            self._issuers = dict(issuers)
            self._issuer_ids = ids
        for name, issuer in issuers.items():
            responder = self._responders.get(name)
            if responder is None or responder.due_for_renewal(now) or responder.issuer != issuer:
                self._responders[name] = load_or_issue_responder(
                    authority.directory, name, issuer, authority.issuer_key_for(name), now
                )
        entries = list(self._revoked.values())
        for name, issuer in issuers.items():
            crl = self._crls.get(name)
            if changed or crl is None or crl.refresh_due(now):

                def sign(issuer: x509.Certificate = issuer) -> bytes:
                    return authority.build_crl(
                        entries,
                        now=now,
                        next_update_seconds=CRL_NEXT_UPDATE_SECONDS,
                        issuer=issuer,
                    )

                try:
                    self._crls[name] = self._shared_crl(name, issuer, stamp, now, sign)
                except OSError as exc:  # read-only or full data directory: serve our own
                    logger.warning("cannot share the CRL with other workers: %s", exc)
                    self._crls[name] = _crl_artifact(sign(), now)
        self._resign_answers(now, changed)
        self._stamp = stamp
        self._generation = authority.generation
        if not self._presigned:
            self._presigned = True
            self._presign(store, now)

    def _shared_crl(
        self,
        generation: str,
        issuer: x509.Certificate,
        stamp: tuple[int, str],
        now: datetime,
        sign: Callable[[], bytes],
    ) -> Artifact:
        """The CRL of ``generation`` for revocation state ``stamp``: the one another worker
        already signed (same stamp, same issuer key, not due) or a new one, written for them.
        A lock file serialises the check-sign-write, so concurrent workers sign it once."""
        directory = self._state.data_dir / SHARED_DIR
        directory.mkdir(exist_ok=True)
        body_path = directory / f"crl-{generation}.der"
        meta_path = directory / f"crl-{generation}.json"
        issuer_key = hashlib.sha256(issuer.public_bytes(serialization.Encoding.DER)).hexdigest()
        with (directory / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                body = body_path.read_bytes()
                if (
                    meta.get("stamp") == list(stamp)
                    and meta.get("issuer") == issuer_key
                    and meta.get("sha256") == hashlib.sha256(body).hexdigest()
                ):
                    shared = _crl_artifact(body, now)
                    if not shared.refresh_due(now):
                        return shared
            except (OSError, ValueError, AttributeError):
                pass  # missing, partial or foreign: sign our own
            body = sign()
            write_file_atomic(body_path, body)
            meta = {
                "stamp": list(stamp),
                "issuer": issuer_key,
                "sha256": hashlib.sha256(body).hexdigest(),
            }
            write_file_atomic(meta_path, json.dumps(meta).encode("utf-8"))
            return _crl_artifact(body, now)

    def _resign_answers(self, now: datetime, changed: bool) -> None:
        for cert_id, cached in list(self._answers.items()):
            status = cached.status
            if changed and status.status is ocsp.OCSPCertStatus.GOOD:
                entry = self._revoked.get(cert_id.serial)
                if entry is not None:
                    status = _status_from_entry(entry)
            if status is not cached.status or cached.artifact.refresh_due(now):
                self._sign_and_cache(cached.generation, cert_id, status, now)

    def _presign(self, store: CertificateStore, now: datetime) -> None:
        """Queue signing of SHA-1 CertID answers (the RFC 5019 default) for the newest
        certificates still valid, in slices behind anything a request is waiting for."""
        records = [
            record
            for record in store.list_issued()
            if record.not_after > now and record.status in ("valid", "revoked")
        ][-PRESIGN_LIMIT:]
        ids_by_issuer = {
            issuer: (name, next(key for key in issuer_cert_ids(issuer) if key[0] == "sha1"))
            for name, issuer in self._issuers.items()
        }
        slices = [
            records[start : start + PRESIGN_BATCH]
            for start in range(0, len(records), PRESIGN_BATCH)
        ]
        if slices:
            self._executor.submit(self._presign_slices, slices, 0, ids_by_issuer)

    def _presign_slices(
        self, slices: list[list[Any]], index: int, ids_by_issuer: dict[Any, Any]
    ) -> None:
        """Sign slice ``index``, then queue the next one behind whatever was queued meanwhile:
        a first request, a nonce or a catch-up after a revocation waits for one slice at most,
        not for all of pre-signing (queued at once, 20,000 signatures held them up at start)."""
        self._presign_batch(slices[index], ids_by_issuer)
        if index + 1 < len(slices) and not self._stopping:
            with contextlib.suppress(RuntimeError):  # the executor was shut down: stopping
                self._executor.submit(self._presign_slices, slices, index + 1, ids_by_issuer)

    def _presign_batch(self, records: list[Any], ids_by_issuer: dict[Any, Any]) -> None:
        now = datetime.now(UTC)
        try:
            for record in records:
                if self._stopping:
                    return
                certificate = record.certificate
                for issuer, (name, (hash_name, name_hash, key_hash)) in ids_by_issuer.items():
                    if not _issued_by(certificate, issuer):
                        continue
                    cert_id = CertId(hash_name, name_hash, key_hash, certificate.serial_number)
                    if cert_id not in self._answers:
                        self._sign_and_cache(name, cert_id, self._status_of_record(record), now)
                    break
        except Exception as exc:  # pre-signing is an optimisation: answers come on demand
            logger.warning("pre-signing OCSP answers stopped: %s", exc)

    def _status_of_record(self, record: Any) -> CertStatus:
        entry = self._revoked.get(int(record.serial, 16))
        if entry is not None:
            return _status_from_entry(entry)
        if record.status == "revoked" and record.revoked_at is not None:
            reason = x509.ReasonFlags(record.revocation_reason or "unspecified")
            return CertStatus(ocsp.OCSPCertStatus.REVOKED, record.revoked_at, reason)
        return GOOD

    def _lookup_status(self, generation: str, serial: int) -> CertStatus:
        try:
            record = self._open_store().get_issued(serial)
        finally:
            self._release_store()
        issuer = self._issuers.get(generation)
        if record is None or issuer is None or not _issued_by(record.certificate, issuer):
            return UNKNOWN
        return self._status_of_record(record)

    def _sign_and_cache(
        self, generation: str, cert_id: CertId, status: CertStatus, now: datetime
    ) -> _CachedAnswer:
        artifact = self._sign(generation, cert_id, status, now, None)
        cached = _CachedAnswer(generation, status, artifact)
        self._answers.pop(cert_id, None)  # re-inserted last: eviction is oldest-signed first
        self._answers[cert_id] = cached
        while len(self._answers) > MAX_CACHED_OCSP_RESPONSES:
            self._answers.pop(next(iter(self._answers)))
        return cached

    def _sign(
        self,
        generation: str,
        cert_id: CertId,
        status: CertStatus,
        now: datetime,
        nonce: bytes | None,
    ) -> Artifact:
        this_update = now.replace(microsecond=0)
        next_update = this_update + timedelta(seconds=OCSP_NEXT_UPDATE_SECONDS)
        body = sign_ocsp_response(
            self._responders[generation],
            cert_id,
            status,
            this_update=this_update,
            next_update=next_update,
            nonce=nonce,
        )
        self.signatures += 1
        return Artifact(body, this_update, next_update)

    def _answer_now(self, generation: str, cert_id: CertId, nonce: bytes | None) -> Artifact:
        """Sign an answer a request waits for (first ask, or a nonce): on the revocation thread."""
        now = datetime.now(UTC)
        cached = self._answers.get(cert_id)
        if nonce is None and cached is not None and not cached.artifact.refresh_due(now):
            return cached.artifact  # signed while this request waited
        status = (
            cached.status if cached is not None else self._lookup_status(generation, cert_id.serial)
        )
        if nonce is not None:
            return self._sign(generation, cert_id, status, now, nonce)
        return self._sign_and_cache(generation, cert_id, status, now).artifact

    # -- the event loop side -----------------------------------------------------------------

    async def crl(self, generation: str | None = None) -> Artifact | None:
        """The cached CRL of ``generation`` (default: the current one), None if no such one."""
        await self._catch_up_with_local_revocations()
        wanted = generation or self._state.authority.generation
        if wanted not in self._crls and wanted in self._state.authority.issuers_by_generation:
            await self._on_thread(self._refresh)  # a rollover the poller has not seen yet
        return self._crls.get(wanted)

    def cached_answer(self, der: bytes) -> Artifact | None:
        """The pre-signed answer to the request ``der`` when these exact bytes were answered
        before without a nonce, the answer is cached and fresh, and no revocation made on this
        host is waiting to be taken in; else None (then :meth:`ocsp` answers).

        Why by the exact bytes: an RFC 5019 relying party sends the same bytes for the same
        certificate every time, and parsing them is a deterministic function of the bytes, so
        bytes seen before name the same CertID without the ASN.1 parse (a third of the
        request's cost on the plain-HTTP listener). Requests with a nonce are never remembered:
        each one's answer is signed for it."""
        cert_id = self._request_ids.get(der)
        if cert_id is None or self._catching_up is not None:
            return None
        cached = self._answers.get(cert_id)
        if (
            cached is None
            or time.time() >= cached.artifact.expires_at
            or cached.generation not in self._responders
            or not self._local_unchanged()
        ):
            return None
        return cached.artifact

    def _local_unchanged(self) -> bool:
        """True when ``DIR/crl.der`` is as last taken in, looked at no more than once per
        LOCAL_CRL_RECHECK_SECONDS (the answer is kept only while the stamp it was compared
        with is still the current one)."""
        now = time.monotonic()
        looked_at, unchanged = self._local_look
        if now - looked_at < LOCAL_CRL_RECHECK_SECONDS and unchanged:
            return True
        unchanged = self._stat_local() == self._local_stamp
        self._local_look = (now, unchanged)
        return unchanged

    def _remember(self, der: bytes, cert_id: CertId) -> None:
        if len(der) <= MAX_REMEMBERED_REQUEST_BYTES and der not in self._request_ids:
            while len(self._request_ids) >= MAX_REMEMBERED_REQUESTS:
                self._request_ids.pop(next(iter(self._request_ids)))
            self._request_ids[der] = cert_id

    async def ocsp(self, der: bytes) -> OcspAnswer:
        """The answer to one DER OCSP request: never raises for anything the client sent."""
        artifact = self.cached_answer(der)
        if artifact is not None:
            return OcspAnswer(artifact.body, artifact)
        try:
            parsed = parse_ocsp_request(der)
        except OcspRequestError as exc:
            logger.debug("malformed OCSP request: %s", exc)
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        cert_id = parsed.cert_id
        await self._catch_up_with_local_revocations()
        generation = self._issuer_ids.get(
            (cert_id.hash_name, cert_id.issuer_name_hash, cert_id.issuer_key_hash)
        )
        if generation is None or generation not in self._responders:
            # RFC 6960 §2.3: "unauthorized" when the responder cannot answer for that issuer.
            return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        if parsed.nonce is None:
            self._remember(der, cert_id)
            cached = self._answers.get(cert_id)
            if cached is not None and datetime.now(UTC) < cached.artifact.next_update:
                return OcspAnswer(cached.artifact.body, cached.artifact)
        assert self._signing is not None
        if self._signing.locked():
            return _unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)
        async with self._signing:
            try:
                artifact = await self._on_thread(
                    self._answer_now, generation, cert_id, parsed.nonce
                )
            except StoreError as exc:
                logger.warning("OCSP answer deferred, the store is unavailable: %s", exc)
                return _unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)
            except Exception:  # a bug or a broken CA must not become an HTTP 500 for clients
                logger.exception("OCSP answer failed")
                return _unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR)
        return OcspAnswer(artifact.body, None if parsed.nonce else artifact)


def _http_date(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def _crl_artifact(body: bytes, now: datetime) -> Artifact:
    loaded = x509.load_der_x509_crl(body)
    return Artifact(body, loaded.last_update_utc, loaded.next_update_utc or now)


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> OcspAnswer:
    return OcspAnswer(unsuccessful_response(status), None, status.name.lower())


__all__ = [
    "CRL_NEXT_UPDATE_SECONDS",
    "MAX_CACHED_OCSP_RESPONSES",
    "MAX_PENDING_SIGNINGS",
    "MAX_REMEMBERED_REQUESTS",
    "MAX_REMEMBERED_REQUEST_BYTES",
    "OCSP_HTTP_MAX_AGE_SECONDS",
    "OCSP_NEXT_UPDATE_SECONDS",
    "REVOCATION_POLL_SECONDS",
    "Artifact",
    "OcspAnswer",
    "RevocationCache",
]
