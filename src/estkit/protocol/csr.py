"""PKCS#10 certificate requests (RFC 2986) as EST carries them (RFC 7030 §4.2).

Why verify the signature ourselves for MD5/SHA-1: ``cryptography`` reports such signatures as
invalid, which would make a weak-hash CSR indistinguishable from a forged one. We check them with
the same primitives so the request parses, and :func:`check_csr_policy` then refuses it naming the
hash, which is the message a device vendor needs.
"""

from __future__ import annotations

import hashlib
import ipaddress
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import AttributeOID, NameOID, ObjectIdentifier

from . import _asn1
from .encoding import decode_body, encode_base64_body
from .errors import CsrError, CsrPolicyError, EncodingError
from .keys import (
    KeyInfo,
    PrivateKey,
    PublicKey,
    SignatureHash,
    describe_public_key,
    signature_hash_for,
    supported_public_key,
)
from .limits import ALLOWED_CURVES, ALLOWED_SIGNATURE_HASHES, MIN_RSA_BITS

# Hashes that no profile may use to *create* a request (RFC 6151, RFC 9155).
FORBIDDEN_BUILD_HASHES = ("md5", "sha1")
_LEGACY_VERIFY_HASHES = (hashes.MD5, hashes.SHA1)
# SHA-256 and up only: SHA-224 is below what BCP-003-01 and the issue ask for.
_HASHES_BY_NAME: dict[str, type[SignatureHash]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
# Universal tags that cryptography can write as CSR attribute values (see its _ASN1Type).
_WRITABLE_TAGS = {member.value: member for member in _ASN1Type}
_PRINTABLE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?")
_CRITICAL_EXTENSIONS = (x509.BasicConstraints, x509.KeyUsage)
# The hashes cryptography signs a CSR with (what its ``sign`` accepts).
_SigningHash: TypeAlias = (
    hashes.SHA224
    | hashes.SHA256
    | hashes.SHA384
    | hashes.SHA512
    | hashes.SHA3_224
    | hashes.SHA3_256
    | hashes.SHA3_384
    | hashes.SHA3_512
)
_SIGNING_HASHES = (
    hashes.SHA224,
    hashes.SHA256,
    hashes.SHA384,
    hashes.SHA512,
    hashes.SHA3_224,
    hashes.SHA3_256,
    hashes.SHA3_384,
    hashes.SHA3_512,
)
# X.520 ub-common-name (RFC 5280 Appendix A): a commonName longer than 64 characters cannot be
# encoded in a conforming certificate, so a request for one is refused, not truncated.
MAX_COMMON_NAME_LENGTH = 64
# A subject names one entity: a second CN is how a request smuggles a name past a policy that
# reads only the first one (issue 24, row 1).
MAX_COMMON_NAMES = 1
# How much of a refused name a message quotes: enough to recognise it, not 5000 characters.
SHOWN_NAME_CHARACTERS = 80


def _hash_from(hash_algorithm: hashes.HashAlgorithm | str | None, key: PrivateKey) -> _SigningHash:
    if hash_algorithm is None:
        return signature_hash_for(key)
    name = hash_algorithm if isinstance(hash_algorithm, str) else hash_algorithm.name
    name = name.lower().replace("-", "")
    if name in FORBIDDEN_BUILD_HASHES:
        raise CsrPolicyError(
            f"refusing to sign a CSR with {name.upper()}: it is broken for signatures; "
            f"use one of {', '.join(ALLOWED_SIGNATURE_HASHES)}"
        )
    if isinstance(hash_algorithm, _SIGNING_HASHES):
        return hash_algorithm
    if isinstance(hash_algorithm, hashes.HashAlgorithm):  # cryptography's own refusal, earlier
        raise UnsupportedAlgorithm(
            f'Hash algorithm "{hash_algorithm.name}" not supported for signatures'
        )
    if name not in _HASHES_BY_NAME:
        raise ValueError(
            f"unknown hash {hash_algorithm!r}; use one of {', '.join(sorted(_HASHES_BY_NAME))}"
        )
    return _HASHES_BY_NAME[name]()


def _attribute_args(value_der: bytes) -> tuple[bytes, _ASN1Type]:
    """Split a DER attribute value into what ``add_attribute`` accepts (contents + tag)."""
    try:
        header = _asn1.primitive_header(value_der)
    except _asn1.ASN1_ERRORS:
        header = None
    if header is None or header[0] not in _WRITABLE_TAGS:
        raise ValueError(
            "extra CSR attribute values must be the DER of one primitive string-like value "
            "(OCTET STRING, UTF8String, PrintableString, IA5String, ...), because cryptography "
            f"can only write those; got {value_der[:8].hex()}..."
        )
    return header[1], _WRITABLE_TAGS[header[0]]


def build_csr(
    key: PrivateKey,
    *,
    common_name: str | None,
    dns_names: Sequence[str] = (),
    serial_number: str | None = None,
    challenge_password: str | None = None,
    extra_attributes: Sequence[tuple[ObjectIdentifier, bytes]] = (),
    extensions: Sequence[x509.ExtensionType] = (),
    hash_algorithm: hashes.HashAlgorithm | str | None = None,
) -> x509.CertificateSigningRequest:
    """Build and sign a CSR.

    ``serial_number`` becomes the subject ``serialNumber`` attribute (BCP-003-03 device identity).
    ``challenge_password`` is the RFC 7030 §3.5 PoP value. ``extra_attributes`` are
    ``(oid, DER value)`` pairs (e.g. AsymmetricDecryptKeyIdentifier as a DER OCTET STRING).
    The hash defaults to :func:`signature_hash_for`; MD5 and SHA-1 raise :class:`CsrPolicyError`.
    """
    algorithm = _hash_from(hash_algorithm, key)
    names: list[x509.NameAttribute[str]] = []
    if common_name is not None:
        names.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    if serial_number is not None:
        names.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names))
    if dns_names:
        if any(isinstance(ext, x509.SubjectAlternativeName) for ext in extensions):
            raise ValueError("give DNS names either as dns_names or as a SAN extension, not both")
        # RFC 5280 §4.2.1.6: the SAN must be critical when the subject is empty.
        san = x509.SubjectAlternativeName([x509.DNSName(name) for name in dns_names])
        builder = builder.add_extension(san, critical=not names)
    for extension in extensions:
        critical = isinstance(extension, _CRITICAL_EXTENSIONS) or (
            isinstance(extension, x509.SubjectAlternativeName) and not names
        )
        builder = builder.add_extension(extension, critical=critical)
    if challenge_password is not None:
        # RFC 2985 §5.4.1: DirectoryString, PrintableString preferred when it fits (base64 does).
        tag = (
            _ASN1Type.PrintableString
            if set(challenge_password) <= _PRINTABLE
            else _ASN1Type.UTF8String
        )
        builder = builder.add_attribute(
            AttributeOID.CHALLENGE_PASSWORD, challenge_password.encode("utf-8"), _tag=tag
        )
    for oid, value_der in extra_attributes:
        contents, tag = _attribute_args(value_der)
        builder = builder.add_attribute(oid, contents, _tag=tag)
    return builder.sign(key, algorithm)


