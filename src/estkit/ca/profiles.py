"""Issuing profiles: what one EST label (CA profile) allows and how its certificates look.

Why a frozen dataclass validated on construction: a profile comes from a hand-edited TOML file,
and a typo there ("validity_seconds = -1", "ekus = ['serverauth']") must stop the server at start
with a message naming the field, not surface later as a strange certificate or a 500.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from estkit.ca.errors import CaError
from estkit.protocol.csr import CsrPolicy
from estkit.protocol.keys import KEY_TYPES
from estkit.protocol.limits import MAX_RETRY_AFTER_SECONDS
from estkit.protocol.paths import validate_label

AuthMode = Literal["nmos", "rfc7030"]
Approval = Literal["auto", "manual", "untrusted"]

AUTH_MODES: tuple[str, ...] = get_args(AuthMode)
APPROVAL_MODES: tuple[str, ...] = get_args(Approval)
KEY_FAMILIES = frozenset({"rsa", "ec"})

# The shortest validity that still survives the notBefore backdating and a round trip: a profile
# asking for less is a typo (e.g. minutes written where seconds were meant).
MIN_VALIDITY_SECONDS = 1
# 30 years: BCP-003-03 recommends manufacturer device certificates of at least 30 years (C1); an
# operational leaf longer than its issuer is clamped anyway, so this only catches nonsense values.
MAX_VALIDITY_SECONDS = 30 * 365 * 86400
# One day of clock skew tolerance is already far beyond what NTP-less devices drift in practice;
# more would let a certificate be used before it was issued in any meaningful sense.
MAX_BACKDATE_SECONDS = 86400
DEFAULT_VALIDITY_SECONDS = 90 * 86400
DEFAULT_BACKDATE_SECONDS = 300
DEFAULT_RETRY_AFTER_SECONDS = 10

# Names accepted in ``ekus`` (the spelling used by OpenSSL's extendedKeyUsage config); a dotted
# OID is accepted too, for private usages.
EKU_NAMES: dict[str, x509.ObjectIdentifier] = {
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING,
    "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "timeStamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "OCSPSigning": ExtendedKeyUsageOID.OCSP_SIGNING,
}
# Subject attributes a profile may copy into issued certificates, always from the authenticated
# client certificate (the manufacturer's device certificate, or on re-enrollment the certificate
# this CA issued), never from the CSR: the CSR is the requester's own claim.
CLIENT_SUBJECT_ATTRIBUTES: dict[str, x509.ObjectIdentifier] = {
    "serialNumber": NameOID.SERIAL_NUMBER,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME,
}
# What each auth mode copies when a profile does not say: the device serial for NMOS labels (the
# CSR's own serialNumber, which /csrattrs asks for, is never trusted), nothing for rfc7030.
DEFAULT_SUBJECT_FROM_CLIENT_CERTIFICATE: dict[str, tuple[str, ...]] = {
    "nmos": ("serialNumber",),
    "rfc7030": (),
}
_DOTTED_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")


class ProfileError(CaError, ValueError):
    """A profile value is invalid; the message names the field and the accepted values."""


def eku_oid(name: str) -> x509.ObjectIdentifier:
    """The OID for an EKU name from :data:`EKU_NAMES` or a dotted OID string."""
    if name in EKU_NAMES:
        return EKU_NAMES[name]
    if _DOTTED_OID.fullmatch(name):
        return x509.ObjectIdentifier(name)
    raise ProfileError(
        f"unknown extended key usage {name!r}; use one of {', '.join(EKU_NAMES)} or a dotted OID"
    )


@dataclass(frozen=True)
class Profile:
    """The issuing rules of one EST label (or of the default, unlabelled endpoint)."""

    label: str | None = None
    validity_seconds: int = DEFAULT_VALIDITY_SECONDS
    key_families: frozenset[str] = field(default_factory=lambda: KEY_FAMILIES)
    auth_mode: AuthMode = "nmos"
    # "manual": every enrollment waits for an operator; "untrusted": requests without a trusted
    # client certificate wait, trusted ones are issued at once.
    approval: Approval = "auto"
    require_pop: bool = False
    retry_after_seconds: int = DEFAULT_RETRY_AFTER_SECONDS
    allow_ip_addresses: bool = False
    allow_wildcards: bool = False
    ekus: tuple[str, ...] = ("serverAuth", "clientAuth")
    serverkeygen_key_type: str = "p256"
    backdate_seconds: int = DEFAULT_BACKDATE_SECONDS
    # A client authenticated only by a certificate this CA issued may enroll and re-enroll for
    # exactly the names of that certificate (CN and every SAN); new names need the manufacturer
    # certificate or, on rfc7030 labels, an HTTP user. False restores "any enrolled device may ask
    # for any name", which is what issue 24 row 7 showed to be unsafe.
    bind_names_to_client_certificate: bool = True
    # Subject attributes copied from the authenticated client certificate (see
    # CLIENT_SUBJECT_ATTRIBUTES). None = the auth mode's default: ["serialNumber"] for nmos (the
    # BCP-003-03 C1/C7 device serial, from the manufacturer certificate and, on renewal, from the
    # certificate being renewed), nothing for rfc7030.
    subject_from_client_certificate: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # Accept any iterable for the collection fields (TOML gives lists) but store the
        # immutable, hashable types the dataclass promises.
        if not isinstance(self.key_families, frozenset):
            object.__setattr__(self, "key_families", frozenset(_as_list(self, "key_families")))
        if not isinstance(self.ekus, tuple):
            object.__setattr__(self, "ekus", tuple(_as_list(self, "ekus")))
        if self.subject_from_client_certificate is None:
            default = DEFAULT_SUBJECT_FROM_CLIENT_CERTIFICATE.get(str(self.auth_mode), ())
            object.__setattr__(self, "subject_from_client_certificate", default)
        elif not isinstance(self.subject_from_client_certificate, tuple):
            items = tuple(_as_list(self, "subject_from_client_certificate"))
            object.__setattr__(self, "subject_from_client_certificate", items)
        _validate(self)

    @property
    def eku_oids(self) -> tuple[x509.ObjectIdentifier, ...]:
        """The extended key usages as OIDs, in profile order."""
        return tuple(eku_oid(name) for name in self.ekus)

    def csr_policy(self) -> CsrPolicy:
        """The CSR policy (estkit.protocol) that requests under this profile must satisfy."""
        return CsrPolicy(
            key_families=self.key_families,
            allow_wildcards=self.allow_wildcards,
            allow_ip_addresses=self.allow_ip_addresses,
        )


def _as_list(profile: Profile, name: str) -> list[str]:
    value = getattr(profile, name)
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise ProfileError(f"{name} must be a list of strings, got {value!r}")
    items = list(value)
    for item in items:
        if not isinstance(item, str):
            raise ProfileError(f"{name} must be a list of strings, got the item {item!r}")
    return items


def _require_int(name: str, value: object, low: int, high: int) -> None:
    # bool is an int subclass; "validity_seconds = true" is a typo, not 1 second.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProfileError(f"{name} must be a whole number of seconds, got {value!r}")
    if not low <= value <= high:
        raise ProfileError(f"{name} must be between {low} and {high}, got {value}")


def _require_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ProfileError(f"{name} must be true or false, got {value!r}")


def _validate(profile: Profile) -> None:
    if profile.label is not None:
        if not isinstance(profile.label, str):
            raise ProfileError(f"label must be a string, got {profile.label!r}")
        try:
            validate_label(profile.label)
        except ValueError as exc:
            raise ProfileError(f"profile label: {exc}") from None
    _require_int(
        "validity_seconds", profile.validity_seconds, MIN_VALIDITY_SECONDS, MAX_VALIDITY_SECONDS
    )
    _require_int("backdate_seconds", profile.backdate_seconds, 0, MAX_BACKDATE_SECONDS)
    _require_int("retry_after_seconds", profile.retry_after_seconds, 1, MAX_RETRY_AFTER_SECONDS)
    for name in (
        "require_pop",
        "allow_ip_addresses",
        "allow_wildcards",
        "bind_names_to_client_certificate",
    ):
        _require_bool(name, getattr(profile, name))
    if profile.auth_mode not in AUTH_MODES:
        raise ProfileError(
            f"auth_mode must be one of {', '.join(AUTH_MODES)}, got {profile.auth_mode!r}"
        )
    if profile.approval not in APPROVAL_MODES:
        raise ProfileError(
            f"approval must be one of {', '.join(APPROVAL_MODES)}, got {profile.approval!r}"
        )
    if not profile.key_families:
        raise ProfileError("key_families must not be empty; use ['rsa'], ['ec'] or both")
    unknown = sorted(profile.key_families - KEY_FAMILIES)
    if unknown:
        raise ProfileError(
            f"unknown key famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
            "key_families takes 'rsa' and/or 'ec'"
        )
    if not profile.ekus:
        raise ProfileError(
            "ekus must not be empty; NMOS nodes need ['serverAuth', 'clientAuth'] (BCP-003-03 S7)"
        )
    for name in profile.ekus:
        eku_oid(name)
    for name in profile.subject_from_client_certificate or ():
        if name not in CLIENT_SUBJECT_ATTRIBUTES:
            raise ProfileError(
                f"subject_from_client_certificate: unknown attribute {name!r}; use any of "
                f"{', '.join(CLIENT_SUBJECT_ATTRIBUTES)}"
            )
    if profile.serverkeygen_key_type not in KEY_TYPES:
        raise ProfileError(
            f"serverkeygen_key_type must be one of {', '.join(KEY_TYPES)}, "
            f"got {profile.serverkeygen_key_type!r}"
        )
    if profile.auth_mode == "nmos" and (profile.allow_ip_addresses or profile.allow_wildcards):
        # BCP-003-01 (T4): no wildcards and no IP addresses in CN/SAN of NMOS certificates. A
        # silently ignored setting would surprise; refuse it and say how to get it.
        raise ProfileError(
            "the nmos auth_mode forbids wildcard names and IP addresses in certificates "
            "(BCP-003-01); set allow_wildcards/allow_ip_addresses to false, or use "
            "auth_mode = 'rfc7030' for a non-NMOS label"
        )


_FIELD_NAMES = tuple(f.name for f in fields(Profile))


def profile_from_mapping(mapping: Mapping[str, Any], *, label: str | None = None) -> Profile:
    """Build a profile from a TOML table; ``label`` (the table's key) wins over a ``label`` item.

    Unknown keys are refused so that a misspelt option does not silently fall back to a default.
    """
    unknown = sorted(set(mapping) - set(_FIELD_NAMES))
    if unknown:
        raise ProfileError(
            f"unknown profile option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"valid options are {', '.join(_FIELD_NAMES)}"
        )
    values = dict(mapping)
    if label is not None:
        values["label"] = label
    for name in ("key_families", "ekus", "subject_from_client_certificate"):
        if name in values and (isinstance(values[name], str) or values[name] is None):
            raise ProfileError(f"{name} must be a list of strings, got {values[name]!r}")
    return Profile(**values)


def profile_to_mapping(profile: Profile, *, include_label: bool = True) -> dict[str, Any]:
    """A TOML-ready table (lists, no None) that :func:`profile_from_mapping` reads back."""
    result: dict[str, Any] = {}
    for name in _FIELD_NAMES:
        value = getattr(profile, name)
        if name == "label":
            if value is None or not include_label:
                continue
        elif name == "key_families":
            value = sorted(value)
        elif name in ("ekus", "subject_from_client_certificate"):
            value = list(value)
        result[name] = value
    return result


__all__ = [
    "APPROVAL_MODES",
    "AUTH_MODES",
    "CLIENT_SUBJECT_ATTRIBUTES",
    "EKU_NAMES",
    "KEY_FAMILIES",
    "MAX_BACKDATE_SECONDS",
    "MAX_VALIDITY_SECONDS",
    "Profile",
    "ProfileError",
    "eku_oid",
    "profile_from_mapping",
    "profile_to_mapping",
]
