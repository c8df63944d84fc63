"""estkit.ca: the certificate authority behind the EST server.

Keys and certificates on disk (:mod:`.authority`), issuing rules per EST label (:mod:`.profiles`),
CRLs (:mod:`.crl`), the demo manufacturer CA (:mod:`.manufacturer`) and the certificate store
(:mod:`.store`, SQLite or PostgreSQL). The server imports from here; nothing here knows HTTP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from estkit._lazy import lazy_exports

if TYPE_CHECKING:
    from estkit.ca.authority import CaError as CaError
    from estkit.ca.authority import CaExistsError as CaExistsError
    from estkit.ca.authority import CaNotFoundError as CaNotFoundError
    from estkit.ca.authority import CertificateAuthority as CertificateAuthority
    from estkit.ca.authority import RolloverResult as RolloverResult
    from estkit.ca.crl import REVOCATION_REASONS as REVOCATION_REASONS
    from estkit.ca.crl import RevokedEntry as RevokedEntry
    from estkit.ca.crl import normalize_reason as normalize_reason
    from estkit.ca.manufacturer import DeviceCredential as DeviceCredential
    from estkit.ca.manufacturer import ManufacturerCA as ManufacturerCA
    from estkit.ca.manufacturer import ManufacturerError as ManufacturerError
    from estkit.ca.manufacturer import create_manufacturer_ca as create_manufacturer_ca
    from estkit.ca.manufacturer import issue_device_certificate as issue_device_certificate
    from estkit.ca.profiles import Profile as Profile
    from estkit.ca.profiles import ProfileError as ProfileError
    from estkit.ca.profiles import profile_from_mapping as profile_from_mapping
    from estkit.ca.profiles import profile_to_mapping as profile_to_mapping
    from estkit.ca.store import CertificateStore as CertificateStore
    from estkit.ca.store import DuplicateSerialError as DuplicateSerialError
    from estkit.ca.store import Event as Event
    from estkit.ca.store import IssuedRecord as IssuedRecord
    from estkit.ca.store import PendingRequest as PendingRequest
    from estkit.ca.store import RequestStateError as RequestStateError
    from estkit.ca.store import StoreError as StoreError
    from estkit.ca.store import StoreUnavailableError as StoreUnavailableError
    from estkit.ca.store import open_store as open_store

if not TYPE_CHECKING:  # Python reads the names from the imports above, lazily
    __getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
