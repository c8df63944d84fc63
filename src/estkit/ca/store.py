"""The certificate store: issued certificates, revocations, the approval queue and an audit log.

Why every method is its own committed transaction: the server must never hand a client a
certificate the store has not durably recorded (a crash after the response would otherwise lose
it), and several server processes share one database. So each call opens a transaction, does its
work, commits, and only then returns; uniqueness of serials is the database's PRIMARY KEY, not a
check-then-insert in Python, so it holds across threads, processes and machines.

URLs: ``sqlite:///abs/path.db`` (or a plain path; options ``?synchronous=full`` for fsync on
every commit, default ``normal`` which survives kill -9 but not a power cut, and
``?busy_timeout=ms``), ``postgresql://user:password@host:port/db``.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estkit.ca.builders import utc_now
from estkit.ca.crl import RevokedEntry, normalize_reason, parse_serial, serial_to_hex
from estkit.ca.store_backends import (
    Backend,
    DuplicateSerialError,
    StoreError,
    StoreUnavailableError,
    Transaction,
    UniqueViolation,
    open_backend,
)
from estkit.ca.store_schema import CURRENT_VERSION, SCHEMA_VERSION_TABLE, migration_statements
from estkit.protocol.certs import sha256_fingerprint
from estkit.protocol.keys import describe_public_key

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

CertificateStatus = Literal["valid", "revoked"]
RequestStatus = Literal["pending", "approved", "rejected", "issued"]
CERTIFICATE_STATUSES: tuple[str, ...] = ("valid", "revoked")
REQUEST_STATUSES: tuple[str, ...] = ("pending", "approved", "rejected", "issued")
# Listings (console pages, `server certs`/`server requests`) are read one page at a time: a store
# with 20,000 events or certificates costs one bounded query per page, never a load of every row.
# 50 rows fill a screen or two; 500 is the most one call returns whatever the caller asks for, so
# a hostile ?page size or --limit cannot turn a page back into "everything".
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# An OFFSET is a scan of that many index entries; past this a listing is a search, not a page
# (the caller narrows by status or label instead). 1,000,000 rows of an index scan still take
# well under a second, so a hostile ?page= cannot stall the store thread for long.
MAX_PAGE_OFFSET = 1_000_000
# The dashboard groups refusals by their message in SQL and reads at most this many groups (the
# most frequent first): a flood of refusals whose messages all differ (names, serials in them)
# costs 1,000 short rows per poll, not one row per refusal. The console merges these into reasons
# and shows what is left over as one "other" line, so the total stays exact.
MAX_EVENT_GROUPS = 1000
# Sort orders of the certificate listing: name → ORDER BY (each ends with the unique serial so
# that pages never overlap or skip a row when several certificates share a time).
ISSUED_SORTS: dict[str, str] = {
    "-issued": "issued_at DESC, serial DESC",
    "issued": "issued_at, serial",
    "expiry": "not_after, serial",
    "-expiry": "not_after DESC, serial DESC",
    "subject": "LOWER(subject), serial",
}
T = TypeVar("T")
# Stored in place of "no label" / "no requester" so that equality lookups work the same on
# SQLite and PostgreSQL (NULL never equals NULL in SQL).
_NONE = ""


class RequestStateError(StoreError):
    """A request is not in the state the operation needs (e.g. approving a rejected request)."""


class _Record:
    """A stored row as a frozen dataclass; ``to_json`` is it as a JSON-ready dict (times as
    ISO 8601, tuples as lists)."""

    def to_json(self) -> dict[str, Any]:
        return _jsonable(asdict(cast("DataclassInstance", self)))


@dataclass(frozen=True)
class IssuedRecord(_Record):
    """One issued certificate as recorded (``serial``: lower-case hex, no leading zeros)."""

    serial: str
    subject: str
    not_before: datetime
    not_after: datetime
    operation: str
    label: str | None
    status: CertificateStatus
    revoked_at: datetime | None
    revocation_reason: str | None
    key_type: str
    requester: str | None
    certificate_pem: str
    issued_at: datetime
    request_id: int | None = None

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.certificate_pem.encode("ascii"))


@dataclass(frozen=True)
class PendingRequest(_Record):
    """One enrollment request in the manual-approval queue, with what an operator needs to see
    (BCP-003-03 S4): names, key type, the client certificate and the peer address."""

    id: int
    created_at: datetime
    label: str | None
    operation: str
    status: RequestStatus
    common_name: str | None
    dns_names: tuple[str, ...]
    key_type: str
    public_key_sha256: str
    client_subject: str | None
    client_issuer: str | None
    client_fingerprint: str | None
    peer_address: str | None
    requester: str | None
    decided_by: str | None
    decided_at: datetime | None
    note: str
    serial: str | None
    csr_pem: str
    # Added in schema version 2 (None on requests queued by an older estkit: not recorded).
    # client_trust: "trusted", "untrusted", "expired" (accepted although expired), "revoked" or
    # "none" (no client certificate); verdict: what policy said when the request was queued.
    client_trust: str | None = None
    http_user: str | None = None
    client_certificate_pem: str | None = None
    verdict: str | None = None

    @property
    def csr(self) -> x509.CertificateSigningRequest:
        return x509.load_pem_x509_csr(self.csr_pem.encode("ascii"))


@dataclass(frozen=True)
class Event(_Record):
    """An audit log entry (refusals, decisions, revocations)."""

    id: int
    at: datetime
    kind: str
    message: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing: ``items`` (at most ``limit``), the ``total`` matching rows and where
    the next page starts (``next_offset``, None on the last page)."""

    items: list[T]
    total: int
    offset: int
    limit: int

    @property
    def next_offset(self) -> int | None:
        following = self.offset + len(self.items)
        return following if following < self.total else None

    def paging_json(self) -> dict[str, Any]:
        """The paging facts for a JSON listing (without the items)."""
        return {
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
            "returned": len(self.items),
            "next_offset": self.next_offset,
        }


