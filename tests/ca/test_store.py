"""The certificate store on SQLite and on a real PostgreSQL: round trips, the approval
lifecycle, the audit log, unique serials under thread and process concurrency, and clear errors
when the database is unavailable.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estkit.ca import (
    DuplicateSerialError,
    RequestStateError,
    StoreError,
    StoreUnavailableError,
    open_store,
)
from estkit.ca.store import CertificateStore
from estkit.ca.store_schema import CURRENT_VERSION
from estkit.protocol import build_csr, describe_csr, generate_private_key

from .pg_fixture import PostgresServer, running_postgres

WORKER = Path(__file__).with_name("store_worker.py")
_KEY = ec.generate_private_key(ec.SECP256R1())


def make_cert(serial: int | None = None, name: str = "node.nmos.test") -> x509.Certificate:
    """A cheap certificate with a chosen or random serial (what the store records)."""
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test issuer")]))
        .public_key(_KEY.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=90))
        .sign(_KEY, hashes.SHA256())
    )


@pytest.fixture
def store(store_url: str):
    opened = open_store(store_url)
    yield opened
    opened.close()


def _request_fields(common_name: str = "pending.nmos.test", requester: str | None = "fp:abc"):
    key = generate_private_key("p256")
    csr = build_csr(key, common_name=common_name, dns_names=[common_name])
    info = describe_csr(csr)
    from cryptography.hazmat.primitives import serialization

    return {
        "label": "manual",
        "operation": "simpleenroll",
        "csr_pem": csr.public_bytes(serialization.Encoding.PEM),
        "common_name": info.common_name,
        "dns_names": info.dns_names,
        "key_type": info.key.description,
        "public_key_sha256": info.public_key_sha256,
        "client_subject": "CN=estkit-device-SN-1,serialNumber=SN-1",
        "client_issuer": "CN=estkit Demo Manufacturer CA",
        "client_fingerprint": "sha256:" + "ab" * 32,
        "peer_address": "127.0.0.1",
        "requester": requester,
    }


# ----- issued certificates --------------------------------------------------------------------


def test_record_and_read_back(store: CertificateStore) -> None:
    assert store.schema_version() == CURRENT_VERSION
    cert = make_cert(0x00AB_CDEF_0123_4567_89AB, "rt.nmos.test")
    record = store.record_issued(
        cert, operation="simpleenroll", label="lab", requester="sha256:ff", request_id=None
    )
    assert record.serial == "abcdef0123456789ab"
    assert record.subject == "CN=rt.nmos.test"
    assert record.status == "valid" and record.revoked_at is None
    assert record.key_type == "ECDSA P-256"
    assert record.not_after == cert.not_valid_after_utc
    assert record.certificate == cert

    for spelling in (
        "abcdef0123456789ab",
        "ABCDEF0123456789AB",
        "00:AB:CD:EF:01:23:45:67:89:AB",
        "0xabcdef0123456789ab",
        0xABCDEF0123456789AB,
    ):
        fetched = store.get_issued(spelling)
        assert fetched == record, spelling
    assert store.get_issued("1234") is None
    with pytest.raises(ValueError, match="not a certificate serial number"):
        store.get_issued("not-hex")
    assert record.to_json()["not_after"] == cert.not_valid_after_utc.isoformat()


def test_list_filters(store: CertificateStore) -> None:
    a = store.record_issued(make_cert(), operation="simpleenroll", label=None)
    b = store.record_issued(make_cert(), operation="simplereenroll", label="lab")
    c = store.record_issued(make_cert(), operation="serverkeygen", label="lab")
    store.revoke(c.serial, "superseded")
    assert [r.serial for r in store.list_issued()] == [a.serial, b.serial, c.serial]
    assert [r.serial for r in store.list_issued(label="lab")] == [b.serial, c.serial]
    assert [r.serial for r in store.list_issued(label="")] == [a.serial]
    assert [r.serial for r in store.list_issued(status="revoked")] == [c.serial]
    assert [r.serial for r in store.list_issued(status="valid", label="lab")] == [b.serial]
    assert store.get_issued(a.serial).label is None  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="unknown status 'expired'"):
        store.list_issued(status="expired")


def test_duplicate_serial_is_refused(store: CertificateStore) -> None:
    store.record_issued(make_cert(0x5EED), operation="simpleenroll", label=None)
    with pytest.raises(DuplicateSerialError, match="serial 5eed is already in the store"):
        store.record_issued(make_cert(0x5EED, "other"), operation="simpleenroll", label=None)
    assert len(store.list_issued()) == 1
    assert store.get_issued("5eed").subject == "CN=node.nmos.test"  # type: ignore[union-attr]


def test_revoke_and_revoked_entries(store: CertificateStore) -> None:
    kept = store.record_issued(make_cert(), operation="simpleenroll", label=None)
    gone = store.record_issued(make_cert(), operation="simpleenroll", label=None)
    when = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    revoked = store.revoke(gone.serial.upper(), "key_compromise", now=when)
    assert revoked.status == "revoked"
    assert revoked.revoked_at == when
    assert revoked.revocation_reason == "keyCompromise"
    again = store.revoke(gone.serial, "superseded", now=when + timedelta(days=1))
    assert again.revoked_at == when and again.revocation_reason == "keyCompromise"
    entries = store.revoked_entries()
    assert [(e.serial_hex, e.revoked_at, e.reason) for e in entries] == [
        (gone.serial, when, "keyCompromise")
    ]
    assert store.get_issued(kept.serial).status == "valid"  # type: ignore[union-attr]
    with pytest.raises(KeyError, match="no certificate with serial 123abc"):
        store.revoke("123abc")
    with pytest.raises(ValueError, match="unknown revocation reason"):
        store.revoke(kept.serial, "bored")
    events = store.list_events(kind="revoked")
    assert len(events) == 1 and events[0].fields["serial"] == gone.serial


def test_records_survive_reopening(store_url: str) -> None:
    first = open_store(store_url)
    record = first.record_issued(make_cert(), operation="simpleenroll", label="x")
    first.log_event("refused", "untrusted client certificate", peer="127.0.0.1")
    first.close()
    second = open_store(store_url)
    try:
        assert second.get_issued(record.serial) == record
        assert second.list_events(kind="refused")[0].fields == {"peer": "127.0.0.1"}
        assert second.schema_version() == CURRENT_VERSION
    finally:
        second.close()


# ----- the approval queue ---------------------------------------------------------------------


def test_request_lifecycle_pending_approved_issued(store: CertificateStore) -> None:
    fields = _request_fields()
    pending = store.add_request(**fields)
    assert pending.status == "pending"
    assert pending.dns_names == ("pending.nmos.test",)
    assert pending.key_type == "ECDSA P-256"
    assert pending.client_fingerprint == fields["client_fingerprint"]
    assert pending.csr.subject.rfc4514_string() == "CN=pending.nmos.test"

    # The identical request polled again: the same queue entry, not a duplicate.
    again = store.add_request(**fields)
    assert again.id == pending.id
    assert len(store.list_requests(status="pending")) == 1
    found = store.find_request(
        label="manual",
        operation="simpleenroll",
        public_key_sha256=fields["public_key_sha256"],
        requester="fp:abc",
    )
    assert found == pending

    approved = store.decide_request(pending.id, True, by="operator", note="checked the label")
    assert approved.status == "approved" and approved.decided_by == "operator"
    assert approved.decided_at is not None and approved.note == "checked the label"
    with pytest.raises(RequestStateError, match=f"request {pending.id} is approved by operator"):
        store.decide_request(pending.id, False, by="someone-else")

    cert = make_cert(name="pending.nmos.test")
    record = store.record_issued(
        cert, operation="simpleenroll", label="manual", request_id=pending.id
    )
    issued = store.get_request(pending.id)
    assert issued is not None and issued.status == "issued" and issued.serial == record.serial
    assert store.get_issued(record.serial).request_id == pending.id  # type: ignore[union-attr]
    # A concurrent retry that also signed a certificate must not record a second one.
    second = make_cert(name="pending.nmos.test")
    with pytest.raises(RequestStateError, match="is issued"):
        store.record_issued(second, operation="simpleenroll", label="manual", request_id=pending.id)
    assert store.get_issued(second.serial_number) is None

    kinds = [event.kind for event in store.list_events()]
    assert kinds == ["queued", "approved"]


def test_rejection_and_unknown_ids(store: CertificateStore) -> None:
    pending = store.add_request(**_request_fields(requester=None))
    assert pending.requester is None
    rejected = store.decide_request(pending.id, False, by="operator", note="unknown device")
    assert rejected.status == "rejected"
    with pytest.raises(RequestStateError, match="is rejected"):
        store.decide_request(pending.id, True, by="operator")
    with pytest.raises(RequestStateError, match="is rejected"):
        store.record_issued(
            make_cert(), operation="simpleenroll", label="manual", request_id=pending.id
        )
    with pytest.raises(KeyError, match="no request with id 9999"):
        store.decide_request(9999, True, by="operator")
    # After a decision, the same identity may queue anew (e.g. a device retried later).
    fresh = store.add_request(
        **{**_request_fields(requester=None), "public_key_sha256": pending.public_key_sha256}
    )
    assert fresh.id != pending.id and fresh.status == "pending"
    with pytest.raises(ValueError, match="unknown status"):
        store.list_requests(status="waiting")


def test_events_since_id_and_kind(store: CertificateStore) -> None:
    first = store.log_event("refused", "wrong content type", status=415, peer="127.0.0.1")
    second = store.log_event("refused", "bad CSR", status=400, when=datetime(2030, 1, 1))
    third = store.log_event("startup", "server started")
    assert [e.id for e in store.list_events()] == [first.id, second.id, third.id]
    assert [e.id for e in store.list_events(since_id=first.id)] == [second.id, third.id]
    assert [e.message for e in store.list_events(kind="refused")] == [
        "wrong content type",
        "bad CSR",
    ]
    assert second.fields == {"status": 400, "when": "2030-01-01 00:00:00"}
    assert store.list_events(kind="refused", limit=1)[0].id == first.id
    assert first.at.tzinfo is not None


# ----- concurrency ----------------------------------------------------------------------------


THREADS = 8
PER_THREAD = 25


def test_concurrent_threads_get_unique_serials_and_lose_nothing(store_url: str) -> None:
    shared = open_store(store_url)
    own_stores = [open_store(store_url) for _ in range(THREADS // 2)]
    barrier = threading.Barrier(THREADS)
    recorded: list[str] = []
    duplicates: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    contested = x509.random_serial_number()

    def work(index: int) -> None:
        target = shared if index % 2 else own_stores[index // 2]
        try:
            barrier.wait()
            for _ in range(PER_THREAD):
                record = target.record_issued(make_cert(), operation="simpleenroll", label="t")
                with lock:
                    recorded.append(record.serial)
            try:
                target.record_issued(make_cert(contested), operation="simpleenroll", label="t")
                with lock:
                    recorded.append(format(contested, "x"))
            except DuplicateSerialError:
                with lock:
                    duplicates.append("dup")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert not errors, errors
        assert len(duplicates) == THREADS - 1  # exactly one writer won the contested serial
        assert len(recorded) == THREADS * PER_THREAD + 1
        assert len(set(recorded)) == len(recorded)
        in_store = {record.serial for record in shared.list_issued(label="t")}
        assert in_store == set(recorded)
    finally:
        shared.close()
        for store in own_stores:
            store.close()


PROCESSES = 4
PER_PROCESS = 30


def test_concurrent_processes_get_unique_serials_and_lose_nothing(store_url: str) -> None:
    open_store(store_url).close()  # schema in place; workers race only on inserts
    contested = format(x509.random_serial_number(), "x")
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), store_url, str(PER_PROCESS), contested],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:  # release them together
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        outputs = [worker.communicate(timeout=120) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    for worker, (_out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
    lines = [line for out, _err in outputs for line in out.splitlines()]
    serials = [line.split()[1] for line in lines if line.startswith("issued ")]
    shared_results = sorted(line for line in lines if line.startswith("shared"))
    assert len(serials) == PROCESSES * PER_PROCESS
    assert len(set(serials)) == len(serials)
    assert shared_results == ["shared duplicate"] * (PROCESSES - 1) + ["shared ok"]
    store = open_store(store_url)
    try:
        in_store = {record.serial for record in store.list_issued(label="procs")}
    finally:
        store.close()
    # Every certificate a worker was told is recorded is in the store, plus the contested one.
    assert in_store == set(serials) | {contested}


def test_two_stores_racing_to_migrate_a_fresh_database(store_url: str) -> None:
    barrier = threading.Barrier(3)
    opened: list[CertificateStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            barrier.wait()
            opened.append(open_store(store_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert not errors, errors
        assert [store.schema_version() for store in opened] == [CURRENT_VERSION] * 3
    finally:
        for store in opened:
            store.close()


# ----- unavailability and bad input -----------------------------------------------------------


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_postgres_names_the_url_without_password() -> None:
    port = _closed_port()
    url = f"postgresql://estkit:s3cret-pw@127.0.0.1:{port}/estkit"
    with pytest.raises(StoreUnavailableError) as caught:
        open_store(url)
    message = str(caught.value)
    assert f"postgresql://estkit:***@127.0.0.1:{port}/estkit" in message
    assert "s3cret-pw" not in message


def test_postgres_going_away_gives_unavailable_then_recovers(tmp_path: Path) -> None:
    with running_postgres() as server:
        url = server.create_database("goaway")
        store = open_store(url)
        try:
            kept = store.record_issued(make_cert(), operation="simpleenroll", label=None)
            server.stop()
            with pytest.raises(StoreUnavailableError, match=r"is unavailable|cannot reach"):
                store.record_issued(make_cert(), operation="simpleenroll", label=None)
            with pytest.raises(StoreUnavailableError):
                store.list_issued()
            server.start()
            # The same store object reconnects by itself: nothing was lost, writes work again.
            assert [r.serial for r in store.list_issued()] == [kept.serial]
            store.record_issued(make_cert(), operation="simpleenroll", label=None)
            assert len(store.list_issued()) == 2
        finally:
            store.close()


def test_sqlite_in_a_missing_directory_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError, match="does not exist"):
        open_store(tmp_path / "no" / "such" / "estkit.db")


def test_sqlite_write_lock_held_elsewhere_gives_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = open_store(f"sqlite:///{path}?busy_timeout=200")
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailableError, match="database is locked"):
            store.record_issued(make_cert(), operation="simpleenroll", label=None)
        # Reads are not blocked by a writer (WAL).
        assert store.list_issued() == []
        blocker.execute("ROLLBACK")
        store.record_issued(make_cert(), operation="simpleenroll", label=None)
        assert len(store.list_issued()) == 1
        assert blocker.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        blocker.close()
        store.close()


def test_plain_path_and_sqlite_url_are_the_same_store(tmp_path: Path) -> None:
    path = tmp_path / "same.db"
    with open_store(path) as plain:
        record = plain.record_issued(make_cert(), operation="simpleenroll", label=None)
    with open_store(f"sqlite:///{path}") as via_url:
        assert via_url.get_issued(record.serial) == record
        assert via_url.dialect == "sqlite"


def test_newer_schema_is_refused(store_url: str) -> None:
    store = open_store(store_url)
    with store._backend.transaction() as tx:  # simulate a database written by a newer estkit
        tx.execute("UPDATE schema_version SET version = ?", (CURRENT_VERSION + 1,))
    store.close()
    with pytest.raises(StoreError, match="newer than this estkit understands"):
        open_store(store_url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root@localhost/estkit", "unsupported certificate store URL"),
        ("sqlite:///tmp/x.db?synchronous=sometimes", "unknown synchronous=sometimes"),
        ("sqlite:///tmp/x.db?cache=shared", "unknown option"),
        ("sqlite:///", "names no file"),
    ],
)
def test_bad_urls_are_explained(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        open_store(url)


def test_postgres_server_fixture_is_reusable(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    assert url.startswith(f"postgresql://postgres@127.0.0.1:{postgres_server.port}/")
    with open_store(url) as store:
        assert store.dialect == "postgresql"
        assert store.url == url


def test_sqlite_synchronous_mode_follows_the_url(tmp_path: Path) -> None:
    # 1 = NORMAL (default: survives kill -9), 2 = FULL (fsync per commit: survives power loss).
    for url, expected in (
        (f"sqlite:///{tmp_path / 'default.db'}", 1),
        (f"sqlite:///{tmp_path / 'full.db'}?synchronous=full", 2),
    ):
        with open_store(url) as store:
            connection = store._backend._connection  # type: ignore[attr-defined]
            assert connection.execute("PRAGMA synchronous").fetchone()[0] == expected


KILL_AFTER = 20


def test_kill_9_loses_no_acknowledged_record(store_url: str) -> None:
    """Every record_issued that returned before the writer was killed is in the store."""
    open_store(store_url).close()
    worker = subprocess.Popen(
        [sys.executable, str(WORKER), store_url, "100000", "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acknowledged: list[str] = []
    try:
        assert worker.stdout is not None and worker.stdin is not None
        assert worker.stdout.readline().strip() == "ready"
        worker.stdin.write("go\n")
        worker.stdin.flush()
        while len(acknowledged) < KILL_AFTER:
            line = worker.stdout.readline()
            assert line, "the worker stopped early"
            acknowledged.append(line.split()[1])
        worker.kill()  # SIGKILL in the middle of its stream of writes
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait(timeout=30)
    assert worker.returncode == -9
    with open_store(store_url) as store:
        in_store = {record.serial for record in store.list_issued(label="procs")}
    assert set(acknowledged) <= in_store
