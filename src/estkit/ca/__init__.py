"""estkit.ca: the certificate authority behind the EST server.

Keys and certificates on disk (:mod:`.authority`), issuing rules per EST label (:mod:`.profiles`),
CRLs (:mod:`.crl`), the demo manufacturer CA (:mod:`.manufacturer`) and the certificate store
(:mod:`.store`, SQLite or PostgreSQL). The server imports from here; nothing here knows HTTP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from estkit._lazy import lazy_exports

if TYPE_CHECKING:
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

# name -> submodule: each name's module is imported the first time the name is read.
_EXPORTS: dict[str, str] = {
    "CaError": "authority",
    "CaExistsError": "authority",
    "CaNotFoundError": "authority",
    "CertificateAuthority": "authority",
    "CertificateStore": "store",
    "DeviceCredential": "manufacturer",
    "DuplicateSerialError": "store",
    "Event": "store",
    "IssuedRecord": "store",
    "ManufacturerCA": "manufacturer",
    "ManufacturerError": "manufacturer",
    "PendingRequest": "store",
    "Profile": "profiles",
    "ProfileError": "profiles",
    "REVOCATION_REASONS": "crl",
    "RequestStateError": "store",
    "RevokedEntry": "crl",
    "RolloverResult": "authority",
    "StoreError": "store",
    "StoreUnavailableError": "store",
    "create_manufacturer_ca": "manufacturer",
    "issue_device_certificate": "manufacturer",
    "normalize_reason": "crl",
    "open_store": "store",
    "profile_from_mapping": "profiles",
    "profile_to_mapping": "profiles",
}


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

if not TYPE_CHECKING:  # type checkers read the imports above; Python runs this
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
