"""Server-side key generation (RFC 7030 §4.4): the CSR attributes that ask for an encrypted key,
the ``multipart/mixed`` reply, and the CMS EnvelopedData holding an encrypted key.

Why a small hand-written multipart parser instead of the stdlib ``email`` package: ``email``
parses *messages* (it needs synthesised headers, works on ``str`` with surrogate escapes, and
never fails: malformed input just becomes "defects"). We need bytes in, precise errors out, and
binary parts kept byte-exact; splitting on the boundary delimiter (RFC 2046 §5.1.1) is a short
regular expression. Each part's content is decoded by :func:`decode_body`, which ignores
Content-Transfer-Encoding as RFC 8951 §3 requires and accepts base64, PEM or binary DER.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from asn1crypto import core
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7 as _pkcs7
from cryptography.x509.oid import ObjectIdentifier

from . import _asn1
from .cms_kari import SUPPORTED_CURVES, envelope_for_ec_recipient, is_ec_recipient, open_ec_envelope
from .csr import csr_attribute_values
from .encoding import decode_body, encode_base64_body
from .errors import CsrError, EncodingError, EstProtocolError, MultipartError, Pkcs7Error
from .keys import PrivateKey, load_private_key
from .limits import MAX_BOUNDARY_LENGTH
from .media import (
    MULTIPART_MIXED,
    PKCS7_CERTS_ONLY,
    PKCS7_MIME,
    PKCS8,
    SERVER_GENERATED_KEY,
    MediaType,
    parse_media_type,
)
from .pkcs7 import build_certs_only, decode_certs_only_body

# RFC 4108 §2.2.5 / RFC 7030 §4.4.1.1: symmetric key identifier (id-aa-decryptKeyID).
DECRYPT_KEY_IDENTIFIER = ObjectIdentifier("1.2.840.113549.1.9.16.2.37")
# RFC 7030 §4.4.1.2: asymmetric key identifier (id-aa-asymmDecryptKeyID), the recipient's SKI.
ASYMMETRIC_DECRYPT_KEY_IDENTIFIER = ObjectIdentifier("1.2.840.113549.1.9.16.2.54")

_CRLF = b"\r\n"
_BOUNDARY_RE = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]*[0-9A-Za-z'()+_,\-./:=?]")
_HEADER_END_RE = re.compile(rb"\r?\n\r?\n")
_MAX_PARTS = 8  # a reply has 2 parts; anything past a handful is not an EST reply.
_TAG_INTEGER = 2
_TAG_OCTET_STRING = 4


@dataclass(frozen=True)
class KeyEncryptionRequest:
    """How the client asked the server to encrypt the generated key."""

    kind: Literal["symmetric", "asymmetric"]
    identifier: bytes


def key_encryption_attribute(
    kind: Literal["symmetric", "asymmetric"], identifier: bytes
) -> tuple[ObjectIdentifier, bytes]:
    """The ``(oid, DER value)`` pair for :func:`estkit.protocol.build_csr`'s ``extra_attributes``.

    For ``"asymmetric"`` the identifier is the SubjectKeyIdentifier of the client certificate
    whose RSA or EC key should receive the encrypted private key.
    """
    oid = ASYMMETRIC_DECRYPT_KEY_IDENTIFIER if kind == "asymmetric" else DECRYPT_KEY_IDENTIFIER
    return oid, bytes(core.OctetString(identifier).dump())


def key_encryption_request(csr: x509.CertificateSigningRequest) -> KeyEncryptionRequest | None:
    """The DecryptKeyIdentifier / AsymmetricDecryptKeyIdentifier attribute of a CSR, if any."""
    attributes = csr_attribute_values(csr)
    kinds: tuple[tuple[ObjectIdentifier, Literal["symmetric", "asymmetric"]], ...] = (
        (ASYMMETRIC_DECRYPT_KEY_IDENTIFIER, "asymmetric"),
        (DECRYPT_KEY_IDENTIFIER, "symmetric"),
    )
    for oid, kind in kinds:
        values = attributes.get(oid.dotted_string)
        if not values:
            continue
        try:
            identifier = _asn1.decode_octet_string(values[0])
        except _asn1.ASN1_ERRORS:
            identifier = None
        if identifier is None:
            raise CsrError(
                f"the CSR's {kind} key identifier attribute ({oid.dotted_string}) is not an "
                "OCTET STRING; it must hold the key identifier (RFC 7030 §4.4.1)"
            )
        return KeyEncryptionRequest(kind, identifier)
    return None


def _part(media_type: str, der: bytes) -> bytes:
    content = encode_base64_body(der).replace(b"\n", _CRLF)
    return (
        f"Content-Type: {media_type}\r\nContent-Transfer-Encoding: base64\r\n\r\n".encode("ascii")
        + content
    )


def build_serverkeygen_response(
    key_part: bytes, key_media_type: str, certificates: Iterable[x509.Certificate]
) -> tuple[bytes, str]:
    """The ``multipart/mixed`` body (key part, then certs-only part) and its Content-Type.

    Both parts are base64 with ``Content-Transfer-Encoding: base64`` (harmless for RFC 8951
    clients, required by older ones); line ends are CRLF as RFC 2046 prescribes.
    """
    boundary = f"estkit-{secrets.token_hex(16)}"
    delimiter = b"--" + boundary.encode("ascii")
    body = b"".join(
        [
            delimiter + _CRLF,
            _part(key_media_type, key_part),
            delimiter + _CRLF,
            _part(PKCS7_CERTS_ONLY, build_certs_only(certificates)),
            delimiter + b"--" + _CRLF,
        ]
    )
    return body, f"{MULTIPART_MIXED}; boundary={boundary}"


@dataclass
class ServerKeygenResult:
    """A parsed ``/serverkeygen`` reply."""

    private_key: PrivateKey | None
    key_der: bytes
    key_media_type: str
    encrypted: bool
    certificates: list[x509.Certificate]
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Part:
    media_type: MediaType | None
    content: bytes
    number: int


def _parse_headers(raw: bytes, number: int) -> dict[str, str]:
    headers: dict[str, str] = {}
    last: str | None = None
    for line in raw.decode("latin-1").splitlines():
        if not line.strip():
            continue
        if line[0] in " \t" and last is not None:  # obsolete folding (RFC 5322 §2.2.3)
            headers[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise MultipartError(
                f"part {number} has a malformed header line {line[:80]!r}; expected 'Name: value'"
            )
        last = name.strip().lower()
        headers[last] = value.strip()
    return headers


def _split_parts(body: bytes, boundary: str) -> list[_Part]:
    delimiter = re.escape(b"--" + boundary.encode("latin-1"))
    pattern = re.compile(rb"(?:^|\r?\n)" + delimiter + rb"(--)?[ \t]*(?:\r?\n|$)")
    matches = list(pattern.finditer(body))
    if not matches:
        raise MultipartError(
            f"the body contains no '--{boundary}' delimiter; the multipart boundary in the "
            "Content-Type does not match the body"
        )
    parts: list[_Part] = []
    for index, match in enumerate(matches):
        if match.group(1):  # close delimiter: the epilogue after it is ignored
            break
        end = matches[index + 1].start() if index + 1 < len(matches) else len(body)
        raw = body[match.end() : end]
        number = len(parts) + 1
        if number > _MAX_PARTS:
            raise MultipartError(f"the reply has more than {_MAX_PARTS} parts; expected 2")
        if raw.startswith(b"\r\n") or raw.startswith(b"\n"):
            header_bytes, content = b"", raw.split(b"\n", 1)[1]
        else:
            split = _HEADER_END_RE.search(raw)
            if split is None:
                raise MultipartError(
                    f"part {number} has no blank line between its headers and its content"
                )
            header_bytes, content = raw[: split.start()], raw[split.end() :]
        headers = _parse_headers(header_bytes, number)
        media_type = None
        if "content-type" in headers:
            media_type = parse_media_type(headers["content-type"])
        parts.append(_Part(media_type, content, number))
    return parts


def _is_certs_part(part: _Part) -> bool:
    return part.media_type is not None and part.media_type.matches(PKCS7_CERTS_ONLY)


def _is_encrypted_key_part(part: _Part) -> bool:
    return part.media_type is not None and part.media_type.matches(SERVER_GENERATED_KEY)


def _is_key_part(part: _Part) -> bool:
    return part.media_type is not None and (
        part.media_type.matches(PKCS8) or _is_encrypted_key_part(part)
    )


def _key_format(der: bytes) -> str:
    """Which private-key syntax ``der`` is, judged by the second element of its SEQUENCE."""
    try:
        children = _asn1.Element(der).children()
    except _asn1.ASN1_ERRORS:
        return "unknown"
    if len(children) < 2:
        return "unknown"
    second = children[1]
    if second.is_universal(_asn1.TAG_SEQUENCE):
        return "PKCS#8"
    if second.is_universal(_TAG_INTEGER):
        return "PKCS#1 RSAPrivateKey"
    if second.is_universal(_TAG_OCTET_STRING):
        return "SEC1 ECPrivateKey"
    return "unknown"


def _assign_parts(parts: list[_Part], warnings: list[str]) -> tuple[_Part, _Part]:
    """Pick the key part and the certificate part, tolerating missing Content-Type headers."""
    key_parts = [p for p in parts if _is_key_part(p)]
    cert_parts = [p for p in parts if _is_certs_part(p)]
    unlabelled = [p for p in parts if p not in key_parts and p not in cert_parts]
    for part in unlabelled:
        label = str(part.media_type) if part.media_type else "no Content-Type"
        try:
            decode_certs_only_body(part.content)
        except EstProtocolError:
            key_parts.append(part)
            warnings.append(f"part {part.number} ({label}) was taken as the private key")
        else:
            cert_parts.append(part)
            warnings.append(f"part {part.number} ({label}) was taken as the certificate")
    if len(key_parts) != 1 or len(cert_parts) != 1:
        raise MultipartError(
            f"expected one private-key part and one certificate part, found {len(key_parts)} "
            f"key part(s) and {len(cert_parts)} certificate part(s) among {len(parts)} part(s); "
            f"key parts are {PKCS8} or {SERVER_GENERATED_KEY}, certificates {PKCS7_CERTS_ONLY}"
        )
    return key_parts[0], cert_parts[0]


def parse_serverkeygen_response(body: bytes, content_type: str) -> ServerKeygenResult:
    """Parse a ``/serverkeygen`` reply into the key, the certificate(s) and any warnings.

    Tolerates LF or CRLF line ends, missing Content-Transfer-Encoding, binary or base64 parts and
    a PKCS#1 RSA key labelled ``application/pkcs8`` (with a warning). An encrypted key part
    (``smime-type=server-generated-key``) is returned as ``key_der`` with ``private_key=None``.
    """
    media_type = parse_media_type(content_type)
    if media_type.essence != MULTIPART_MIXED:
        raise MultipartError(
            f"a /serverkeygen reply must be {MULTIPART_MIXED}, got {media_type.essence}"
        )
    boundary = media_type.param("boundary")
    if not boundary or len(boundary) > MAX_BOUNDARY_LENGTH or not _BOUNDARY_RE.fullmatch(boundary):
        raise MultipartError(
            f"the multipart Content-Type has no valid boundary parameter (got {boundary!r}); "
            f"a boundary is 1-{MAX_BOUNDARY_LENGTH} characters (RFC 2046 §5.1.1)"
        )
    warnings: list[str] = []
    parts = _split_parts(bytes(body), boundary)
    key_part, cert_part = _assign_parts(parts, warnings)
    certificates = decode_certs_only_body(cert_part.content)
    key_der, _form = decode_body(key_part.content)
    key_media = str(key_part.media_type) if key_part.media_type else PKCS8
    if key_part.media_type is not None and key_part.media_type.essence == PKCS7_MIME:
        if not _is_encrypted_key_part(key_part):
            warnings.append(
                f"the key part is labelled {key_media}; taken as an encrypted key although "
                f"{SERVER_GENERATED_KEY} was expected"
            )
        return ServerKeygenResult(None, key_der, key_media, True, certificates, warnings)
    key_format = _key_format(key_der)
    if key_format != "PKCS#8":
        warnings.append(
            f"the key part is labelled {key_media} but holds a {key_format} structure; "
            "accepted anyway (the server should send PKCS#8)"
        )
    private_key = load_private_key(key_der)
    return ServerKeygenResult(private_key, key_der, key_media, False, certificates, warnings)


def can_encrypt_to(recipient: x509.Certificate) -> bool:
    """Whether :func:`encrypt_private_key_for` can encrypt to ``recipient``'s key."""
    return isinstance(recipient.public_key(), rsa.RSAPublicKey) or is_ec_recipient(recipient)