@dataclass(frozen=True)
class IssuedSummary:
    """Counts for the dashboard, from one aggregate query (``expired``: valid but past notAfter;
    ``expiring``: valid, not yet expired, expiring before the horizon)."""

    valid: int
    revoked: int
    expired: int
    expiring: int


def check_page(limit: int, offset: int) -> tuple[int, int]:
    """``(limit, offset)`` bounded: ``ValueError`` for a negative offset or a limit below 1; a
    limit above :data:`MAX_PAGE_SIZE` is lowered to it."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1 (got {limit})")
    if offset < 0 or offset > MAX_PAGE_OFFSET:
        raise ValueError(f"offset must be between 0 and {MAX_PAGE_OFFSET} (got {offset})")
    return min(limit, MAX_PAGE_SIZE), offset


def _like_pattern(text: str) -> str:
    """``%text%`` for LIKE ... ESCAPE '\\', with the wildcards of ``text`` taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True)
class EventGroup:
    """Audit events of one kind that share a message, counted by the database (``fields``: those
    of one of them, e.g. the HTTP status of a refusal)."""

    kind: str
    message: str
    count: int
    fields: dict[str, Any]


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value.isoformat()
        if isinstance(value, datetime)
        else list(value)
        if isinstance(value, tuple)
        else value
        for key, value in data.items()
    }


def normalize_serial_hex(serial: str | int) -> str:
    """The store's spelling of a serial (raises ``ValueError`` for text that is not hex)."""
    return serial_to_hex(parse_serial(serial))


_ISSUED_COLUMNS = (
    "serial, subject, not_before, not_after, operation, label, status, revoked_at, "
    "revocation_reason, key_type, requester, certificate_pem, issued_at, request_id"
)
_REQUEST_COLUMNS = (
    "id, created_at, label, operation, status, common_name, dns_names, key_type, "
    "public_key_sha256, client_subject, client_issuer, client_fingerprint, peer_address, "
    "requester, decided_by, decided_at, note, serial, csr_pem, client_trust, http_user, "
    "client_certificate_pem, verdict"
)
CLIENT_TRUST_VALUES: tuple[str, ...] = ("trusted", "untrusted", "expired", "revoked", "none")
_OPERATOR_COLUMNS = "serial, name, fingerprint, issued_at, not_after, status, revoked_at"


@dataclass(frozen=True)
class OperatorCertificateRecord(_Record):
    """A console operator certificate as recorded when `estkit server admin-cert` issued it."""

    serial: str
    name: str
    fingerprint: str
    issued_at: datetime
    not_after: datetime
    status: CertificateStatus
    revoked_at: datetime | None


_EVENT_COLUMNS = "id, at, kind, message, fields"


def _status_label_filter(status: str | None, label: str | None) -> tuple[list[str], list[Any]]:
    """WHERE clauses and parameters for the ``status`` and ``label`` filters of the issued
    listings (``label=""``: the unlabelled endpoint)."""
    clauses: list[str] = []
    params: list[Any] = []
    if status is not None:
        if status not in CERTIFICATE_STATUSES:
            raise ValueError(
                f"unknown status {status!r}; use one of {', '.join(CERTIFICATE_STATUSES)}"
            )
        clauses.append("status = ?")
        params.append(status)
    if label is not None:
        clauses.append("label = ?")
        params.append(label)
    return clauses, params