def _signature_algorithm_name(csr: x509.CertificateSigningRequest) -> str:
    oid = csr.signature_algorithm_oid
    name = getattr(oid, "_name", None)
    return f"{name} ({oid.dotted_string})" if name and name != "Unknown OID" else oid.dotted_string


def _legacy_signature_valid(
    csr: x509.CertificateSigningRequest, algorithm: hashes.HashAlgorithm
) -> bool:
    """Verify an MD5/SHA-1 signature that ``cryptography`` declines to check."""
    public_key = csr.public_key()
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(
                csr.signature, csr.tbs_certrequest_bytes, padding.PKCS1v15(), algorithm
            )
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(csr.signature, csr.tbs_certrequest_bytes, ec.ECDSA(algorithm))
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _hash_name(csr: x509.CertificateSigningRequest) -> str | None:
    try:
        algorithm = csr.signature_hash_algorithm
    except (UnsupportedAlgorithm, ValueError):
        return None
    return algorithm.name.lower() if algorithm is not None else None


# Verdicts of recent self-signature checks: the server checks a CSR when it parses the body and
# again when it describes it for the policy (each ~0.1 ms of CPU, ~3% of an enrollment). The key
# is everything the verdict depends on (algorithm, signed bytes, signature), so a CSR that differs
# in any of them is checked afresh. Bounded: a flood of distinct CSRs only evicts old entries.
# A SHA-256 digest keeps each entry at 32 bytes whatever the CSR's size.
_SIGNATURE_VERDICTS: dict[bytes, bool] = {}
MAX_SIGNATURE_VERDICTS = 256


