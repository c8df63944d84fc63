"""Typed results of the client operations and the description of a CSR to build.

Why typed results holding ``cryptography`` objects: the prototype handed back raw PEM strings
and every caller re-parsed them differently. A result here is already parsed and checked; PEM is
produced only at the edge (files, CLI output) through the helpers below.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from estkit.protocol import (
    CaCertificateSet,
    CsrAttrs,
    PrivateKey,
    certificates_to_pem,
    common_name,
    dns_names,
    private_key_to_pem,
    sha256_fingerprint,
    supported_private_key,
)


@dataclass(frozen=True)
class CsrSpec:
    """What to put in a CSR that the client builds itself.

    Why not a finished CSR: proof-of-possession (RFC 7030 §3.5) needs the tls-unique value of the
    connection that will carry the request, which exists only once that connection is open; so
    the client builds (and may rebuild) the CSR from this description at the last moment.
    """

    key: PrivateKey
    common_name: str | None = None
    dns_names: tuple[str, ...] = ()
    serial_number: str | None = None
    hash_algorithm: str | None = None
    extra_attributes: tuple[tuple[x509.ObjectIdentifier, bytes], ...] = ()
    extensions: tuple[x509.ExtensionType, ...] = ()

    @classmethod
    def for_renewal(
        cls,
        certificate: x509.Certificate,
        key: PrivateKeyTypes,
        *,
        serial_number: str | None = None,
    ) -> CsrSpec:
        """Subject and DNS SANs copied from the certificate being renewed (RFC 7030 §4.2.2)."""
        serial_attrs = certificate.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)
        serial = serial_number
        if serial is None and serial_attrs:
            value = serial_attrs[0].value
            serial = value if isinstance(value, str) else value.decode()
        return cls(
            key=supported_private_key(key),
            common_name=common_name(certificate),
            dns_names=tuple(dns_names(certificate)),
            serial_number=serial,
        )


@dataclass
class CaCertsResult:
    """``/cacerts``: every certificate returned, classified (roots, rollover, intermediates)."""

    certificates: list[x509.Certificate]
    ca_set: CaCertificateSet
    warnings: list[str] = field(default_factory=list)
    body_form: str = "base64"
    # Set by bootstrap: the certificate whose fingerprint confirmed the response.
    matched: x509.Certificate | None = None

    @property
    def roots(self) -> list[x509.Certificate]:
        return list(self.ca_set.roots)

    def to_pem(self) -> bytes:
        return certificates_to_pem(self.certificates)

    def describe(self) -> list[str]:
        return list(self.ca_set.describe())

    def to_json(self) -> dict[str, object]:
        return {
            "certificates": [_cert_json(cert) for cert in self.certificates],
            "classification": self.describe(),
            "current_root": (
                sha256_fingerprint(self.ca_set.current_root) if self.ca_set.current_root else None
            ),
            "body_form": self.body_form,
            "matched": sha256_fingerprint(self.matched) if self.matched else None,
            "warnings": list(self.warnings),
        }


@dataclass
class CsrAttrsResult:
    """``/csrattrs``: what the server wants in a CSR (``attrs`` empty when it has no wishes)."""

    attrs: CsrAttrs
    status: int
    warnings: list[str] = field(default_factory=list)

    @property
    def requires_pop(self) -> bool:
        return bool(self.attrs.requires_pop)

    @property
    def offers_tls_exporter(self) -> bool:
        """The server verifies tls-exporter PoP linking under TLS 1.3 (estkit extension)."""
        return bool(self.attrs.offers_tls_exporter)

    def describe(self) -> list[str]:
        return list(self.attrs.describe())

    def to_json(self) -> dict[str, object]:
        return {
            "status": self.status,
            "requires_pop": self.requires_pop,
            "offers_tls_exporter": self.offers_tls_exporter,
            "oids": [oid.dotted_string for oid in self.attrs.oids],
            "attributes": [
                {"oid": attr.oid.dotted_string, "values": [value.hex() for value in attr.values]}
                for attr in self.attrs.attributes
            ],
            "description": self.describe(),
            "requested_curve": self.attrs.requested_curve,
            "requested_rsa_bits": self.attrs.requested_rsa_bits,
            "requested_hash": self.attrs.requested_hash,
            "warnings": list(self.warnings),
        }


@dataclass
class EnrollResult:
    """``/simpleenroll`` or ``/simplereenroll``: the issued certificate and what came with it.

    ``chain`` holds the CA certificates that follow the leaf (issuer first) when known;
    ``private_key`` is the key the client used, when the client built the CSR.
    """

    certificate: x509.Certificate
    chain: list[x509.Certificate] = field(default_factory=list)
    private_key: PrivateKey | None = None
    warnings: list[str] = field(default_factory=list)
    attempts: int = 1
    pop_linked: bool = False
    notes: list[str] = field(default_factory=list)

    def certificate_pem(self) -> bytes:
        return certificates_to_pem([self.certificate])

    def fullchain_pem(self) -> bytes:
        """The certificate followed by its chain, as TLS servers and ``--out-cert`` want it."""
        return certificates_to_pem([self.certificate, *self.chain])

    def key_pem(self) -> bytes:
        if self.private_key is None:
            raise ValueError("this result holds no private key: the CSR was built by the caller")
        return private_key_to_pem(self.private_key)

    def to_json(self) -> dict[str, object]:
        return {
            "certificate": _cert_json(self.certificate),
            "chain": [_cert_json(cert) for cert in self.chain],
            "attempts": self.attempts,
            "pop_linked": self.pop_linked,
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }


@dataclass
class ServerKeygenResult:
    """``/serverkeygen``: the key the server generated and the certificate for it."""

    private_key: PrivateKey
    certificate: x509.Certificate
    chain: list[x509.Certificate] = field(default_factory=list)
    key_was_encrypted: bool = False
    key_media_type: str = ""
    warnings: list[str] = field(default_factory=list)
    attempts: int = 1
    notes: list[str] = field(default_factory=list)

    def key_pem(self) -> bytes:
        return private_key_to_pem(self.private_key)

    def fullchain_pem(self) -> bytes:
        return certificates_to_pem([self.certificate, *self.chain])

    def to_json(self) -> dict[str, object]:
        return {
            "certificate": _cert_json(self.certificate),
            "chain": [_cert_json(cert) for cert in self.chain],
            "key_was_encrypted": self.key_was_encrypted,
            "key_media_type": self.key_media_type,
            "attempts": self.attempts,
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }


def _cert_json(cert: x509.Certificate) -> dict[str, object]:
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "dns_names": dns_names(cert),
        "sha256": sha256_fingerprint(cert),
    }