def encrypt_private_key_for(key_der: bytes, recipient: x509.Certificate) -> bytes:
    """CMS EnvelopedData (DER) of ``key_der`` for ``recipient``'s key (RFC 7030 §4.4.2).

    RSA recipients get key transport (``ktri``), which ``cryptography`` builds; EC recipients
    (P-256, P-384, P-521) get ephemeral-static ECDH key agreement (``kari``), which it does not
    offer, so :mod:`.cms_kari` builds it. Raises :class:`ValueError` for any other key.
    """
    if is_ec_recipient(recipient):
        return envelope_for_ec_recipient(bytes(key_der), recipient)
    if not isinstance(recipient.public_key(), rsa.RSAPublicKey):
        raise ValueError(
            "the key can only be encrypted to a certificate with an RSA key or an EC key on "
            f"{', '.join(SUPPORTED_CURVES)}; the client certificate has a different key type: "
            "request the key unencrypted over TLS instead"
        )
    return (
        _pkcs7.PKCS7EnvelopeBuilder()
        .set_data(bytes(key_der))
        .add_recipient(recipient)
        # Binary: the DER must not be rewritten as canonical MIME text (LF -> CRLF).
        .encrypt(serialization.Encoding.DER, [_pkcs7.PKCS7Options.Binary])
    )