def _signature_valid(csr: x509.CertificateSigningRequest) -> bool:
    """Whether the CSR's self-signature verifies (MD5/SHA-1 too, see the module note)."""
    digest = hashlib.sha256(csr.signature_algorithm_oid.dotted_string.encode())
    digest.update(len(csr.tbs_certrequest_bytes).to_bytes(4, "big"))
    digest.update(csr.tbs_certrequest_bytes)
    digest.update(csr.signature)
    key = digest.digest()
    verdict = _SIGNATURE_VERDICTS.get(key)
    if verdict is None:
        verdict = _verify_signature(csr)
        if len(_SIGNATURE_VERDICTS) >= MAX_SIGNATURE_VERDICTS:
            _SIGNATURE_VERDICTS.clear()
        _SIGNATURE_VERDICTS[key] = verdict
    return verdict


def _verify_signature(csr: x509.CertificateSigningRequest) -> bool:
    try:
        valid = csr.is_signature_valid
        algorithm = None if valid else csr.signature_hash_algorithm
    except (UnsupportedAlgorithm, ValueError, TypeError) as exc:
        raise CsrPolicyError(
            f"the CSR is signed with {_signature_algorithm_name(csr)}, which cannot be checked "
            f"({exc}); sign it with ECDSA or RSA and one of "
            f"{', '.join(ALLOWED_SIGNATURE_HASHES)}"
        ) from None
    if not valid and isinstance(algorithm, _LEGACY_VERIFY_HASHES):
        valid = _legacy_signature_valid(csr, algorithm)
    return valid


def _signature_checkable_and_valid(csr: x509.CertificateSigningRequest) -> bool:
    # An unknown algorithm is reported by check_csr_policy, naming it; here it is just "not valid".
    try:
        return _signature_valid(csr)
    except CsrPolicyError:
        return False


_BAD_SIGNATURE = (
    "CSR signature does not verify with its own public key; the request was altered "
    "or signed with another key: rebuild it with the matching private key"
)


def parse_csr(der: bytes) -> x509.CertificateSigningRequest:
    """Parse a DER CSR and verify its self-signature (proof the requester holds the key)."""
    csr = _asn1.read_x509(
        x509.load_der_x509_csr,
        der,
        CsrError,
        "the body is not a valid PKCS#10 CSR",
        "; send the DER CertificationRequest, base64-encoded",
    )
    if not _signature_valid(csr):
        raise CsrError(_BAD_SIGNATURE)
    return csr


def decode_csr_body(body: bytes) -> x509.CertificateSigningRequest:
    """A CSR from an EST body: base64 (RFC 8951), PEM or raw DER."""
    der, _form = decode_body(body)
    return parse_csr(der)


def encode_csr_body(csr: x509.CertificateSigningRequest) -> bytes:
    """base64 of the DER CSR, wrapped at 64 columns (the ``application/pkcs10`` body)."""
    return encode_base64_body(csr.public_bytes(serialization.Encoding.DER))


@dataclass(frozen=True)
class CsrInfo:
    """A CSR read once: every name, the key, PoP value and signature facts, as plain values.

    This is the one normalized view of a request that policy (``check_csr_policy``, the CA's
    ``vet_names``), logs and the approval queue look at; nothing downstream reads the CSR again.
    ``common_name`` is the first of ``common_names`` (kept for callers that want one name).
    """

    subject: x509.Name
    common_name: str | None
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    serial_number: str | None
    key: KeyInfo
    signature_hash: str | None
    challenge_password: str | None
    public_key_sha256: str
    # estkit addition: the signature algorithm for messages ("ecdsa-with-SHA256 (1.2.840...)").
    signature_algorithm: str | None = None
    # Every CN of the subject, in order (a hostile CSR may carry several).
    common_names: tuple[str, ...] = ()
    # Every subject attribute as (attribute name, text), in order; bytes values as hex.
    subject_attributes: tuple[tuple[str, str], ...] = ()
    # SAN entries of other types (e-mail, URI, otherName, ...) as "type:value"; never issued.
    other_names: tuple[str, ...] = ()
    # Dotted OIDs of the extensions the CSR's extensionRequest asks for.
    extensions: tuple[str, ...] = ()
    signature_valid: bool = True
    public_key: PublicKey | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.common_names and self.common_name is not None:
            object.__setattr__(self, "common_names", (self.common_name,))
        first = self.common_names[0] if self.common_names else None
        if self.common_name != first:
            raise ValueError("common_name must be the first of common_names")


