"""A big store filled through the store API (issue 14's hostile-load figures): 5,000
certificates, 20,000 refusal events and 120 pending requests, for the bounded-view tests of the
store, the console and the CLI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estkit.ca.store import CertificateStore

# The server's audit kind for refusals (estkit.server.app logs them so).
REFUSAL_EVENT_KIND = "refused"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
KEY = ec.generate_private_key(ec.SECP256R1())
CERTIFICATES = 5_000
REVOKED = 100  # every 50th certificate
# Refusals: most share one message (one reason), the rest all differ (a serial in each), so
# the store must both count exactly and cap how many message groups it reads.
SAME_REFUSALS = 15_000
DISTINCT_REFUSALS = 5_000
OLD_REFUSALS = 50  # outside the dashboard's 7-day window
PENDING = 120


def certificate(serial: int, not_after: datetime) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"node-{serial}.example")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(KEY.public_key())
        .serial_number(serial)
        .not_valid_before(NOW - timedelta(days=400))
        .not_valid_after(not_after)
        .sign(KEY, hashes.SHA256())
    )


def fill(store: CertificateStore) -> None:
    """5,000 certificates, 20,000 refusals and 120 pending requests, through the store API."""
    for index in range(1, CERTIFICATES + 1):
        # notAfter spread over -10 .. +89 days: some expired, ~20% expiring within 30 days.
        not_after = NOW + timedelta(days=index % 100 - 10, hours=1)
        store.record_issued(
            certificate(0x1000 + index, not_after),
            operation="simpleenroll",
            label="nmos" if index % 2 else None,
            now=NOW - timedelta(minutes=CERTIFICATES - index),  # higher serial = newer
        )
        if index % 50 == 0:
            store.revoke(0x1000 + index, "superseded", now=NOW)
    for index in range(SAME_REFUSALS):
        store.log_event(REFUSAL_EVENT_KIND, "client certificate required", status=401, n=index)
    for index in range(DISTINCT_REFUSALS):
        store.log_event(REFUSAL_EVENT_KIND, f"certificate {index:040x} is revoked", status=403)
    for index in range(PENDING):
        store.add_request(
            label="manual",
            operation="simpleenroll",
            csr_pem="(not read by these tests)",
            common_name=f"pending-{index}.example",
            dns_names=[],
            key_type="ECDSA P-256",
            public_key_sha256=f"{index:064x}",
            peer_address="192.0.2.1",
            requester="anonymous",
            now=NOW - timedelta(minutes=PENDING - index),
        )