def _decrypt(
    envelope_der: bytes, recipient_cert: x509.Certificate, recipient_key: PrivateKey
) -> bytes:
    if isinstance(recipient_key, ec.EllipticCurvePrivateKey):
        return open_ec_envelope(bytes(envelope_der), recipient_cert, recipient_key)
    if not isinstance(recipient_key, rsa.RSAPrivateKey):
        raise ValueError("only an RSA or EC private key can decrypt this EnvelopedData")
    try:
        return _pkcs7.pkcs7_decrypt_der(bytes(envelope_der), recipient_cert, recipient_key, [])
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise Pkcs7Error(
            f"cannot decrypt the server-generated key ({exc}); check that it was encrypted to "
            "this certificate and that the matching private key is used"
        ) from None


def decrypt_private_key(
    envelope_der: bytes, recipient_cert: x509.Certificate, recipient_key: PrivateKey
) -> PrivateKey:
    """Decrypt an EnvelopedData made by :func:`encrypt_private_key_for` and load the key.

    An RSA key opens key transport (``cryptography``), an EC key opens key agreement
    (:mod:`.cms_kari`); both raise :class:`Pkcs7Error` when the envelope does not open.
    """
    key_der = _decrypt(envelope_der, recipient_cert, recipient_key)
    try:
        return load_private_key(key_der)
    except EncodingError as exc:
        raise Pkcs7Error(
            f"the decrypted server-generated key is not a private key: {exc}"
        ) from None


__all__ = [
    "ASYMMETRIC_DECRYPT_KEY_IDENTIFIER",
    "DECRYPT_KEY_IDENTIFIER",
    "KeyEncryptionRequest",
    "ServerKeygenResult",
    "build_serverkeygen_response",
    "can_encrypt_to",
    "decrypt_private_key",
    "encrypt_private_key_for",
    "key_encryption_attribute",
    "key_encryption_request",
    "parse_serverkeygen_response",
]
