"""A separate OS process that records certificates into a store, for the multi-process tests.

Run as ``python store_worker.py URL COUNT SHARED_SERIAL_HEX``. It prints ``ready``, waits for a
line on stdin (so all workers start writing at the same moment), records COUNT certificates with
random serials, tries once to record a certificate with SHARED_SERIAL_HEX (which every worker
also tries), and prints one line per outcome: ``issued <serial>``, ``shared ok`` or
``shared duplicate``.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estkit.ca.store import DuplicateSerialError, open_store


def _certificate(key: ec.EllipticCurvePrivateKey, serial: int, name: str) -> x509.Certificate:
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def main() -> None:
    url, count, shared = sys.argv[1], int(sys.argv[2]), int(sys.argv[3], 16)
    key = ec.generate_private_key(ec.SECP256R1())
    store = open_store(url)
    print("ready", flush=True)
    sys.stdin.readline()
    for index in range(count):
        cert = _certificate(key, x509.random_serial_number(), f"proc-{index}.nmos.test")
        record = store.record_issued(cert, operation="simpleenroll", label="procs")
        print(f"issued {record.serial}", flush=True)
    try:
        store.record_issued(
            _certificate(key, shared, "shared.nmos.test"), operation="simpleenroll", label="procs"
        )
        print("shared ok", flush=True)
    except DuplicateSerialError:
        print("shared duplicate", flush=True)
    store.close()


if __name__ == "__main__":
    main()