def _first_text(name: x509.Name, oid: ObjectIdentifier) -> str | None:
    attrs = name.get_attributes_for_oid(oid)
    if not attrs:
        return None
    return _text(attrs[0].value)


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else bytes(value).hex()


def _attribute_name(oid: ObjectIdentifier) -> str:
    name = getattr(oid, "_name", None)
    return name if name and name != "Unknown OID" else oid.dotted_string


def shown_name(name: str, *, with_length: bool = True) -> str:
    """A name for a message: quoted with control characters escaped, long ones cut short (and
    their length said, unless the message says it anyway)."""
    if len(name) <= SHOWN_NAME_CHARACTERS:
        return repr(name)
    length = f" ({len(name)} characters)" if with_length else ""
    return f"{name[:SHOWN_NAME_CHARACTERS]!r}...{length}"


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot appear in an issued name (control or format characters), or None.

    Unicode categories C* (controls such as NUL, format characters such as bidi overrides,
    surrogates, unassigned) and line/paragraph separators make a name display as something it
    is not; no host name or device name needs them.
    """
    for index, char in enumerate(name):
        category = unicodedata.category(char)
        if category.startswith("C") or category in ("Zl", "Zp"):
            return f"character U+{ord(char):04X} at position {index + 1} is a control character"
    return None


def csr_attribute_values(csr: x509.CertificateSigningRequest) -> dict[str, list[bytes]]:
    """Every CSR attribute as ``{dotted OID: [DER value, ...]}``, any ASN.1 type allowed."""
    try:
        return dict(_asn1.csr_attributes(csr.tbs_certrequest_bytes))
    except _asn1.ASN1_ERRORS as exc:
        raise CsrError(f"the CSR attributes cannot be read ({exc})") from None


# DER of the challengePassword OID: when these bytes are absent the attribute cannot be present,
# which spares the attribute walk (~60 us) for the common CSR without PoP.
_CHALLENGE_PASSWORD_OID_DER = bytes.fromhex("06092a864886f70d010907")


def _challenge_password(csr: x509.CertificateSigningRequest) -> str | None:
    if _CHALLENGE_PASSWORD_OID_DER not in csr.tbs_certrequest_bytes:
        return None
    values = csr_attribute_values(csr).get(AttributeOID.CHALLENGE_PASSWORD.dotted_string)
    if not values:
        return None
    try:
        text = _asn1.decode_string_value(values[0])
    except _asn1.ASN1_ERRORS:
        text = None
    if text is None:
        raise CsrError(
            "the CSR's challengePassword is not a string; it must be a DirectoryString "
            "holding base64(tls-unique) (RFC 7030 §3.5)"
        )
    return text


def describe_csr(csr: x509.CertificateSigningRequest) -> CsrInfo:
    """Read every part of ``csr`` once; raises :class:`CsrError` for malformed parts."""
    try:
        subject = csr.subject
        extensions = csr.extensions
        public_key = csr.public_key()
        attributes = tuple((_attribute_name(a.oid), _text(a.value)) for a in subject)
    except (
        ValueError,
        UnsupportedAlgorithm,
        x509.DuplicateExtension,
        x509.UnsupportedGeneralNameType,
    ) as exc:
        raise CsrError(f"the CSR cannot be read ({exc}); rebuild it with a standard tool") from None
    try:
        key = describe_public_key(public_key)
    except EncodingError as exc:
        raise CsrPolicyError(str(exc)) from None
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    others: list[str] = []
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        pass
    else:
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
        for general_name in san:
            if not isinstance(general_name, (x509.DNSName, x509.IPAddress)):
                kind = type(general_name).__name__
                others.append(f"{kind}:{getattr(general_name, 'value', '')}")
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    common_names = tuple(
        _text(a.value) for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    )
    return CsrInfo(
        subject=subject,
        common_name=common_names[0] if common_names else None,
        dns_names=dns,
        ip_addresses=ips,
        serial_number=_first_text(subject, NameOID.SERIAL_NUMBER),
        key=key,
        signature_hash=_hash_name(csr),
        challenge_password=_challenge_password(csr),
        public_key_sha256=hashlib.sha256(spki).hexdigest(),
        signature_algorithm=_signature_algorithm_name(csr),
        common_names=common_names,
        subject_attributes=attributes,
        other_names=tuple(others),
        extensions=tuple(ext.oid.dotted_string for ext in extensions),
        signature_valid=_signature_checkable_and_valid(csr),
        public_key=supported_public_key(public_key),  # RSA or EC: described above
    )


@dataclass(frozen=True)
class CsrPolicy:
    """What a label accepts. Defaults follow BCP-003-01 and the CA/B Forum baseline."""

    key_families: frozenset[str] = field(default_factory=lambda: frozenset({"rsa", "ec"}))
    min_rsa_bits: int = MIN_RSA_BITS
    curves: tuple[str, ...] = ALLOWED_CURVES
    hashes: tuple[str, ...] = ALLOWED_SIGNATURE_HASHES
    allow_wildcards: bool = False
    allow_ip_addresses: bool = False
    require_name: bool = True


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_csr_policy(info: CsrInfo, policy: CsrPolicy) -> None:
    """Raise :class:`CsrPolicyError` with the first reason ``info`` breaks ``policy``."""
    family_names = {"rsa": "RSA", "ec": "ECDSA"}
    if info.key.family not in policy.key_families:
        allowed = ", ".join(family_names.get(f, f) for f in sorted(policy.key_families))
        raise CsrPolicyError(
            f"{family_names.get(info.key.family, info.key.family)} keys are not accepted here; "
            f"use one of: {allowed}"
        )
    if info.key.family == "rsa" and info.key.size < policy.min_rsa_bits:
        raise CsrPolicyError(
            f"RSA key of {info.key.size} bits is too small: at least {policy.min_rsa_bits} "
            "bits required"
        )
    if info.key.family == "ec" and info.key.curve not in policy.curves:
        raise CsrPolicyError(
            f"elliptic curve {info.key.curve} is not accepted: use one of "
            f"{', '.join(policy.curves)}"
        )
    if info.signature_hash is None or info.signature_hash not in policy.hashes:
        found = info.signature_hash or info.signature_algorithm or "an unknown algorithm"
        raise CsrPolicyError(
            f"CSR signature hash {found} is not accepted: sign the CSR with one of "
            f"{', '.join(policy.hashes)}"
        )
    if len(info.common_names) > MAX_COMMON_NAMES:
        shown = ", ".join(shown_name(name) for name in info.common_names)
        raise CsrPolicyError(
            f"the CSR subject has {len(info.common_names)} common names ({shown}); a certificate "
            "names one entity: send exactly one CN and put further host names in the "
            "subjectAltName"
        )
    for common_name in info.common_names:
        if len(common_name) > MAX_COMMON_NAME_LENGTH:
            raise CsrPolicyError(
                f"the common name {shown_name(common_name, with_length=False)} is "
                f"{len(common_name)} characters "
                f"long; at most {MAX_COMMON_NAME_LENGTH} fit in a certificate (RFC 5280 "
                "ub-common-name): use the host name"
            )
    for name in (*info.common_names, *info.dns_names):
        problem = name_problem(name)
        if problem is not None:
            raise CsrPolicyError(
                f"the name {shown_name(name)} is refused: {problem}; names must be printable "
                "host or device names"
            )
    names = [*info.dns_names, *info.common_names]
    if not policy.allow_wildcards:
        wild = [name for name in names if "*" in name]
        if wild:
            raise CsrPolicyError(
                f"wildcard name {shown_name(wild[0])} is not allowed: request each host name "
                "explicitly"
            )
    if not policy.allow_ip_addresses:
        if info.ip_addresses:
            raise CsrPolicyError(
                f"IP address {info.ip_addresses[0]} in subjectAltName is not allowed: use DNS names"
            )
        for common_name in info.common_names:
            if _is_ip(common_name):
                raise CsrPolicyError(
                    f"IP address {common_name} as common name is not allowed: use a DNS name"
                )
    if policy.require_name and not info.common_names and not info.dns_names:
        raise CsrPolicyError(
            "the CSR has neither a common name nor a DNS subjectAltName: add the host name"
        )


__all__ = [
    "FORBIDDEN_BUILD_HASHES",
    "MAX_COMMON_NAME_LENGTH",
    "CsrInfo",
    "CsrPolicy",
    "build_csr",
    "check_csr_policy",
    "csr_attribute_values",
    "decode_csr_body",
    "describe_csr",
    "encode_csr_body",
    "name_problem",
    "parse_csr",
    "shown_name",
]