class CertificateStore:
    """Persistent record of what the CA issued and decided. Every method commits before it
    returns; safe to share between threads; several processes may open the same database."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._migrate()

    # ----- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The database URL without any password."""
        return self._backend.display_url

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._backend.dialect.name

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> CertificateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def ping(self) -> None:
        """Raise :class:`StoreUnavailableError` unless the database answers now."""
        with self._backend.read() as tx:
            tx.execute("SELECT 1")

    def schema_version(self) -> int:
        with self._backend.read() as tx:
            rows = tx.execute(f"SELECT version FROM {SCHEMA_VERSION_TABLE}")
        return int(rows[0][0]) if rows else 0

    def _migrate(self) -> None:
        try:
            if self.schema_version() == CURRENT_VERSION:
                return  # the common case: no write lock needed, works on a read-only file
        except StoreUnavailableError:
            raise
        except StoreError:
            pass  # no schema_version table yet: create it below
        with self._backend.transaction() as tx:
            self._backend.migration_lock(tx)
            tx.execute(
                f"CREATE TABLE IF NOT EXISTS {SCHEMA_VERSION_TABLE} (version INTEGER NOT NULL)"
            )
            rows = tx.execute(f"SELECT version FROM {SCHEMA_VERSION_TABLE}")
            version = int(rows[0][0]) if rows else 0
            if version > CURRENT_VERSION:
                raise StoreError(
                    f"the certificate store {self.url} has schema version {version}, newer than "
                    f"this estkit understands ({CURRENT_VERSION}); upgrade estkit"
                )
            for target, statements in migration_statements(self._backend.dialect, version):
                for statement in statements:
                    tx.execute(statement)
                if version == 0 and not rows:
                    tx.execute(
                        f"INSERT INTO {SCHEMA_VERSION_TABLE} (version) VALUES (?)", (target,)
                    )
                else:
                    tx.execute(f"UPDATE {SCHEMA_VERSION_TABLE} SET version = ?", (target,))
                rows, version = [(target,)], target

    # ----- issued certificates --------------------------------------------------------------

    def record_issued(
        self,
        cert: x509.Certificate,
        *,
        operation: str,
        label: str | None,
        requester: str | None = None,
        request_id: int | None = None,
        now: datetime | None = None,
    ) -> IssuedRecord:
        """Record a freshly issued certificate (committed when this returns).

        With ``request_id`` the approved request is marked issued in the same transaction; if it
        is not approved (e.g. a concurrent retry already got a certificate for it) nothing is
        recorded and :class:`RequestStateError` is raised, so the caller does not hand out a
        second certificate for one approval.
        """
        if not operation:
            raise ValueError("operation must name the EST operation, e.g. 'simpleenroll'")
        now = utc_now(now)
        record = IssuedRecord(
            serial=serial_to_hex(cert.serial_number),
            subject=cert.subject.rfc4514_string(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            operation=operation,
            label=label or None,
            status="valid",
            revoked_at=None,
            revocation_reason=None,
            key_type=describe_public_key(cert.public_key()).description,
            requester=requester,
            certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            issued_at=now,
            request_id=request_id,
        )
        t = self._backend.to_db_time
        try:
            with self._backend.transaction() as tx:
                tx.execute(
                    f"INSERT INTO issued ({_ISSUED_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.serial,
                        record.subject,
                        t(record.not_before),
                        t(record.not_after),
                        record.operation,
                        label or _NONE,
                        record.status,
                        None,
                        None,
                        record.key_type,
                        requester,
                        record.certificate_pem,
                        t(now),
                        request_id,
                    ),
                )
                if request_id is not None:
                    tx.execute(
                        "UPDATE requests SET status = 'issued', serial = ? "
                        "WHERE id = ? AND status = 'approved'",
                        (record.serial, request_id),
                    )
                    if tx.rowcount != 1:
                        self._raise_request_state(tx, request_id, "issued")
        except UniqueViolation:
            raise DuplicateSerialError(
                f"a certificate with serial {record.serial} is already in the store "
                f"{self.url}; serials must be unique — issue again with a fresh serial"
            ) from None
        return record

    def get_issued(self, serial_hex: str | int) -> IssuedRecord | None:
        """The record for a serial (hex text, any case, leading zeros/colons tolerated)."""
        serial = normalize_serial_hex(serial_hex)
        with self._backend.read() as tx:
            rows = tx.execute(f"SELECT {_ISSUED_COLUMNS} FROM issued WHERE serial = ?", (serial,))
        return self._issued(rows[0]) if rows else None

    def list_issued(
        self, *, status: str | None = None, label: str | None = None
    ) -> list[IssuedRecord]:
        """Every matching issued certificate, oldest first (``label=""``: the unlabelled
        endpoint). Unbounded: for listings a person reads use :meth:`issued_page`."""
        clauses, params = _status_label_filter(status, label)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._backend.read() as tx:
            rows = tx.execute(
                f"SELECT {_ISSUED_COLUMNS} FROM issued{where} ORDER BY issued_at, serial", params
            )
        return [self._issued(row) for row in rows]

    def revoke(
        self, serial_hex: str | int, reason: str = "unspecified", now: datetime | None = None
    ) -> IssuedRecord:
        """Mark a certificate revoked (idempotent: a second call keeps the first date/reason).

        Raises ``KeyError`` for a serial the store does not know and ``ValueError`` for an
        unknown reason.
        """
        serial = normalize_serial_hex(serial_hex)
        reason = normalize_reason(reason)
        now = utc_now(now)
        with self._backend.transaction() as tx:
            tx.execute(
                "UPDATE issued SET status = 'revoked', revoked_at = ?, revocation_reason = ? "
                "WHERE serial = ? AND status = 'valid'",
                (self._backend.to_db_time(now), reason, serial),
            )
            changed = tx.rowcount == 1
            rows = tx.execute(f"SELECT {_ISSUED_COLUMNS} FROM issued WHERE serial = ?", (serial,))
            if not rows:
                raise KeyError(f"no certificate with serial {serial} in the store {self.url}")
            record = self._issued(rows[0])
            if changed:
                self._insert_event(
                    tx,
                    now,
                    "revoked",
                    f"certificate {serial} revoked ({reason})",
                    {"serial": serial, "reason": reason, "subject": record.subject},
                )
        return record

    def revoked_entries(self) -> list[RevokedEntry]:
        """Every revoked certificate, for the CRL."""
        with self._backend.read() as tx:
            rows = tx.execute(
                "SELECT serial, revoked_at, revocation_reason FROM issued "
                "WHERE status = 'revoked' ORDER BY revoked_at, serial"
            )
        return [
            RevokedEntry(str(serial), self._backend.from_db_time(at), str(reason or "unspecified"))
            for serial, at, reason in rows
        ]

    def revocation_stamp(self) -> tuple[int, str]:
        """(number of revoked certificates, latest revocation time): changes with every
        revocation, whichever process or host made it; one aggregate query, cheap enough to poll
        (the server's revocation cache does, to re-sign its CRL and OCSP answers)."""
        with self._backend.read() as tx:
            rows = tx.execute(
                "SELECT COUNT(*), MAX(revoked_at) FROM issued WHERE status = 'revoked'"
            )
        count, latest = rows[0] if rows else (0, None)
        return int(count or 0), str(latest or "")

    # ----- the approval queue ---------------------------------------------------------------

    def add_request(
        self,
        *,
        label: str | None,
        operation: str,
        csr_pem: str | bytes,
        common_name: str | None,
        dns_names: Sequence[str],
        key_type: str,
        public_key_sha256: str,
        client_subject: str | None = None,
        client_issuer: str | None = None,
        client_fingerprint: str | None = None,
        peer_address: str | None = None,
        requester: str | None = None,
        client_trust: str | None = None,
        http_user: str | None = None,
        client_certificate_pem: str | None = None,
        verdict: str | None = None,
        now: datetime | None = None,
    ) -> PendingRequest:
        """Queue a request for an operator. If an identical request (same label, operation,
        public key and requester) is already pending, that one is returned instead.

        ``client_trust`` is one of :data:`CLIENT_TRUST_VALUES`; ``verdict`` what policy said."""
        if isinstance(csr_pem, bytes):
            csr_pem = csr_pem.decode("ascii")
        if client_trust is not None and client_trust not in CLIENT_TRUST_VALUES:
            raise ValueError(
                f"unknown client_trust {client_trust!r}; "
                f"use one of {', '.join(CLIENT_TRUST_VALUES)}"
            )
        now = utc_now(now)
        try:
            with self._backend.transaction() as tx:
                rows = tx.execute(
                    f"INSERT INTO requests ({_REQUEST_COLUMNS.removeprefix('id, ')}) "
                    "VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, '', "
                    f"NULL, ?, ?, ?, ?, ?) RETURNING {_REQUEST_COLUMNS}",
                    (
                        self._backend.to_db_time(now),
                        label or _NONE,
                        operation,
                        common_name,
                        json.dumps(list(dns_names)),
                        key_type,
                        public_key_sha256,
                        client_subject,
                        client_issuer,
                        client_fingerprint,
                        peer_address,
                        requester or _NONE,
                        csr_pem,
                        client_trust,
                        http_user,
                        client_certificate_pem,
                        verdict,
                    ),
                )
                request = self._request(rows[0])
                self._insert_event(
                    tx,
                    now,
                    "queued",
                    f"request {request.id} queued for approval",
                    {
                        "request_id": request.id,
                        "label": label,
                        "operation": operation,
                        "common_name": common_name,
                        "peer_address": peer_address,
                    },
                )
                return request
        except UniqueViolation:
            existing = self.find_request(
                label=label,
                operation=operation,
                public_key_sha256=public_key_sha256,
                requester=requester,
            )
            if existing is None:  # pragma: no cover - only if decided between the two calls
                raise RequestStateError(
                    "an identical request was queued and decided at the same moment; retry"
                ) from None
            return existing

    def find_request(
        self,
        *,
        label: str | None,
        operation: str,
        public_key_sha256: str,
        requester: str | None,
    ) -> PendingRequest | None:
        """The newest request with this identity, whatever its status (None if there is none)."""
        with self._backend.read() as tx:
            rows = tx.execute(
                f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE label = ? AND operation = ? "
                "AND public_key_sha256 = ? AND requester = ? ORDER BY id DESC LIMIT 1",
                (label or _NONE, operation, public_key_sha256, requester or _NONE),
            )
        return self._request(rows[0]) if rows else None

    def get_request(self, request_id: int) -> PendingRequest | None:
        with self._backend.read() as tx:
            rows = tx.execute(
                f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE id = ?", (request_id,)
            )
        return self._request(rows[0]) if rows else None

    def list_requests(self, status: str | None = None) -> list[PendingRequest]:
        """Every request (with ``status``), oldest first. Unbounded: for listings use
        :meth:`requests_page`, for counts :meth:`count_requests`."""
        if status is not None and status not in REQUEST_STATUSES:
            raise ValueError(f"unknown status {status!r}; use one of {', '.join(REQUEST_STATUSES)}")
        where, params = (" WHERE status = ?", (status,)) if status else ("", ())
        with self._backend.read() as tx:
            rows = tx.execute(f"SELECT {_REQUEST_COLUMNS} FROM requests{where} ORDER BY id", params)
        return [self._request(row) for row in rows]

    def decide_request(
        self,
        request_id: int,
        approve: bool,
        *,
        by: str,
        note: str = "",
        now: datetime | None = None,
    ) -> PendingRequest:
        """Approve or reject a pending request (and log the decision, in one transaction).

        Raises ``KeyError`` for an unknown id and :class:`RequestStateError` when the request
        was already decided.
        """
        now = utc_now(now)
        status = "approved" if approve else "rejected"
        with self._backend.transaction() as tx:
            tx.execute(
                "UPDATE requests SET status = ?, decided_by = ?, decided_at = ?, note = ? "
                "WHERE id = ? AND status = 'pending'",
                (status, by, self._backend.to_db_time(now), note, request_id),
            )
            if tx.rowcount != 1:
                self._raise_request_state(tx, request_id, status)
            rows = tx.execute(
                f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE id = ?", (request_id,)
            )
            request = self._request(rows[0])
            self._insert_event(
                tx,
                now,
                status,
                f"request {request_id} {status} by {by}",
                {
                    "request_id": request_id,
                    "by": by,
                    "note": note,
                    "common_name": request.common_name,
                },
            )
        return request

    # ----- shared authentication state (issue 24) -------------------------------------------

    def shared_secret(self, name: str, make: Callable[[], bytes]) -> bytes:
        """The secret ``name`` shared by every process using this store, created by the first
        caller (``make()``); concurrent first callers all end up with the same value."""
        candidate = base64.b64encode(make()).decode("ascii")
        with self._backend.transaction() as tx:
            tx.execute(
                "INSERT INTO server_secrets (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (name, candidate),
            )
            rows = tx.execute("SELECT value FROM server_secrets WHERE name = ?", (name,))
        return base64.b64decode(str(rows[0][0]))

    def use_digest_nonce(
        self, nonce: str, nc: int, *, expires_at: datetime, now: datetime | None = None
    ) -> bool:
        """Record one use of a Digest (nonce, nonce-count); False when it was used before (a
        replay), whichever process saw it first. Expired uses are purged on the way."""
        now = utc_now(now)
        t = self._backend.to_db_time
        try:
            with self._backend.transaction() as tx:
                tx.execute("DELETE FROM digest_nonce_uses WHERE expires_at < ?", (t(now),))
                tx.execute(
                    "INSERT INTO digest_nonce_uses (nonce, nc, expires_at) VALUES (?, ?, ?)",
                    (nonce, nc, t(expires_at)),
                )
        except UniqueViolation:
            return False
        return True

    def record_operator_certificate(
        self, cert: x509.Certificate, name: str, *, now: datetime | None = None
    ) -> OperatorCertificateRecord:
        """Record a console operator certificate so it can be listed and revoked."""
        now = utc_now(now)
        t = self._backend.to_db_time
        record = OperatorCertificateRecord(
            serial=serial_to_hex(cert.serial_number),
            name=name,
            fingerprint=sha256_fingerprint(cert),
            issued_at=now,
            not_after=cert.not_valid_after_utc,
            status="valid",
            revoked_at=None,
        )
        with self._backend.transaction() as tx:
            tx.execute(
                f"INSERT INTO operator_certificates ({_OPERATOR_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, 'valid', NULL)",
                (record.serial, name, record.fingerprint, t(now), t(record.not_after)),
            )
            self._insert_event(
                tx,
                now,
                "operator-certificate",
                f"operator certificate {record.serial} issued to {name}",
                {"serial": record.serial, "operator": name, "fingerprint": record.fingerprint},
            )
        return record

    def get_operator_certificate(
        self, *, fingerprint: str | None = None, serial: str | None = None
    ) -> OperatorCertificateRecord | None:
        """The record for one operator certificate, by fingerprint or by serial."""
        if fingerprint is not None:
            where, key = "fingerprint = ?", fingerprint
        elif serial is not None:
            where, key = "serial = ?", normalize_serial_hex(serial)
        else:
            raise ValueError("give the fingerprint or the serial of the operator certificate")
        with self._backend.read() as tx:
            rows = tx.execute(
                f"SELECT {_OPERATOR_COLUMNS} FROM operator_certificates WHERE {where}", (key,)
            )
        return self._operator(rows[0]) if rows else None

    def list_operator_certificates(self) -> list[OperatorCertificateRecord]:
        with self._backend.read() as tx:
            rows = tx.execute(
                f"SELECT {_OPERATOR_COLUMNS} FROM operator_certificates ORDER BY issued_at, serial"
            )
        return [self._operator(row) for row in rows]

    def revoke_operator_certificate(
        self, serial_hex: str, *, by: str, now: datetime | None = None
    ) -> OperatorCertificateRecord:
        """Revoke an operator certificate (idempotent); ``KeyError`` for an unknown serial."""
        serial = normalize_serial_hex(serial_hex)
        now = utc_now(now)
        with self._backend.transaction() as tx:
            tx.execute(
                "UPDATE operator_certificates SET status = 'revoked', revoked_at = ? "
                "WHERE serial = ? AND status = 'valid'",
                (self._backend.to_db_time(now), serial),
            )
            changed = tx.rowcount == 1
            rows = tx.execute(
                f"SELECT {_OPERATOR_COLUMNS} FROM operator_certificates WHERE serial = ?",
                (serial,),
            )
            if not rows:
                raise KeyError(
                    f"no operator certificate with serial {serial} in the store {self.url}"
                )
            record = self._operator(rows[0])
            if changed:
                self._insert_event(
                    tx,
                    now,
                    "operator-certificate",
                    f"operator certificate {serial} of {record.name} revoked by {by}",
                    {"serial": serial, "operator": record.name, "by": by},
                )
        return record

    def add_console_token(
        self, token_sha256: str, operator: str, *, expires_at: datetime, now: datetime | None = None
    ) -> None:
        """Remember a console sign-in token by its SHA-256 only (the token itself is never
        stored), bound to ``operator``."""
        now = utc_now(now)
        t = self._backend.to_db_time
        with self._backend.transaction() as tx:
            tx.execute("DELETE FROM console_tokens WHERE expires_at < ?", (t(now),))
            tx.execute(
                "INSERT INTO console_tokens (token_sha256, operator, created_at, expires_at) "
                "VALUES (?, ?, ?, ?)",
                (token_sha256, operator, t(now), t(expires_at)),
            )

    def use_console_token(
        self, token_sha256: str, operator: str, *, now: datetime | None = None
    ) -> str | None:
        """Spend a sign-in token for ``operator``: None when it worked, else why not. A token
        works once: the row is marked used in the same transaction that checks it."""
        now = utc_now(now)
        t = self._backend.to_db_time
        with self._backend.transaction() as tx:
            rows = tx.execute(
                "SELECT operator, expires_at, used_at FROM console_tokens WHERE token_sha256 = ?",
                (token_sha256,),
            )
            if not rows:
                return "this sign-in token is not valid for this console"
            bound, expires_at, used_at = rows[0]
            if used_at is not None:
                return "this sign-in token was already used; create a new one"
            if self._backend.from_db_time(expires_at) < now:
                return "this sign-in token has expired; create a new one"
            if bound != operator:
                return "this sign-in token was created for another operator"
            tx.execute(
                "UPDATE console_tokens SET used_at = ? WHERE token_sha256 = ? AND used_at IS NULL",
                (t(now), token_sha256),
            )
            if tx.rowcount != 1:  # pragma: no cover - the write lock makes this impossible
                return "this sign-in token was already used; create a new one"
        return None

    # ----- audit log ------------------------------------------------------------------------

    def log_event(self, kind: str, message: str, **fields: Any) -> Event:
        """Append an audit event (refusals, decisions). ``fields`` must be JSON-friendly; other
        values are stored as their ``str()``."""
        now = utc_now()
        with self._backend.transaction() as tx:
            return self._insert_event(tx, now, kind, message, fields)

    def list_events(
        self, kind: str | None = None, since_id: int = 0, *, limit: int | None = None
    ) -> list[Event]:
        """Audit events with id > ``since_id``, oldest first, optionally of one ``kind``."""
        clauses: list[str] = ["id > ?"]
        params: list[int | str] = [since_id]
        if kind is not None:
            clauses.append("kind = ?")
            params.append(kind)
        limit_sql = ""
        if limit is not None:
            limit_sql = " LIMIT ?"
            params.append(int(limit))
        with self._backend.read() as tx:
            rows = tx.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(clauses)} "
                f"ORDER BY id{limit_sql}",
                params,
            )
        return [self._event(row) for row in rows]

    # ----- row conversion -------------------------------------------------------------------

    def _insert_event(
        self, tx: Transaction, now: datetime, kind: str, message: str, fields: dict[str, Any]
    ) -> Event:
        encoded = json.dumps(fields, default=str, sort_keys=True)
        rows = tx.execute(
            f"INSERT INTO events (at, kind, message, fields) VALUES (?, ?, ?, ?) "
            f"RETURNING {_EVENT_COLUMNS}",
            (self._backend.to_db_time(now), kind, message, encoded),
        )
        return self._event(rows[0])

    def _raise_request_state(self, tx: Transaction, request_id: int, wanted: str) -> None:
        rows = tx.execute("SELECT status, decided_by FROM requests WHERE id = ?", (request_id,))
        if not rows:
            raise KeyError(f"no request with id {request_id} in the store {self.url}")
        status, decided_by = rows[0]
        by = f" by {decided_by}" if decided_by else ""
        raise RequestStateError(
            f"request {request_id} is {status}{by}; it cannot become {wanted} "
            f"(only {'pending' if wanted in ('approved', 'rejected') else 'approved'} requests can)"
        )

    def _issued(self, row: Sequence[Any]) -> IssuedRecord:
        (
            serial,
            subject,
            not_before,
            not_after,
            operation,
            label,
            status,
            revoked_at,
            reason,
            key_type,
            requester,
            pem,
            issued_at,
            request_id,
        ) = row
        t = self._backend.from_db_time
        return IssuedRecord(
            serial=str(serial),
            subject=str(subject),
            not_before=t(not_before),
            not_after=t(not_after),
            operation=str(operation),
            label=label or None,
            status=status,
            revoked_at=t(revoked_at) if revoked_at is not None else None,
            revocation_reason=reason,
            key_type=str(key_type),
            requester=requester,
            certificate_pem=str(pem),
            issued_at=t(issued_at),
            request_id=int(request_id) if request_id is not None else None,
        )

    def _request(self, row: Sequence[Any]) -> PendingRequest:
        (
            request_id,
            created_at,
            label,
            operation,
            status,
            common_name,
            dns_names,
            key_type,
            public_key_sha256,
            client_subject,
            client_issuer,
            client_fingerprint,
            peer_address,
            requester,
            decided_by,
            decided_at,
            note,
            serial,
            csr_pem,
            client_trust,
            http_user,
            client_certificate_pem,
            verdict,
        ) = row
        t = self._backend.from_db_time
        return PendingRequest(
            id=int(request_id),
            created_at=t(created_at),
            label=label or None,
            operation=str(operation),
            status=status,
            common_name=common_name,
            dns_names=tuple(json.loads(dns_names)),
            key_type=str(key_type),
            public_key_sha256=str(public_key_sha256),
            client_subject=client_subject,
            client_issuer=client_issuer,
            client_fingerprint=client_fingerprint,
            peer_address=peer_address,
            requester=requester or None,
            decided_by=decided_by,
            decided_at=t(decided_at) if decided_at is not None else None,
            note=str(note or ""),
            serial=serial,
            csr_pem=str(csr_pem),
            client_trust=client_trust,
            http_user=http_user,
            client_certificate_pem=client_certificate_pem,
            verdict=verdict,
        )

    def _operator(self, row: Sequence[Any]) -> OperatorCertificateRecord:
        serial, name, fingerprint, issued_at, not_after, status, revoked_at = row
        t = self._backend.from_db_time
        return OperatorCertificateRecord(
            serial=str(serial),
            name=str(name),
            fingerprint=str(fingerprint),
            issued_at=t(issued_at),
            not_after=t(not_after),
            status=status,
            revoked_at=t(revoked_at) if revoked_at is not None else None,
        )

    def _event(self, row: Sequence[Any]) -> Event:
        event_id, at, kind, message, fields = row
        return Event(
            id=int(event_id),
            at=self._backend.from_db_time(at),
            kind=str(kind),
            message=str(message),
            fields=json.loads(fields),
        )

    # ----- bounded views (issue 14: console pages, `server certs`, `server requests`) -------

    def issued_page(
        self,
        *,
        status: str | None = None,
        label: str | None = None,
        key_type: str | None = None,
        expired: bool | None = None,
        expires_before: datetime | None = None,
        search: str | None = None,
        sort: str = "-issued",
        limit: int = DEFAULT_PAGE_SIZE,
        offset: int = 0,
        now: datetime | None = None,
    ) -> Page[IssuedRecord]:
        """One page of issued certificates (default newest first), filtered in SQL.

        ``expired``: True → only those past notAfter at ``now``, False → only those not yet;
        ``search``: a case-insensitive substring of the subject, or of the serial (colons, spaces
        and ``0x`` tolerated); ``sort``: a key of :data:`ISSUED_SORTS`. Two bounded queries: a
        COUNT and at most ``limit`` rows."""
        limit, offset = check_page(limit, offset)
        if sort not in ISSUED_SORTS:
            raise ValueError(f"unknown sort {sort!r}; use one of {', '.join(ISSUED_SORTS)}")
        t = self._backend.to_db_time
        clauses, params = _status_label_filter(status, label)
        if key_type:
            clauses.append("key_type = ?")
            params.append(key_type)
        if expired is not None:
            clauses.append("not_after <= ?" if expired else "not_after > ?")
            params.append(t(utc_now(now)))
        if expires_before is not None:
            clauses.append("not_after <= ?")
            params.append(t(expires_before))
        needle = (search or "").strip().lower()
        if needle:
            matches = ["LOWER(subject) LIKE ? ESCAPE '\\'"]
            params.append(_like_pattern(needle))
            serial = needle.replace(":", "").replace(" ", "").removeprefix("0x").lstrip("0")
            if serial and all(char in "0123456789abcdef" for char in serial):
                matches.append("serial LIKE ? ESCAPE '\\'")
                params.append(_like_pattern(serial))
            clauses.append(f"({' OR '.join(matches)})")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._backend.read() as tx:
            total = int(tx.execute(f"SELECT COUNT(*) FROM issued{where}", params)[0][0])
            rows = tx.execute(
                f"SELECT {_ISSUED_COLUMNS} FROM issued{where} "
                f"ORDER BY {ISSUED_SORTS[sort]} LIMIT ? OFFSET ?",
                [*params, limit, offset],
            )
        return Page([self._issued(row) for row in rows], total, offset, limit)

    def issued_summary(self, *, now: datetime, horizon: datetime) -> IssuedSummary:
        """Valid / revoked / expired counts and how many valid ones expire before ``horizon``:
        one aggregate row, whatever the size of the store."""
        t = self._backend.to_db_time
        with self._backend.read() as tx:
            rows = tx.execute(
                "SELECT "
                "SUM(CASE WHEN status = 'valid' AND not_after > ? THEN 1 ELSE 0 END), "
                "SUM(CASE WHEN status = 'revoked' THEN 1 ELSE 0 END), "
                "SUM(CASE WHEN status = 'valid' AND not_after <= ? THEN 1 ELSE 0 END), "
                "SUM(CASE WHEN status = 'valid' AND not_after > ? AND not_after <= ? "
                "THEN 1 ELSE 0 END) FROM issued",
                (t(now), t(now), t(now), t(horizon)),
            )
        valid, revoked, expired, expiring = (int(value or 0) for value in rows[0])
        return IssuedSummary(valid=valid, revoked=revoked, expired=expired, expiring=expiring)

    def issued_per_day(self, since: datetime) -> dict[date, int]:
        """Certificates recorded on each UTC day from ``since`` on, counted by the database (one
        row per day)."""
        if self._backend.dialect.name == "postgresql":
            day = "to_char(issued_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        else:
            day = "substr(issued_at, 1, 10)"  # ISO 8601 UTC text: the date comes first
        with self._backend.read() as tx:
            rows = tx.execute(
                f"SELECT {day}, COUNT(*) FROM issued WHERE issued_at >= ? GROUP BY {day}",
                (self._backend.to_db_time(since),),
            )
        return {date.fromisoformat(str(text)): int(count) for text, count in rows}

    def issued_facets(self, limit: int = MAX_PAGE_SIZE) -> tuple[list[str], list[str]]:
        """The distinct labels ("" for none) and key types of issued certificates, at most
        ``limit`` of each (for filter drop-downs)."""
        limit = min(limit, MAX_PAGE_SIZE)
        with self._backend.read() as tx:
            labels = tx.execute(
                "SELECT DISTINCT label FROM issued ORDER BY label LIMIT ?", (limit,)
            )
            key_types = tx.execute(
                "SELECT DISTINCT key_type FROM issued ORDER BY key_type LIMIT ?", (limit,)
            )
        return [str(row[0]) for row in labels], [str(row[0]) for row in key_types]

    def requests_page(
        self,
        statuses: Sequence[str] | None = None,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        offset: int = 0,
    ) -> Page[PendingRequest]:
        """One page of requests, newest first, optionally only those in ``statuses``."""
        limit, offset = check_page(limit, offset)
        unknown = [status for status in statuses or () if status not in REQUEST_STATUSES]
        if unknown:
            raise ValueError(
                f"unknown status {unknown[0]!r}; use one of {', '.join(REQUEST_STATUSES)}"
            )
        where, params = "", list(statuses or ())
        if statuses:
            where = f" WHERE status IN ({', '.join('?' for _ in statuses)})"
        with self._backend.read() as tx:
            total = int(tx.execute(f"SELECT COUNT(*) FROM requests{where}", params)[0][0])
            rows = tx.execute(
                f"SELECT {_REQUEST_COLUMNS} FROM requests{where} ORDER BY id DESC LIMIT ? OFFSET ?",
                [*params, limit, offset],
            )
        return Page([self._request(row) for row in rows], total, offset, limit)

    def count_requests(self, status: str | None = None) -> int:
        """How many requests (with ``status``) the queue holds: one COUNT."""
        if status is not None and status not in REQUEST_STATUSES:
            raise ValueError(f"unknown status {status!r}; use one of {', '.join(REQUEST_STATUSES)}")
        where, params = (" WHERE status = ?", (status,)) if status else ("", ())
        with self._backend.read() as tx:
            return int(tx.execute(f"SELECT COUNT(*) FROM requests{where}", params)[0][0])

    def recent_events(
        self, limit: int = DEFAULT_PAGE_SIZE, *, exclude_kinds: Sequence[str] = ()
    ) -> list[Event]:
        """The newest ``limit`` audit events (newest first), leaving out ``exclude_kinds``."""
        limit, _ = check_page(limit, 0)
        where = ""
        if exclude_kinds:
            where = f" WHERE kind NOT IN ({', '.join('?' for _ in exclude_kinds)})"
        with self._backend.read() as tx:
            rows = tx.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events{where} ORDER BY id DESC LIMIT ?",
                [*exclude_kinds, limit],
            )
        return [self._event(row) for row in rows]

    def event_groups(
        self, kind: str, since: datetime, limit: int = MAX_EVENT_GROUPS
    ) -> tuple[list[EventGroup], int]:
        """Events of ``kind`` since ``since`` grouped by message, counted by the database: the
        ``limit`` most frequent messages (each with one sample of its fields) and the total
        number of such events."""
        limit = min(limit, MAX_EVENT_GROUPS)
        at = self._backend.to_db_time(since)
        with self._backend.read() as tx:
            total = tx.execute("SELECT COUNT(*) FROM events WHERE kind = ? AND at >= ?", (kind, at))
            rows = tx.execute(
                "SELECT message, COUNT(*), MIN(fields) FROM events WHERE kind = ? AND at >= ? "
                "GROUP BY message ORDER BY COUNT(*) DESC, message LIMIT ?",
                (kind, at, limit),
            )
        groups = [
            EventGroup(kind=kind, message=str(message), count=int(count), fields=json.loads(fields))
            for message, count, fields in rows
        ]
        return groups, int(total[0][0])

    # ----- queue bounds (issue 14: estkit.server.queue_limits) ------------------------------

    def pending_sources(self) -> list[tuple[str, str | None]]:
        """``(requester, peer_address)`` of every pending request. The queue caps keep this list
        short, and the partial index ``requests_one_pending`` covers exactly these rows."""
        with self._backend.read() as tx:
            rows = tx.execute(
                "SELECT requester, peer_address FROM requests WHERE status = 'pending'"
            )
        return [(str(row[0]), row[1]) for row in rows]

    def expire_pending(self, created_before: datetime, *, now: datetime | None = None) -> list[int]:
        """Remove pending requests queued before ``created_before`` (no operator decided them
        in time), logging an ``expired`` event for each; returns their ids. A client repeating
        the same CSR afterwards queues a fresh request."""
        now = utc_now(now)
        with self._backend.transaction() as tx:
            rows = tx.execute(
                f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE status = 'pending' "
                "AND created_at < ? ORDER BY id",
                (self._backend.to_db_time(utc_now(created_before)),),
            )
            expired = [self._request(row) for row in rows]
            for request in expired:
                tx.execute(
                    "DELETE FROM requests WHERE id = ? AND status = 'pending'", (request.id,)
                )
                self._insert_event(
                    tx,
                    now,
                    "expired",
                    f"request {request.id} expired: no decision since {request.created_at}",
                    {
                        "request_id": request.id,
                        "label": request.label,
                        "common_name": request.common_name,
                        "requester": request.requester,
                        "peer_address": request.peer_address,
                    },
                )
        return [request.id for request in expired]


def open_store(url: str | os.PathLike[str]) -> CertificateStore:
    """Open (creating or migrating the schema if needed) the store at ``url``.

    Raises :class:`StoreUnavailableError` when the database cannot be reached (the message names
    the URL without its password) and :class:`StoreError` for a URL or schema estkit cannot use.
    """
    backend = open_backend(os.fspath(url))
    try:
        return CertificateStore(backend)
    except BaseException:
        backend.close()
        raise


__all__ = [
    "CERTIFICATE_STATUSES",
    "CLIENT_TRUST_VALUES",
    "DEFAULT_PAGE_SIZE",
    "ISSUED_SORTS",
    "MAX_EVENT_GROUPS",
    "MAX_PAGE_OFFSET",
    "MAX_PAGE_SIZE",
    "REQUEST_STATUSES",
    "CertificateStore",
    "DuplicateSerialError",
    "Event",
    "EventGroup",
    "IssuedRecord",
    "IssuedSummary",
    "OperatorCertificateRecord",
    "Page",
    "PendingRequest",
    "RequestStateError",
    "StoreError",
    "StoreUnavailableError",
    "normalize_serial_hex",
]
