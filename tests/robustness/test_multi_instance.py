"""Several `estkit server serve` processes on one PostgreSQL database (issue 6).

Two real server processes, same data directory (CA material), different ports, one throwaway
PostgreSQL database: serials stay unique under concurrent load, every certificate a client received
is in the store exactly once, approvals and revocations made through one are seen by the other at
once, and both serve the same CRL. Also: a clear error when the database is unreachable at start,
and 503 + Retry-After (no crash, nothing lost) when it goes away while serving.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estkit.ca.store import open_store
from estkit.protocol import build_csr, generate_private_key
from estkit.server.config import add_label, load_config, save_config

from .conftest import DataDir, init_data_dir_cli, running_postgres
from .support import (
    ServeProcess,
    client_context,
    csr_body,
    enroll,
    free_port,
    request,
    run_cli,
    serial_hex,
)

# Per instance: client threads and enrollments per thread (kept small: two CPU cores).
THREADS_PER_INSTANCE = 3
ENROLLMENTS_PER_THREAD = 6


def _start_pair(data: DataDir, tmp_path: Path) -> tuple[ServeProcess, ServeProcess]:
    first = ServeProcess(data.path, tmp_path / "a.log").start()
    try:
        second = ServeProcess(data.path, tmp_path / "b.log").start()
    except BaseException:
        first.stop()
        raise
    assert first.port != second.port
    return first, second


def test_two_instances_share_one_postgresql_store(pg_data_dir: DataDir, tmp_path: Path) -> None:
    data = pg_data_dir
    assert data.database_url.startswith("postgresql://")
    context = client_context(data.ca_certificates, data.device_certificate, data.device_key)
    bodies = [
        [csr_body()[0] for _ in range(ENROLLMENTS_PER_THREAD)]
        for _ in range(2 * THREADS_PER_INSTANCE)
    ]
    first, second = _start_pair(data, tmp_path)
    with first, second:

        def worker(index: int) -> list[str]:
            port = (first if index % 2 == 0 else second).port
            serials = []
            for body in bodies[index]:
                reply = enroll(port, context, body)
                assert reply.status == 200, reply.text
                serials.append(serial_hex(reply.certificate()))
            return serials

        with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
            received = [s for batch in pool.map(worker, range(len(bodies))) for s in batch]
        assert first.process is not None and first.process.poll() is None
        assert second.process is not None and second.process.poll() is None

    # Both instances really served: each logged issuances of its own.
    assert "issued" in first.log_text() and "issued" in second.log_text()
    assert len(received) == len(set(received)) == 2 * THREADS_PER_INSTANCE * ENROLLMENTS_PER_THREAD
    with open_store(data.database_url) as store:
        recorded = [record.serial for record in store.list_issued()]
    assert sorted(recorded) == sorted(received), "store and clients disagree"
    # The CLI an operator uses reads the same database.
    listing = run_cli("server", "certs", data.path, "--json")
    assert listing.returncode == 0, listing.stderr
    assert all(serial in listing.stdout for serial in received)


def _key_and_body(common_name: str) -> tuple[bytes, bytes]:
    key = generate_private_key("p256")
    csr = build_csr(key, common_name=common_name, dns_names=[common_name])
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, base64.encodebytes(csr.public_bytes(serialization.Encoding.DER))


def test_approvals_and_revocations_are_seen_by_both_instances(
    pg_data_dir: DataDir, tmp_path: Path
) -> None:
    data = pg_data_dir
    add_label(data.config, "manual", approval="manual", retry_after_seconds=1)
    context = client_context(data.ca_certificates, data.device_certificate, data.device_key)
    key_pem, body = _key_and_body("approved-node.example.com")
    first, second = _start_pair(data, tmp_path)
    with first, second:
        queued = enroll(first.port, context, body, label="manual")
        assert queued.status == 202, queued.text
        assert queued.header("Retry-After") == "1"
        with open_store(data.database_url) as store:
            pending = store.list_requests("pending")
        assert [p.common_name for p in pending] == ["approved-node.example.com"]
        request_id = pending[0].id
        # Still waiting when asked through the other instance.
        assert enroll(second.port, context, body, label="manual").status == 202

        approved = run_cli("server", "approve", data.path, str(request_id))
        assert approved.returncode == 0, approved.stderr
        # The identical request, now through the other instance, gets the certificate.
        issued = enroll(second.port, context, body, label="manual")
        assert issued.status == 200, issued.text
        certificate = issued.certificate()
        serial = serial_hex(certificate)

        # Revoke through the CLI (third process): both instances refuse re-enrollment at once
        # and both CRLs list the serial.
        cert_path, key_path = tmp_path / "node.pem", tmp_path / "node.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key_pem)
        node_context = client_context(data.ca_certificates, cert_path, key_path)
        revoked = run_cli("server", "revoke", data.path, serial, "--reason", "keyCompromise")
        assert revoked.returncode == 0, revoked.stderr

        crls = []
        for instance in (first, second):
            refused = enroll(instance.port, node_context, body, operation="simplereenroll")
            assert refused.status == 403, refused.text
            assert "revoked" in refused.text.lower()
            reply = request(instance.port, "GET", "/crl", context)
            assert reply.status == 200
            crls.append(x509.load_der_x509_crl(reply.body))
    listed = [{format(entry.serial_number, "x") for entry in crl} for crl in crls]
    assert listed[0] == listed[1] == {serial}
    assert crls[0].issuer == crls[1].issuer == certificate.issuer


def test_unreachable_database_at_start_is_a_clear_error(
    pg_data_dir: DataDir, tmp_path: Path
) -> None:
    # Point an existing data directory at a port where no database listens.
    config = load_config(pg_data_dir.config)
    dead_url = f"postgresql://postgres@127.0.0.1:{free_port()}/estkit"
    save_config(dataclasses.replace(config, database_url=dead_url))
    server = ServeProcess(pg_data_dir.path, tmp_path / "serve.log")
    try:
        with pytest.raises(RuntimeError) as failure:
            server.start()
    finally:
        server.stop()
    output = str(failure.value)
    assert server.process is not None and server.process.returncode not in (0, None)
    assert "cannot reach the PostgreSQL certificate store" in output
    assert "127.0.0.1" in output and "Traceback" not in output

    # `init --db` with an unreachable database fails the same clear way and writes no config.
    result = run_cli("server", "init", tmp_path / "other", "--db", dead_url)
    assert result.returncode != 0
    assert "cannot reach the PostgreSQL certificate store" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_database_outage_gives_503_and_loses_nothing(tmp_path: Path) -> None:
    # A cluster of our own: this test stops and restarts it.
    with running_postgres() as cluster:
        data = init_data_dir_cli(tmp_path / "data", cluster.create_database())
        context = client_context(data.ca_certificates, data.device_certificate, data.device_key)
        with ServeProcess(data.path, tmp_path / "serve.log").start() as server:
            before = enroll(server.port, context, csr_body()[0])
            assert before.status == 200, before.text
            cluster.stop()
            outage_body = csr_body()[0]
            during = [enroll(server.port, context, outage_body) for _ in range(2)]
            for reply in during:
                assert reply.status == 503, reply.text
                assert reply.header("Retry-After") is not None
                assert int(reply.header("Retry-After") or "0") >= 1
                assert "certificate store" in reply.text
                assert "Traceback" not in reply.text
            # Requests that need no database still work; the process did not crash.
            assert request(server.port, "GET", "/.well-known/est/cacerts", context).status == 200
            assert server.process is not None and server.process.poll() is None
            cluster.start()
            after = enroll(server.port, context, outage_body)
            assert after.status == 200, after.text
            log = server.log_text()
        with open_store(data.database_url) as store:
            recorded = sorted(record.serial for record in store.list_issued())
    expected = sorted(serial_hex(reply.certificate()) for reply in (before, after))
    assert recorded == expected
    assert "certificate store" in log and "unavailable" in log
    # One clear line per outage refusal, no traceback for this expected failure.
    assert "Traceback" not in log
