"""The console's only door to the server's data: config, certificate store and CA.

Why one class: every action the console offers must be the *same* library call the CLI makes
(``store.decide_request``, ``revoke_certificate``), recorded in the audit log with the
operator's name.
Keeping them here, a dozen lines each, makes that easy to check.

The store is opened and used on one dedicated worker thread (as the EST server does with its
own), so the event loop never blocks on the database and console actions are serialised.
The CA is loaded from disk for each use: a rollover done with the CLI is visible at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509

from estkit.ca.authority import CertificateAuthority
from estkit.ca.crl import normalize_reason
from estkit.ca.store import (
    CertificateStore,
    IssuedRecord,
    Page,
    PendingRequest,
    RequestStateError,
    StoreError,
    open_store,
)
from estkit.console.admin_ca import Operator
from estkit.console.model import (
    EXPIRY_WARNING_DAYS,
    MAX_DASHBOARD_ROWS,
    PAGE_SIZE,
    RECENT_DECISIONS,
    REFUSAL_WINDOW_DAYS,
    CertificateQuery,
    DashboardStats,
    cert_rows,
    chart_start,
    dashboard_stats,
    page_offset,
)
from estkit.errors import EstkitError
from estkit.server import (
    ServerConfig,
    Verdict,
    approve_if_allowed,
    judge,
    load_config,
    revoke_certificate,
)

T = TypeVar("T")

# Kind of the audit events the console itself writes, next to the store's own
# ("approved", "rejected", "revoked", ...): who did it, signed in how, from the web console.
AUDIT_KIND = "console"
SOURCE = "web console"
# The EST server records each refusal as an audit event of this kind (reason = message).
REFUSAL_EVENT_KIND = "refused"

ROLLOVER_ROLE_NAMES = {
    "old_with_old": "old root (OldWithOld)",
    "old_with_new": "link OldWithNew",
    "new_with_old": "link NewWithOld",
    "new_with_new": "current root (NewWithNew)",
}


class ConsoleActionError(EstkitError, ValueError):
    """An operator action could not be carried out; the message is shown to the operator."""


@dataclass(frozen=True)
class CaOverview:
    """What the CA page shows, read fresh from disk and the store."""

    generation: str
    certificates: list[x509.Certificate]
    roles: list[str]
    in_rollover: bool
    rollover_lines: list[str]
    crl: x509.CertificateRevocationList | None
    crl_der: bytes | None
    crl_error: str | None


@dataclass(frozen=True)
class CertificatesView:
    """What the certificates page reads: one page of the search and the filter choices."""

    page: Page[IssuedRecord]
    total_in_store: int
    labels: list[str]
    key_types: list[str]


def current_crl(authority: CertificateAuthority, store: CertificateStore) -> bytes:
    """The CRL exactly as the EST server's ``GET /crl`` builds it (DER).

    The server signs a fresh CRL from the store on every request, so a revocation recorded by
    ``store.revoke`` is in the next CRL anyone fetches (``revoke_certificate`` also rewrites
    the ``crl.der`` file operators publish elsewhere).
    """
    return authority.build_crl(store.revoked_entries())


class ConsoleBackend:
    """Opens the server's data directory through the public APIs of ``estkit.server``/``ca``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.config: ServerConfig = load_config(self.data_dir)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="estkit-console-db")
        self._store: CertificateStore | None = None

    # -- plumbing ---------------------------------------------------------------------------

    def _open_store(self) -> CertificateStore:
        if self._store is None:
            self._store = open_store(self.config.database_url)
        return self._store

    async def run(self, func: Callable[[CertificateStore], T]) -> T:
        """Run ``func(store)`` on the store's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: func(self._open_store()))

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_store)
        self._executor.shutdown(wait=True)

    def load_authority(self) -> CertificateAuthority:
        return CertificateAuthority.load(self.config.ca_directory)

    # -- reads (run these through :meth:`run`) ----------------------------------------------

    # Every read is bounded (issue 14): one page of rows or a few aggregates, never "all".

    @staticmethod
    def read_pending_count(store: CertificateStore) -> int:
        return store.count_requests("pending")

    @staticmethod
    def read_pending_page(store: CertificateStore, page: int) -> Page[PendingRequest]:
        """Pending requests, newest first, one page."""
        return store.requests_page(("pending",), limit=PAGE_SIZE, offset=page_offset(page))

    @staticmethod
    def read_recent_decisions(store: CertificateStore) -> list[PendingRequest]:
        decided = ("approved", "rejected", "issued")
        return store.requests_page(decided, limit=RECENT_DECISIONS).items

    @staticmethod
    def read_certificates(
        store: CertificateStore, query: CertificateQuery, now: dt.datetime
    ) -> CertificatesView:
        """One page of the search, the number of certificates in the store, and the labels and
        key types for the filter drop-downs."""
        filters = query.store_filters()
        found = store.issued_page(
            **filters, limit=PAGE_SIZE, offset=page_offset(query.page), now=now
        )
        narrowed = any(value is not None for key, value in filters.items() if key != "sort")
        everything = store.issued_page(limit=1).total if narrowed else found.total
        labels, key_types = store.issued_facets()
        return CertificatesView(found, everything, labels, key_types)

    @staticmethod
    def read_dashboard(store: CertificateStore, now: dt.datetime) -> DashboardStats:
        """The dashboard from aggregates and the few newest rows (issue 14: a store with 20,000
        refusals once cost 1.77 s and 887 MB per poll when every event was loaded)."""
        horizon = now + dt.timedelta(days=EXPIRY_WARNING_DAYS)
        expiring = store.issued_page(
            status="valid",
            expired=False,
            expires_before=horizon,
            sort="expiry",
            limit=MAX_DASHBOARD_ROWS,
            now=now,
        )
        groups, refusals_total = store.event_groups(
            REFUSAL_EVENT_KIND, now - dt.timedelta(days=REFUSAL_WINDOW_DAYS)
        )
        return dashboard_stats(
            store.issued_summary(now=now, horizon=horizon),
            cert_rows(expiring.items, now),
            store.issued_per_day(chart_start(now.date())),
            store.count_requests("pending"),
            groups,
            refusals_total,
            store.recent_events(MAX_DASHBOARD_ROWS, exclude_kinds=(REFUSAL_EVENT_KIND,)),
            now,
        )

    def verdicts(
        self, store: CertificateStore, requests: list[PendingRequest]
    ) -> dict[int, Verdict]:
        """What policy says now about each request (shown beside Approve)."""
        if not requests:
            return {}
        config = load_config(self.data_dir)  # the labels as they are now, not at console start
        authority = CertificateAuthority.load(config.ca_directory)
        return {request.id: judge(config, authority, store, request) for request in requests}

    def ca_overview(self, store: CertificateStore) -> CaOverview:
        authority = self.load_authority()
        certificates = list(authority.cacerts)
        rollover = authority.rollover_certificates
        roles = []
        for cert in certificates:
            role = "issuing CA" if cert == authority.issuer_certificate else "CA"
            if cert == authority.root_certificate:
                role = "root"
            for key, rollover_cert in (rollover or {}).items():
                if cert == rollover_cert:
                    role = ROLLOVER_ROLE_NAMES[key]
            roles.append(role)
        lines = []
        if rollover:
            lines = [
                f"{ROLLOVER_ROLE_NAMES[key]}: {cert.subject.rfc4514_string()}, valid until "
                f"{cert.not_valid_after_utc:%Y-%m-%d}"
                for key, cert in rollover.items()
            ]
        crl_der, crl, crl_error = None, None, None
        try:
            crl_der = current_crl(authority, store)
            crl = x509.load_der_x509_crl(crl_der)
        except (OSError, ValueError, StoreError) as exc:
            crl_error = str(exc)
        return CaOverview(
            generation=authority.generation,
            certificates=certificates,
            roles=roles,
            in_rollover=rollover is not None,
            rollover_lines=lines,
            crl=crl,
            crl_der=crl_der,
            crl_error=crl_error,
        )

    # -- actions (each: the CLI's library call, then the audit record) ------------------------

    async def decide(
        self, request_id: int, approve: bool, operator: Operator, note: str
    ) -> PendingRequest:
        verb = "approved" if approve else "rejected"

        def act(store: CertificateStore) -> PendingRequest:
            try:
                if approve:
                    # Policy runs again now (issue 24): approving never signs what the server
                    # would refuse today.
                    decided = approve_if_allowed(
                        load_config(self.data_dir), store, request_id, by=operator.name, note=note
                    )
                else:
                    decided = store.decide_request(request_id, approve, by=operator.name, note=note)
            except KeyError as exc:
                raise ConsoleActionError(f"there is no request #{request_id}") from exc
            except RequestStateError as exc:
                raise ConsoleActionError(str(exc)) from exc
            store.log_event(
                AUDIT_KIND,
                f"{operator.name} {verb} request {request_id} in the {SOURCE}",
                action="approve" if approve else "reject",
                request_id=request_id,
                **_who(operator),
            )
            return decided

        return await self.run(act)

    async def revoke(self, serial: str, reason: str, operator: Operator) -> IssuedRecord:
        try:
            reason = normalize_reason(reason)
        except ValueError as exc:
            raise ConsoleActionError(str(exc)) from exc

        def act(store: CertificateStore) -> IssuedRecord:
            record = store.get_issued(serial)
            if record is None:
                raise ConsoleActionError(f"no certificate with serial {serial} was issued here")
            if record.status == "revoked":
                raise ConsoleActionError(
                    f"certificate {serial} was already revoked "
                    f"({record.revocation_reason}, {record.revoked_at:%Y-%m-%d %H:%M} UTC)"
                )
            revoked, _crl_file = revoke_certificate(self.config, store, serial, reason)
            store.log_event(
                AUDIT_KIND,
                f"{operator.name} revoked certificate {serial} ({reason}) in the {SOURCE}",
                action="revoke",
                serial=serial,
                reason=reason,
                subject=record.subject,
                **_who(operator),
            )
            return revoked

        return await self.run(act)

    async def log(self, message: str, operator: Operator | None, **fields: Any) -> None:
        """Audit something the console did or refused (sign-ins, CSRF refusals)."""

        def act(store: CertificateStore) -> None:
            who = _who(operator) if operator else {"source": SOURCE}
            store.log_event(AUDIT_KIND, message, **fields, **who)

        await self.run(act)


def _who(operator: Operator) -> dict[str, Any]:
    who: dict[str, Any] = {"operator": operator.name, "auth": operator.method, "source": SOURCE}
    if operator.fingerprint:
        who["operator_certificate"] = operator.fingerprint
    return who
