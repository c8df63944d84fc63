"""estkit.ca: the certificate authority behind the EST server.

Keys and certificates on disk (:mod:`.authority`), issuing rules per EST label (:mod:`.profiles`),
CRLs (:mod:`.crl`), the demo manufacturer CA (:mod:`.manufacturer`) and the certificate store
(:mod:`.store`, SQLite or PostgreSQL). The server imports from here; nothing here knows HTTP.
"""

from __future__ import annotations

from estkit.ca.authority import (
    CaError,
    CaExistsError,
    CaNotFoundError,
    CertificateAuthority,
    RolloverResult,
)
from estkit.ca.crl import REVOCATION_REASONS, RevokedEntry, normalize_reason
from estkit.ca.manufacturer import (
    DeviceCredential,
    ManufacturerCA,
    ManufacturerError,
    create_manufacturer_ca,
    issue_device_certificate,
)
from estkit.ca.profiles import Profile, ProfileError, profile_from_mapping, profile_to_mapping
from estkit.ca.store import (
    CertificateStore,
    DuplicateSerialError,
    Event,
    IssuedRecord,
    PendingRequest,
    RequestStateError,
    StoreError,
    StoreUnavailableError,
    open_store,
)

__all__ = [
    "REVOCATION_REASONS",
    "CaError",
    "CaExistsError",
    "CaNotFoundError",
    "CertificateAuthority",
    "CertificateStore",
    "DeviceCredential",
    "DuplicateSerialError",
    "Event",
    "IssuedRecord",
    "ManufacturerCA",
    "ManufacturerError",
    "PendingRequest",
    "Profile",
    "ProfileError",
    "RequestStateError",
    "RevokedEntry",
    "RolloverResult",
    "StoreError",
    "StoreUnavailableError",
    "create_manufacturer_ca",
    "issue_device_certificate",
    "normalize_reason",
    "open_store",
    "profile_from_mapping",
    "profile_to_mapping",
]
