"""CSR attributes (``/csrattrs``): RFC 7030 §4.5.2 as corrected by RFC 8951 §4.

    CsrAttrs ::= SEQUENCE SIZE (0..MAX) OF AttrOrOID
    AttrOrOID ::= CHOICE { oid OBJECT IDENTIFIER, attribute Attribute }
    Attribute ::= SEQUENCE { type OBJECT IDENTIFIER, values SET SIZE (1..MAX) OF ANY }

Why asn1crypto: ``cryptography`` has no type for this structure. We keep attribute values as raw
DER so nothing a server sends is lost, and interpret only the few entries EST clients act on
(PoP, key type and size, hash, extensions). Trailing bytes after the SEQUENCE (some servers append
a NUL) are reported as a warning, not an error (checklist quirks).
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import core
from cryptography.x509.oid import ObjectIdentifier

from . import _asn1
from .encoding import der_length
from .errors import CsrAttrsError
from .limits import MAX_CSRATTRS_ITEMS

CHALLENGE_PASSWORD_OID = "1.2.840.113549.1.9.7"
EXTENSION_REQUEST_OID = "1.2.840.113549.1.9.14"
EC_PUBLIC_KEY_OID = "1.2.840.10045.2.1"
RSA_ENCRYPTION_OID = "1.2.840.113549.1.1.1"
# estkit extension (docs/tls13-pop.md): a server listing this OID in /csrattrs verifies a
# "tls-exporter:" + base64(RFC 9266 tls-exporter) challengePassword under TLS 1.3, so a client
# may link its CSR there instead of falling back to TLS 1.2 and tls-unique. A UUID OID (ITU-T
# X.667, arc 2.25): anyone may mint one without a registry, and it can never collide.
TLS_EXPORTER_POP_OID = "2.25.288640988034990119707516037133679034137"

CURVE_NAMES = {
    "1.2.840.10045.3.1.7": "secp256r1",
    "1.3.132.0.34": "secp384r1",
    "1.3.132.0.35": "secp521r1",
}

# Signature-algorithm and bare hash OIDs a server lists to ask for a hash (RFC 7030 §4.5.2).
HASH_OIDS = {
    "1.2.840.10045.4.3.1": "sha224",  # ecdsa-with-SHA224
    "1.2.840.10045.4.3.2": "sha256",  # ecdsa-with-SHA256
    "1.2.840.10045.4.3.3": "sha384",  # ecdsa-with-SHA384
    "1.2.840.10045.4.3.4": "sha512",  # ecdsa-with-SHA512
    "1.2.840.113549.1.1.14": "sha224",  # sha224WithRSAEncryption
    "1.2.840.113549.1.1.11": "sha256",  # sha256WithRSAEncryption
    "1.2.840.113549.1.1.12": "sha384",  # sha384WithRSAEncryption
    "1.2.840.113549.1.1.13": "sha512",  # sha512WithRSAEncryption
    "2.16.840.1.101.3.4.2.4": "sha224",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}

_OID_NAMES = {
    CHALLENGE_PASSWORD_OID: "challengePassword",
    EXTENSION_REQUEST_OID: "extensionRequest",
    EC_PUBLIC_KEY_OID: "id-ecPublicKey",
    RSA_ENCRYPTION_OID: "rsaEncryption",
    TLS_EXPORTER_POP_OID: "estkit-tls-exporter-pop",
    "1.2.840.10045.4.3.2": "ecdsa-with-SHA256",
    "1.2.840.10045.4.3.3": "ecdsa-with-SHA384",
    "1.2.840.10045.4.3.4": "ecdsa-with-SHA512",
    "1.2.840.113549.1.1.11": "sha256WithRSAEncryption",
    "1.2.840.113549.1.1.12": "sha384WithRSAEncryption",
    "1.2.840.113549.1.1.13": "sha512WithRSAEncryption",
    "1.3.6.1.1.1.1.22": "macAddress",
    "2.5.4.3": "commonName",
    "2.5.4.5": "serialNumber",
    "2.5.29.17": "subjectAltName",
    "2.5.29.37": "extKeyUsage",
    **CURVE_NAMES,
}


def oid_name(oid: ObjectIdentifier | str) -> str:
    """``"name (dotted)"`` for OIDs we know, the dotted string otherwise."""
    dotted = oid if isinstance(oid, str) else oid.dotted_string
    name = _OID_NAMES.get(dotted)
    return f"{name} ({dotted})" if name else dotted


_TAG_OCTET_STRING = 4


def extension_templates(der: bytes) -> list[tuple[str, bytes]]:
    """The filled-in entries of one extensionRequest ``Extensions`` template, as
    ``(dotted OID, extnValue contents)``; entries with an empty extnValue only name an extension
    the client must fill in itself and are left out."""
    found: list[tuple[str, bytes]] = []
    try:
        value = _asn1.Element(der)
        if not (value.is_universal(_asn1.TAG_SEQUENCE) and value.constructed):
            return found
        for extension in value.children():
            if not (extension.is_universal(_asn1.TAG_SEQUENCE) and extension.constructed):
                continue
            parts = extension.children()
            if len(parts) < 2 or not parts[0].is_universal(_asn1.TAG_OID):
                continue
            dotted = _value_oid(parts[0].der)
            octets = parts[-1]
            if dotted is not None and octets.is_universal(_TAG_OCTET_STRING) and octets.contents:
                found.append((dotted, octets.contents))
    except _asn1.ASN1_ERRORS:
        return found
    return found


@dataclass(frozen=True)
class CsrAttribute:
    """One ``Attribute`` of CsrAttrs: its OID and each value as DER."""

    oid: ObjectIdentifier
    values: tuple[bytes, ...]


def _value_oid(der: bytes) -> str | None:
    try:
        return _asn1.decode_oid(der)
    except _asn1.ASN1_ERRORS:
        return None


def _value_int(der: bytes) -> int | None:
    try:
        return _asn1.decode_integer(der)
    except _asn1.ASN1_ERRORS:
        return None


def _extension_ids(der: bytes) -> list[str]:
    """OIDs requested by one extensionRequest value: a bare OID (RFC 7030 example) or an
    ``Extensions`` SEQUENCE template (draft-ietf-lamps-rfc7030-csrattrs)."""
    single = _value_oid(der)
    if single is not None:
        return [single]
    found: list[str] = []
    try:
        value = _asn1.Element(der)
        if not (value.is_universal(_asn1.TAG_SEQUENCE) and value.constructed):
            return found
        for extension in value.children():
            if extension.is_universal(_asn1.TAG_SEQUENCE) and extension.constructed:
                parts = extension.children()
                if parts and parts[0].is_universal(_asn1.TAG_OID):
                    dotted = _value_oid(parts[0].der)
                    if dotted is not None:
                        found.append(dotted)
    except _asn1.ASN1_ERRORS:
        return found
    return found


@dataclass(frozen=True)
class CsrAttrs:
    """A decoded ``/csrattrs`` reply: bare OIDs and full attributes, each in received order."""

    oids: tuple[ObjectIdentifier, ...] = ()
    attributes: tuple[CsrAttribute, ...] = ()

    def _attribute(self, dotted: str) -> CsrAttribute | None:
        for attribute in self.attributes:
            if attribute.oid.dotted_string == dotted:
                return attribute
        return None

    @property
    def requires_pop(self) -> bool:
        """The server lists challengePassword: put base64(tls-unique) in the CSR (§3.5)."""
        return any(oid.dotted_string == CHALLENGE_PASSWORD_OID for oid in self.oids) or (
            self._attribute(CHALLENGE_PASSWORD_OID) is not None
        )

    @property
    def offers_tls_exporter(self) -> bool:
        """The server verifies a tls-exporter challengePassword under TLS 1.3 (estkit
        extension, :data:`TLS_EXPORTER_POP_OID`), listed as a bare OID or an attribute."""
        return any(oid.dotted_string == TLS_EXPORTER_POP_OID for oid in self.oids) or (
            self._attribute(TLS_EXPORTER_POP_OID) is not None
        )

    @property
    def requested_curve(self) -> str | None:
        """Curve name from an id-ecPublicKey attribute with a namedCurve value."""
        attribute = self._attribute(EC_PUBLIC_KEY_OID)
        if attribute is None:
            return None
        for value in attribute.values:
            dotted = _value_oid(value)
            if dotted is not None:
                return CURVE_NAMES.get(dotted, dotted)
        return None

    @property
    def requested_rsa_bits(self) -> int | None:
        """Key size from an rsaEncryption attribute with an INTEGER value."""
        attribute = self._attribute(RSA_ENCRYPTION_OID)
        if attribute is None:
            return None
        for value in attribute.values:
            bits = _value_int(value)
            if bits is not None:
                return bits
        return None

    @property
    def requested_hash(self) -> str | None:
        """``"sha384"`` etc. from a listed signature-algorithm or hash OID."""
        for oid in self.oids:
            name = HASH_OIDS.get(oid.dotted_string)
            if name is not None:
                return name
        return None

    @property
    def requested_extension_oids(self) -> tuple[ObjectIdentifier, ...]:
        """Extensions the server asks for via the extensionRequest attribute."""
        attribute = self._attribute(EXTENSION_REQUEST_OID)
        if attribute is None:
            return ()
        found: list[ObjectIdentifier] = []
        for value in attribute.values:
            found.extend(ObjectIdentifier(dotted) for dotted in _extension_ids(value))
        return tuple(found)

    def describe(self) -> list[str]:
        """One line per entry, for people (CLI output, conformance reports)."""
        if not self.oids and not self.attributes:
            return ["no attributes requested"]
        lines: list[str] = []
        for oid in self.oids:
            dotted = oid.dotted_string
            if dotted == CHALLENGE_PASSWORD_OID:
                lines.append(f"{oid_name(oid)}: proof-of-possession linking required (tls-unique)")
            elif dotted == TLS_EXPORTER_POP_OID:
                lines.append(
                    f"{oid_name(oid)}: the server verifies tls-exporter linking under TLS 1.3 "
                    "(estkit extension)"
                )
            elif dotted in HASH_OIDS:
                lines.append(f"{oid_name(oid)}: sign the CSR with {HASH_OIDS[dotted]}")
            else:
                lines.append(f"{oid_name(oid)}: include this in the CSR")
        for attribute in self.attributes:
            dotted = attribute.oid.dotted_string
            if dotted == EC_PUBLIC_KEY_OID and self.requested_curve:
                lines.append(f"{oid_name(attribute.oid)}: use an EC key on {self.requested_curve}")
            elif dotted == RSA_ENCRYPTION_OID and self.requested_rsa_bits:
                lines.append(f"{oid_name(attribute.oid)}: use a {self.requested_rsa_bits}-bit key")
            elif dotted == EXTENSION_REQUEST_OID:
                names = ", ".join(oid_name(o) for o in self.requested_extension_oids) or "(none)"
                lines.append(f"{oid_name(attribute.oid)}: include extension(s) {names}")
            else:
                values = ", ".join(_describe_value(v) for v in attribute.values)
                lines.append(f"{oid_name(attribute.oid)}: values {values}")
        return lines


def _describe_value(der: bytes) -> str:
    dotted = _value_oid(der)
    if dotted is not None:
        return oid_name(dotted)
    number = _value_int(der)
    if number is not None:
        return str(number)
    return der.hex() if len(der) <= 32 else der[:32].hex() + "..."


def encode_csrattrs(attrs: CsrAttrs) -> bytes:
    """DER CsrAttrs: bare OIDs first, then attributes (values sorted, as DER SET OF requires)."""
    items: list[core.Asn1Value] = [core.ObjectIdentifier(oid.dotted_string) for oid in attrs.oids]
    for attribute in attrs.attributes:
        if not attribute.values:
            raise CsrAttrsError(
                f"attribute {oid_name(attribute.oid)} has no values; RFC 8951 requires at least one"
            )
        try:
            items.append(
                _asn1.encode_attribute(attribute.oid.dotted_string, list(attribute.values))
            )
        except _asn1.ASN1_ERRORS as exc:
            raise CsrAttrsError(
                f"a value of attribute {oid_name(attribute.oid)} is not one DER element ({exc})"
            ) from None
    return bytes(_SequenceOfAny(items).dump(force=True))


class _SequenceOfAny(core.SequenceOf):  # type: ignore[misc]  # asn1crypto is untyped: base is Any
    _child_spec = core.Asn1Value


def _decode_items(der: bytes) -> tuple[list[ObjectIdentifier], list[CsrAttribute]]:
    outer = _asn1.Element(der)
    if not (outer.is_universal(_asn1.TAG_SEQUENCE) and outer.constructed):
        raise CsrAttrsError("CsrAttrs must be a SEQUENCE")
    items = outer.children()
    if len(items) > MAX_CSRATTRS_ITEMS:
        raise CsrAttrsError(
            f"CsrAttrs holds {len(items)} entries, over the limit of {MAX_CSRATTRS_ITEMS}"
        )
    oids: list[ObjectIdentifier] = []
    attributes: list[CsrAttribute] = []
    for position, item in enumerate(items, start=1):
        if item.is_universal(_asn1.TAG_OID) and not item.constructed:
            dotted = _asn1.decode_oid(item.der)
            if dotted is None:
                raise CsrAttrsError(f"entry {position} is not a valid OBJECT IDENTIFIER")
            oids.append(ObjectIdentifier(dotted))
        elif item.is_universal(_asn1.TAG_SEQUENCE) and item.constructed:
            dotted, values = _asn1.parse_attribute(item)
            if not values:
                raise CsrAttrsError(
                    f"attribute {oid_name(dotted)} has an empty value SET; RFC 8951 requires "
                    "at least one value"
                )
            attributes.append(CsrAttribute(ObjectIdentifier(dotted), tuple(values)))
        else:
            raise CsrAttrsError(
                f"entry {position} has tag {item.tag} (class {item.class_}); each entry must be "
                "an OBJECT IDENTIFIER or an Attribute SEQUENCE"
            )
    return oids, attributes


def decode_csrattrs(der: bytes) -> tuple[CsrAttrs, list[str]]:
    """Decode DER CsrAttrs; returns ``(attrs, warnings)``. An empty SEQUENCE is valid."""
    der = bytes(der)
    warnings: list[str] = []
    if not der:
        raise CsrAttrsError(
            "the CsrAttrs body is empty; a server with no attributes answers 204 or an empty "
            "SEQUENCE (30 00)"
        )
    total = der_length(der)
    if total is None:
        raise CsrAttrsError(
            f"CsrAttrs must be a DER SEQUENCE (first byte 0x30), got 0x{der[:2].hex()}; "
            "see RFC 8951 §4"
        )
    if total > len(der):
        raise CsrAttrsError(
            f"CsrAttrs is truncated: the SEQUENCE announces {total} bytes, only {len(der)} arrived"
        )
    if total < len(der):
        trailing = der[total:]
        shown = trailing[:8].hex(" ")
        more = "..." if len(trailing) > 8 else ""
        warnings.append(
            f"ignored {len(trailing)} trailing byte(s) (0x{shown}{more}) after CsrAttrs"
        )
        der = der[:total]
    try:
        oids, attributes = _decode_items(der)
    except CsrAttrsError:
        raise
    except _asn1.ASN1_ERRORS as exc:
        raise CsrAttrsError(
            f"CsrAttrs is not valid DER ({exc}); expected SEQUENCE OF (OID | Attribute) as in "
            "RFC 8951 §4"
        ) from None
    return CsrAttrs(tuple(oids), tuple(attributes)), warnings


__all__ = [
    "CHALLENGE_PASSWORD_OID",
    "CURVE_NAMES",
    "EC_PUBLIC_KEY_OID",
    "EXTENSION_REQUEST_OID",
    "HASH_OIDS",
    "RSA_ENCRYPTION_OID",
    "TLS_EXPORTER_POP_OID",
    "CsrAttribute",
    "CsrAttrs",
    "decode_csrattrs",
    "encode_csrattrs",
    "extension_templates",
    "oid_name",
]
