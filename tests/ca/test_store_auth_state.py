"""The store's share of issue 24, on SQLite and on a real PostgreSQL: Digest nonce uses (a replay
is refused whichever connection saw the first use), the shared Digest key, operator certificates,
single-use console sign-in tokens, the queue's trust fields, the v1 → v2 migration, and a
serverkeygen key that is not in the PostgreSQL store after delivery."""

from __future__ import annotations

import base64
import email
import email.policy
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estkit.ca.store import open_store
from estkit.ca.store_schema import CURRENT_VERSION, SQLITE, migration_statements
from estkit.protocol.csr import build_csr, encode_csr_body
from estkit.protocol.keys import generate_private_key
from estkit.server.approval import approve_if_allowed
from estkit.server.config import add_label, load_config
from estkit.server.datadir import init_data_dir
from estkit.server.runner import start_server_thread

from .pg_fixture import PostgresServer

NOW = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)


def _cert() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )


def test_a_digest_nonce_count_is_accepted_once_across_connections(store_url: str) -> None:
    expires = NOW + timedelta(minutes=6)
    with open_store(store_url) as first, open_store(store_url) as second:
        assert first.use_digest_nonce("n1", 1, expires_at=expires, now=NOW)
        # Another process (another connection) sees the replay.
        assert not second.use_digest_nonce("n1", 1, expires_at=expires, now=NOW)
        assert second.use_digest_nonce("n1", 2, expires_at=expires, now=NOW)
        assert second.use_digest_nonce("n2", 1, expires_at=expires, now=NOW)
        # Expired uses are purged, so the table does not grow without bound.
        later = NOW + timedelta(hours=1)
        assert first.use_digest_nonce("n3", 1, expires_at=later + timedelta(minutes=6), now=later)
        assert first.use_digest_nonce("n1", 1, expires_at=later, now=later)


def test_the_digest_key_is_made_once_and_shared(store_url: str) -> None:
    with open_store(store_url) as first, open_store(store_url) as second:
        key = first.shared_secret("digest-nonce-key", lambda: b"A" * 32)
        assert key == b"A" * 32
        assert second.shared_secret("digest-nonce-key", lambda: b"B" * 32) == key


def test_console_tokens_are_single_use_expiring_and_bound(store_url: str) -> None:
    with open_store(store_url) as store:
        store.add_console_token("h1", "alice", expires_at=NOW + timedelta(minutes=10), now=NOW)
        assert "another operator" in (store.use_console_token("h1", "bob", now=NOW) or "")
        assert store.use_console_token("h1", "alice", now=NOW) is None
        assert "already used" in (store.use_console_token("h1", "alice", now=NOW) or "")
        store.add_console_token("h2", "alice", expires_at=NOW + timedelta(minutes=10), now=NOW)
        late = NOW + timedelta(minutes=10, seconds=1)
        assert "expired" in (store.use_console_token("h2", "alice", now=late) or "")
        assert "not valid" in (store.use_console_token("nope", "alice", now=NOW) or "")


def test_operator_certificates_are_recorded_and_revoked(store_url: str) -> None:
    cert = _cert()
    with open_store(store_url) as store:
        record = store.record_operator_certificate(cert, "alice", now=NOW)
        assert record.fingerprint == "sha256:" + cert.fingerprint(hashes.SHA256()).hex()
        assert store.get_operator_certificate(fingerprint=record.fingerprint).status == "valid"
        revoked = store.revoke_operator_certificate(record.serial, by="test", now=NOW)
        assert (revoked.status, revoked.revoked_at) == ("revoked", NOW)
        assert store.get_operator_certificate(serial=record.serial).status == "revoked"
        with pytest.raises(KeyError, match="no operator certificate"):
            store.revoke_operator_certificate("abcdef", by="test")


