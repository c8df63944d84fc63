"""Certificate revocation lists (RFC 5280 §5) and the revocation reasons people may give.

Why separate from the authority: the demo manufacturer CA needs CRLs too (the server checks
manufacturer certificates against CRL files), and the store needs the reason vocabulary without
pulling in any signing code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estkit.ca.builders import authority_key_identifier
from estkit.ca.signer import Signer
from estkit.ca.signer import sign_crl as sign_crl_builder
from estkit.protocol.keys import PrivateKey

# A day: long enough that a relying party caching the CRL does not refetch constantly, short
# enough that a revocation is noticed the same day (CA/B Forum BR §4.9.7 allows up to 10 days).
DEFAULT_NEXT_UPDATE_SECONDS = 86400
# Microsecond timestamps as CRL numbers stay monotonic across restarts and across several server
# instances sharing one CA without a shared counter, and fit the 20-octet limit of RFC 5280 §5.2.3.
_CRL_NUMBER_SCALE = 1_000_000

UNSPECIFIED = "unspecified"
# RFC 5280 §5.3.1 reason names, spelt as in the RFC (and as cryptography's ReasonFlags values).
REVOCATION_REASONS: tuple[str, ...] = tuple(
    flag.value for flag in x509.ReasonFlags if flag is not x509.ReasonFlags.remove_from_crl
)
_REASON_LOOKUP: dict[str, str] = {}
for _flag in x509.ReasonFlags:
    if _flag is x509.ReasonFlags.remove_from_crl:
        continue  # only meaningful in delta CRLs, which we do not produce
    for _spelling in (_flag.value, _flag.name, _flag.name.replace("_", "-")):
        _REASON_LOOKUP[_spelling.lower()] = _flag.value


def normalize_reason(reason: str) -> str:
    """The RFC 5280 spelling of a revocation reason (``key_compromise`` → ``keyCompromise``)."""
    found = _REASON_LOOKUP.get(str(reason).strip().lower())
    if found is None:
        raise ValueError(
            f"unknown revocation reason {reason!r}; use one of {', '.join(REVOCATION_REASONS)}"
        )
    return found


def parse_serial(serial: int | str) -> int:
    """A certificate serial from an int or hex text (``0x``, colons, spaces and case tolerated)."""
    if isinstance(serial, bool):
        raise ValueError(f"not a certificate serial number: {serial!r}")
    if isinstance(serial, int):
        value = serial
    else:
        text = str(serial).strip().lower().replace(":", "").replace(" ", "")
        text = text.removeprefix("0x")
        try:
            value = int(text, 16)
        except ValueError:
            raise ValueError(
                f"not a certificate serial number: {serial!r}; expected hexadecimal digits "
                "as printed by 'estkit server certs'"
            ) from None
    if value <= 0:
        raise ValueError(
            f"certificate serial numbers are positive (RFC 5280 §4.1.2.2), got {value}"
        )
    return value


def serial_to_hex(serial: int) -> str:
    """Lower-case hex without leading zeros: the one spelling the store and CLI use."""
    return format(serial, "x")


@dataclass(frozen=True)
class RevokedEntry:
    """One line of a CRL. ``serial`` may be given as an int or hex text; it is stored as an int
    (read it through :attr:`serial_number` for a typed value)."""

    serial: int | str
    revoked_at: datetime
    reason: str = UNSPECIFIED

    def __post_init__(self) -> None:
        object.__setattr__(self, "serial", parse_serial(self.serial))
        object.__setattr__(self, "reason", normalize_reason(self.reason))
        if self.revoked_at.tzinfo is None:
            raise ValueError("revoked_at must be a timezone-aware UTC datetime")

    @property
    def serial_number(self) -> int:
        return parse_serial(self.serial)

    @property
    def serial_hex(self) -> str:
        return serial_to_hex(self.serial_number)


def sign_crl(
    issuer_certificate: x509.Certificate,
    issuer_key: PrivateKey | Signer,
    revoked: Iterable[RevokedEntry],
    *,
    now: datetime | None = None,
    next_update_seconds: int = DEFAULT_NEXT_UPDATE_SECONDS,
    crl_number: int | None = None,
) -> bytes:
    """A DER CRL signed by ``issuer_key`` listing ``revoked``, with CRL number and AKI."""
    if next_update_seconds <= 0:
        raise ValueError(f"next_update_seconds must be positive, got {next_update_seconds}")
    now = now or datetime.now(UTC)
    if crl_number is None:
        crl_number = int(now.timestamp() * _CRL_NUMBER_SCALE)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_certificate.subject)
        .last_update(now)
        .next_update(now + timedelta(seconds=next_update_seconds))
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(authority_key_identifier(issuer_certificate), critical=False)
    )
    seen: set[int] = set()
    for entry in revoked:
        if entry.serial_number in seen:
            continue
        seen.add(entry.serial_number)
        revoked_builder = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial_number)
            .revocation_date(entry.revoked_at)
        )
        # RFC 5280 §5.3.1: the reasonCode "unspecified" SHOULD be absent rather than present.
        if entry.reason != UNSPECIFIED:
            revoked_builder = revoked_builder.add_extension(
                x509.CRLReason(x509.ReasonFlags(entry.reason)), critical=False
            )
        builder = builder.add_revoked_certificate(revoked_builder.build())
    crl = sign_crl_builder(builder, issuer_key)
    return crl.public_bytes(serialization.Encoding.DER)


__all__ = [
    "DEFAULT_NEXT_UPDATE_SECONDS",
    "REVOCATION_REASONS",
    "RevokedEntry",
    "normalize_reason",
    "parse_serial",
    "serial_to_hex",
    "sign_crl",
]
