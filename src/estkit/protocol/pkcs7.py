"""PKCS#7 / CMS "certs-only" (RFC 5751 §3.2.2, RFC 7030 §4.1.3): a SignedData with no signers.

Written by ``cryptography``; read by unwrapping the SignedData with asn1crypto and loading each
certificate with ``cryptography`` (see :func:`parse_certs_only` for why). We add the EST body
encoding, limits, PEM-bundle tolerance and messages that say what to do.
"""

from __future__ import annotations

from collections.abc import Iterable

from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7 as _pkcs7

from . import _asn1
from .encoding import _PEM_BEGIN, decode_body, der_length, encode_base64_body, iter_pem_blocks
from .errors import Pkcs7Error
from .limits import MAX_CERTS_IN_PKCS7

_TRAILING_JUNK = b"\x00\r\n \t"
_PKCS7_PEM_LABELS = ("PKCS7", "CMS", "PKCS #7 SIGNED DATA")
_CERT_PEM_LABELS = ("CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE")


def build_certs_only(certs: Iterable[x509.Certificate]) -> bytes:
    """DER certs-only PKCS#7 holding ``certs`` (at least one).

    The certificates form a DER ``SET OF``, so they come out sorted by encoding, not in the
    order given; readers use :func:`estkit.protocol.order_certificates` to get leaf-first order.
    """
    cert_list = list(certs)
    if not cert_list:
        raise Pkcs7Error("a certs-only PKCS#7 needs at least one certificate; none were given")
    if len(cert_list) > MAX_CERTS_IN_PKCS7:
        raise Pkcs7Error(
            f"{len(cert_list)} certificates exceed the limit of {MAX_CERTS_IN_PKCS7} per PKCS#7"
        )
    return _pkcs7.serialize_certificates(cert_list, serialization.Encoding.DER)


def _unwrap_signed_data(der: bytes) -> list[bytes]:
    """The DER of each certificate in a ContentInfo/SignedData (RFC 5652 §5.1)."""
    try:
        content_info = cms.ContentInfo.load(der, strict=True)
        content_type = content_info["content_type"].native
        if content_type != "signed_data":
            raise Pkcs7Error(
                f"the PKCS#7 structure is {content_type!r}, not a certs-only SignedData; "
                "expected application/pkcs7-mime; smime-type=certs-only"
            )
        choices = content_info["content"]["certificates"]
        if len(choices) > MAX_CERTS_IN_PKCS7:
            raise Pkcs7Error(
                f"the PKCS#7 structure holds {len(choices)} certificates, over the limit of "
                f"{MAX_CERTS_IN_PKCS7}"
            )
        return [bytes(choice.chosen.dump()) for choice in choices if choice.name == "certificate"]
    except Pkcs7Error:
        raise
    except _asn1.ASN1_ERRORS as exc:
        raise Pkcs7Error(
            f"cannot parse the PKCS#7 certs-only structure ({exc}); expected DER SignedData "
            f"with certificates ({len(der)} bytes received, starting {der[:4].hex() or 'empty'})"
        ) from None


def parse_certs_only(der: bytes) -> list[x509.Certificate]:
    """The certificates of a certs-only PKCS#7 in DER.

    Why asn1crypto unwraps the SignedData here: many servers (OpenSSL's ``crl2pkcs7`` among
    them) write the certificate SET unsorted or with BER lengths; ``cryptography`` then falls
    back to BER with a ``UserWarning`` and announces it may refuse such input in future. We only
    need the certificates out of the envelope, and ``cryptography`` parses each of them.

    Trailing NUL bytes or white space after the structure are ignored; other trailing data is an
    error since it means the body is not what the sender thinks it is. The certificates come in
    wire order, which is not meaningful (a ``SET OF``); see
    :func:`estkit.protocol.order_certificates`.
    """
    der = bytes(der)
    total = der_length(der)
    if total is not None and total < len(der):
        if der[total:].strip(_TRAILING_JUNK):
            raise Pkcs7Error(
                f"{len(der) - total} unexpected byte(s) follow the PKCS#7 structure "
                f"({total} bytes); send exactly one DER certs-only PKCS#7"
            )
        der = der[:total]
    certs: list[x509.Certificate] = []
    for number, cert_der in enumerate(_unwrap_signed_data(der), start=1):
        certs.append(_certificate(cert_der, f"certificate {number} in the PKCS#7 structure"))
    if not certs:
        raise Pkcs7Error("the PKCS#7 certs-only structure holds no certificates")
    return certs


def _certificate(der: bytes, what: str) -> x509.Certificate:
    return _asn1.read_x509(
        x509.load_der_x509_certificate, der, Pkcs7Error, f"{what} cannot be read"
    )


def encode_certs_only_body(certs: Iterable[x509.Certificate]) -> bytes:
    """The EST body: base64 of the DER certs-only structure, wrapped at 64 columns."""
    return encode_base64_body(build_certs_only(certs))


def _certs_from_pem(text: bytes) -> list[x509.Certificate]:
    blocks = iter_pem_blocks(text)
    certs: list[x509.Certificate] = []
    for label, der in blocks:
        if label in _PKCS7_PEM_LABELS:
            certs.extend(parse_certs_only(der))
        elif label in _CERT_PEM_LABELS:
            certs.append(_certificate(der, "a PEM certificate in the body"))
        else:
            raise Pkcs7Error(
                f"unexpected PEM block {label!r}; expected PKCS7 or CERTIFICATE blocks"
            )
        if len(certs) > MAX_CERTS_IN_PKCS7:
            raise Pkcs7Error(f"the body holds more than {MAX_CERTS_IN_PKCS7} certificates")
    if not certs:
        raise Pkcs7Error("the PEM body holds no complete PKCS7 or CERTIFICATE block")
    return certs


def decode_certs_only_body(body: bytes) -> list[x509.Certificate]:
    """Certificates from a certs-only body sent as base64 (RFC 8951), PEM or raw DER.

    PEM may be a ``PKCS7`` block or a bundle of ``CERTIFICATE`` blocks (servers do both).
    Raises :class:`EncodingError` when the body cannot be decoded at all and
    :class:`Pkcs7Error` when the decoded bytes are not a certs-only structure.
    """
    body = bytes(body)
    if body.lstrip().startswith(_PEM_BEGIN):
        return _certs_from_pem(body.lstrip())
    der, _form = decode_body(body)
    return parse_certs_only(der)


__all__ = [
    "build_certs_only",
    "decode_certs_only_body",
    "encode_certs_only_body",
    "parse_certs_only",
]