def test_the_queue_records_trust_user_and_verdict(store_url: str) -> None:
    with open_store(store_url) as store:
        request = store.add_request(
            label="l",
            operation="simpleenroll",
            csr_pem="-----BEGIN CERTIFICATE REQUEST-----\n",
            common_name="n.example",
            dns_names=["n.example"],
            key_type="EC P-256",
            public_key_sha256="ab",
            client_trust="untrusted",
            http_user="alice",
            verdict="queued: ...",
        )
        again = store.get_request(request.id)
        assert (again.client_trust, again.http_user, again.verdict) == (
            "untrusted",
            "alice",
            "queued: ...",
        )
        with pytest.raises(ValueError, match="unknown client_trust"):
            store.add_request(
                label="l",
                operation="simpleenroll",
                csr_pem="x",
                common_name=None,
                dns_names=[],
                key_type="k",
                public_key_sha256="cd",
                client_trust="sort of",
            )


def test_a_version_1_database_is_migrated_and_keeps_its_requests(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    connection = sqlite3.connect(path)
    (_, statements), *_ = migration_statements(SQLITE, 0)
    for statement in statements:
        connection.execute(statement)
    connection.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    connection.execute("INSERT INTO schema_version VALUES (1)")
    connection.execute(
        "INSERT INTO requests (created_at, label, operation, status, common_name, dns_names, "
        "key_type, public_key_sha256, requester, note, csr_pem) VALUES "
        "('2026-01-01T00:00:00.000000+00:00', '', 'simpleenroll', 'pending', 'old.example', "
        "'[]', 'EC P-256', 'ff', 'anonymous', '', 'pem')"
    )
    connection.commit()
    connection.close()
    with open_store(path) as store:
        assert store.schema_version() == CURRENT_VERSION
        (old,) = store.list_requests()
        assert old.common_name == "old.example"
        # Not recorded then, so not guessed now.
        assert (old.client_trust, old.http_user, old.verdict) == (None, None, None)
        assert store.use_digest_nonce("n", 1, expires_at=NOW + timedelta(minutes=5), now=NOW)


def test_a_generated_key_is_not_in_the_postgresql_store_after_delivery(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.create_database()
    paths = init_data_dir(tmp_path / "data", key_type="p256", db_url=url)
    add_label(paths.config, "manual", approval="manual", retry_after_seconds=1)
    running = start_server_thread(paths.data_dir)
    try:
        context = ssl.create_default_context(cafile=str(paths.ca_certificates))
        context.load_cert_chain(paths.device_certificate, paths.device_key)
        key = generate_private_key("p256")
        csr = build_csr(key, common_name="pg-keygen.example", dns_names=["pg-keygen.example"])
        body, headers = encode_csr_body(csr), {"Content-Type": "application/pkcs10"}
        target = f"{running.url}/.well-known/est/manual/serverkeygen"
        with httpx.Client(verify=context, timeout=30) as client:
            queued = client.post(target, content=body, headers=headers)
            assert queued.status_code == 202, queued.text
            with open_store(url) as store:
                (pending,) = store.list_requests("pending")
                approve_if_allowed(load_config(paths.data_dir), store, pending.id, by="test")
            delivered = client.post(target, content=body, headers=headers)
        assert delivered.status_code == 200, delivered.text
    finally:
        running.stop()
    message = email.message_from_bytes(
        b"Content-Type: " + delivered.headers["content-type"].encode() + b"\r\n\r\n"
        + delivered.content,
        policy=email.policy.HTTP,
    )  # fmt: skip
    (der,) = [
        base64.b64decode(part.get_payload())
        for part in message.iter_parts()
        if part.get_content_type() == "application/pkcs8"
    ]
    pem = serialization.load_der_private_key(der, password=None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    import psycopg

    with psycopg.connect(url) as connection:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        ]
        dump = "\n".join(
            str(row) for table in tables for row in connection.execute(f'SELECT * FROM "{table}"')
        )
    assert "requests" in tables and "pg-keygen.example" in dump  # the dump is of the right store
    for form in (base64.b64encode(der).decode(), pem.decode().splitlines()[1], der.hex()):
        assert form not in dump
    assert "PRIVATE KEY" not in dump
