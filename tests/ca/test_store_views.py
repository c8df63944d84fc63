"""Bounded store views (issue 14 item 4): every listing is one page read with LIMIT/OFFSET, the
dashboard's figures are aggregates computed by the database, and the columns those queries filter
and sort by are indexed (schema version 3, migrated on SQLite and PostgreSQL).

Bounds are asserted by counting the rows the database handed back (a counting backend wraps the
real one), never by timing; the plans by SQLite's EXPLAIN QUERY PLAN for the exact statements the
store ran.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from estkit.ca.store import (
    ISSUED_SORTS,
    MAX_EVENT_GROUPS,
    MAX_PAGE_SIZE,
    CertificateStore,
    open_store,
)
from estkit.ca.store_backends import Backend, Transaction, open_backend
from estkit.ca.store_schema import CURRENT_VERSION, SQLITE, migration_statements
from estkit.console.backend import REFUSAL_EVENT_KIND, ConsoleBackend
from estkit.console.model import OTHER_REFUSALS, PAGE_SIZE, CertificateQuery

from .bulk_store import (
    CERTIFICATES,
    DISTINCT_REFUSALS,
    NOW,
    OLD_REFUSALS,
    PENDING,
    REVOKED,
    SAME_REFUSALS,
    certificate,
    fill,
)

VIEW_INDEXES = {
    "events_by_kind_at",
    "issued_by_issued_at",
    "issued_by_status_not_after",
    "issued_by_status_issued_at",
    "issued_by_not_after",
    "issued_by_subject",
    "requests_by_status_id",
    "requests_by_status_created",
}


@dataclass
class CountingBackend:
    """The real backend, recording each statement and how many rows it returned."""

    inner: Backend
    calls: list[tuple[str, list[Any], int]] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _wrap(self, manager: contextlib.AbstractContextManager[Transaction]) -> Iterator[Any]:
        with manager as tx:
            yield _CountingTransaction(tx, self.calls)

    @contextlib.contextmanager
    def read(self) -> Iterator[Any]:
        yield from self._wrap(self.inner.read())

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        yield from self._wrap(self.inner.transaction())

    def rows(self) -> list[int]:
        return [count for _, _, count in self.calls]


@dataclass
class _CountingTransaction:
    tx: Transaction
    calls: list[tuple[str, list[Any], int]]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        rows = self.tx.execute(sql, params)
        self.calls.append((sql, list(params), len(rows)))
        return rows

    @property
    def rowcount(self) -> int:
        return self.tx.rowcount


def _age_some_refusals(path: Path) -> None:
    """Move OLD_REFUSALS refusals 30 days back (the store only ever writes "now")."""
    connection = sqlite3.connect(path)
    old = (NOW - timedelta(days=30)).isoformat(timespec="microseconds")
    with connection:
        connection.execute(
            "UPDATE events SET at = ? WHERE id IN (SELECT id FROM events WHERE kind = ? "
            "ORDER BY id LIMIT ?)",
            (old, REFUSAL_EVENT_KIND, OLD_REFUSALS),
        )
    connection.close()


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, CountingBackend]]:
    path = tmp_path_factory.mktemp("views") / "estkit.db"
    with open_store(path) as store:
        fill(store)
    _age_some_refusals(path)
    backend = CountingBackend(open_backend(str(path)))
    try:
        yield path, backend
    finally:
        backend.close()


def _store(big_store: tuple[Path, CountingBackend]) -> tuple[CertificateStore, CountingBackend]:
    _, backend = big_store
    store = CertificateStore(backend)  # type: ignore[arg-type]
    backend.calls.clear()  # the schema version check on opening
    return store, backend


def test_the_dashboard_poll_reads_aggregates_not_every_event(big_store: Any) -> None:
    store, backend = _store(big_store)
    stats = ConsoleBackend.read_dashboard(store, NOW)
    rows = backend.rows()
    # Before: every one of the 20,000+ events was loaded. Now the largest answer is the capped
    # list of refusal messages (the 5,000 distinct ones are more than the cap), the rest a few.
    assert max(rows) == MAX_EVENT_GROUPS
    assert sum(rows) <= MAX_EVENT_GROUPS + 60, backend.calls
    # ... and the figures are still exact, counted by the database.
    in_window = SAME_REFUSALS + DISTINCT_REFUSALS - OLD_REFUSALS
    assert stats.refusals_total == in_window
    assert stats.refusals[0] == ("401 · client certificate required", SAME_REFUSALS - OLD_REFUSALS)
    assert sum(count for _, count in stats.refusals) == in_window
    reasons = dict(stats.refusals)
    assert "403 · certificate … is revoked" in reasons and OTHER_REFUSALS in reasons
    assert stats.pending == PENDING
    assert stats.revoked == REVOKED
    expired = sum(1 for i in range(1, CERTIFICATES + 1) if i % 100 < 10 and i % 50)
    assert stats.expired == expired
    assert stats.valid == CERTIFICATES - REVOKED - expired
    expiring = sum(1 for i in range(1, CERTIFICATES + 1) if 10 <= i % 100 < 40 and i % 50)
    assert stats.expiring_total == expiring and len(stats.expiring) == 10
    assert all(row.not_after > NOW for row in stats.expiring)
    # The chart: 5,000 certificates over the last 5,000 minutes (4 days), counted per day.
    assert sum(count for _, count in stats.issued_per_day) == CERTIFICATES
    assert stats.issued_per_day[-1][0] == NOW.date()


def test_each_certificate_page_reads_one_page(big_store: Any) -> None:
    store, backend = _store(big_store)
    first = store.issued_page(limit=PAGE_SIZE)
    assert backend.rows() == [1, PAGE_SIZE]  # COUNT(*), then the page
    assert first.total == CERTIFICATES and first.next_offset == PAGE_SIZE
    # Newest first: the last certificate recorded leads.
    assert first.items[0].serial == format(0x1000 + CERTIFICATES, "x")
    assert [r.issued_at for r in first.items] == sorted(
        (r.issued_at for r in first.items), reverse=True
    )
    second = store.issued_page(limit=PAGE_SIZE, offset=PAGE_SIZE)
    assert not {r.serial for r in first.items} & {r.serial for r in second.items}
    assert second.items[0].issued_at < first.items[-1].issued_at
    last = store.issued_page(limit=PAGE_SIZE, offset=CERTIFICATES - 10)
    assert len(last.items) == 10 and last.next_offset is None
    # A hostile page size is capped, a negative offset refused.
    backend.calls.clear()
    assert len(store.issued_page(limit=10**9).items) == MAX_PAGE_SIZE
    assert max(backend.rows()) == MAX_PAGE_SIZE
    with pytest.raises(ValueError, match="offset must be between 0"):
        store.issued_page(offset=-1)
    with pytest.raises(ValueError, match="limit must be at least 1"):
        store.issued_page(limit=0)


def test_certificate_filters_run_in_sql(big_store: Any) -> None:
    store, backend = _store(big_store)
    revoked = store.issued_page(status="revoked", limit=PAGE_SIZE)
    assert revoked.total == REVOKED and len(revoked.items) == PAGE_SIZE
    assert {r.status for r in revoked.items} == {"revoked"}
    expired = store.issued_page(status="valid", expired=True, sort="expiry", now=NOW)
    assert all(r.not_after <= NOW for r in expired.items)
    assert [r.not_after for r in expired.items] == sorted(r.not_after for r in expired.items)
    labelled = store.issued_page(label="nmos", limit=5)
    assert labelled.total == CERTIFICATES // 2 and {r.label for r in labelled.items} == {"nmos"}
    # Search: a name in the subject (any case), or a serial with colons and 0x.
    found = store.issued_page(search="NODE-4321.EXAMPLE")
    assert [r.subject for r in found.items] == ["CN=node-4321.example"]
    serial = format(0x1000 + 4321, "x")
    spelled = "0x" + ":".join(serial[i : i + 2] for i in range(0, len(serial), 2))
    assert [r.serial for r in store.issued_page(search=spelled).items] == [serial]
    # LIKE wildcards in the search are literal characters, not "match everything".
    assert store.issued_page(search="%").total == 0
    assert store.issued_page(search="node_1").total == 0
    assert max(backend.rows()) <= PAGE_SIZE
    labels, key_types = store.issued_facets()
    assert labels == ["", "nmos"] and key_types == ["ECDSA P-256"]


def test_request_pages_are_newest_first_and_bounded(big_store: Any) -> None:
    store, backend = _store(big_store)
    first = store.requests_page(("pending",), limit=PAGE_SIZE)
    assert backend.rows() == [1, PAGE_SIZE]
    assert first.total == PENDING and first.items[0].common_name == f"pending-{PENDING - 1}.example"
    third = store.requests_page(("pending",), limit=PAGE_SIZE, offset=2 * PAGE_SIZE)
    assert len(third.items) == PENDING - 2 * PAGE_SIZE and third.next_offset is None
    assert third.items[-1].common_name == "pending-0.example"
    assert store.count_requests("pending") == PENDING
    with pytest.raises(ValueError, match="unknown status 'bogus'"):
        store.requests_page(("bogus",))


def _plan(path: Path, sql: str, params: Sequence[Any]) -> str:
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute(f"EXPLAIN QUERY PLAN {sql}", tuple(params)).fetchall()
    finally:
        connection.close()
    return "\n".join(str(row[-1]) for row in rows)


def test_the_view_queries_use_the_indexes(big_store: Any) -> None:
    """EXPLAIN QUERY PLAN of the statements the dashboard and the list pages really ran."""
    path, _ = big_store
    store, backend = _store(big_store)
    ConsoleBackend.read_dashboard(store, NOW)
    store.issued_page(limit=PAGE_SIZE)
    store.issued_page(status="revoked", sort="-issued", limit=PAGE_SIZE)
    store.requests_page(("pending",), limit=PAGE_SIZE)
    # Every sort of the whole listing. (With a filter, SQLite may search the filter's index
    # and sort only the matches, in a top-N sorter of offset + limit rows: bounded too.)
    for sort in ISSUED_SORTS:
        ConsoleBackend.read_certificates(store, CertificateQuery(sort=sort), NOW)
    plans = {sql: _plan(path, sql, params) for sql, params, _ in backend.calls}
    expected = {
        "GROUP BY message": "events_by_kind_at",  # refusals in the window
        "SELECT COUNT(*) FROM events WHERE kind": "events_by_kind_at",
        "not_after <= ? ORDER BY not_after": "issued_by_status_not_after",  # soon to expire
        "WHERE issued_at >= ?": "issued_by_issued_at",  # issued per day
        "FROM issued ORDER BY issued_at DESC": "issued_by_issued_at",  # newest page
        "FROM requests WHERE status IN (?) ORDER BY id DESC": "requests_by_status_id",
        "FROM issued ORDER BY not_after, serial": "issued_by_not_after",
        "FROM issued ORDER BY not_after DESC": "issued_by_not_after",
        "FROM issued ORDER BY LOWER(subject)": "issued_by_subject",
        "WHERE status = ? ORDER BY issued_at DESC": "issued_by_status_issued_at",
    }
    for fragment, index in expected.items():
        matching = [plan for sql, plan in plans.items() if fragment in sql]
        assert matching, f"no statement with {fragment!r} ran"
        for plan in matching:
            assert f"INDEX {index}" in plan, (fragment, plan)
    # No page sorts a table: rows come in index order and LIMIT stops the scan. (Grouping uses a
    # temporary tree of one entry per group: 14 days, or the refusal messages, which are then
    # ranked by count; the store reads at most MAX_EVENT_GROUPS of them.)
    for sql, plan in plans.items():
        if "GROUP BY message" not in sql:
            assert "ORDER BY" not in plan, (sql, plan)


def test_a_version_2_store_is_migrated_to_the_indexed_schema(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for target, statements in migration_statements(SQLITE, 0):
        if target > 2:
            break
        for statement in statements:
            connection.execute(statement)
    connection.execute("INSERT INTO schema_version (version) VALUES (2)")
    connection.execute(
        "INSERT INTO events (at, kind, message, fields) VALUES (?, 'refused', 'old', '{}')",
        (NOW.isoformat(),),
    )
    connection.commit()
    connection.close()
    with open_store(path) as store:
        assert store.schema_version() == CURRENT_VERSION == 3
        groups, total = store.event_groups("refused", NOW - timedelta(days=1))
        assert total == 1 and groups[0].message == "old"
    connection = sqlite3.connect(path)
    names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    connection.close()
    assert names >= VIEW_INDEXES


def test_postgresql_gets_the_indexes_and_answers_the_same_views(postgres_server: Any) -> None:
    with open_store(postgres_server.create_database()) as store:
        with store._backend.read() as tx:
            names = {row[0] for row in tx.execute("SELECT indexname FROM pg_indexes")}
        assert names >= VIEW_INDEXES
        for index in range(3):
            store.record_issued(
                certificate(0x9000 + index, NOW + timedelta(days=10 * index)),
                operation="simpleenroll",
                label=None,
                now=NOW - timedelta(days=index),
            )
            store.log_event(REFUSAL_EVENT_KIND, "client certificate required", status=401)
        page = store.issued_page(limit=2)
        assert [r.serial for r in page.items] == ["9000", "9001"] and page.next_offset == 2
        per_day = store.issued_per_day(NOW - timedelta(days=5))
        assert per_day == {(NOW - timedelta(days=d)).date(): 1 for d in range(3)}
        summary = store.issued_summary(now=NOW, horizon=NOW + timedelta(days=15))
        assert (summary.valid, summary.expired, summary.expiring) == (2, 1, 1)
        groups, total = store.event_groups(REFUSAL_EVENT_KIND, NOW - timedelta(days=365 * 50))
        assert total == 3 and [(g.message, g.count, g.fields) for g in groups] == [
            ("client certificate required", 3, {"status": 401})
        ]
        assert store.issued_page(search="9_0").total == 0  # "_" is literal on PostgreSQL too
