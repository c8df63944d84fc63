"""CMS EnvelopedData for an EC recipient: KeyAgreeRecipientInfo with ephemeral-static ECDH.

Why this is hand-written: ``cryptography``'s ``PKCS7EnvelopeBuilder`` and ``pkcs7_decrypt_*``
support RSA recipients only (key transport, ``ktri``). An EC key cannot transport a key; CMS uses
key agreement instead (``kari``, RFC 5652 §6.2.2), and NMOS device certificates are usually
ECDSA. So the ASN.1 is built and read with ``asn1crypto.cms`` and the cryptography (ECDH, the
ANSI X9.63 KDF, AES key wrap, AES-CBC) is done with ``cryptography``'s primitives.

What is built (RFC 5753 §3.1 / RFC 8418-style, what ``openssl cms`` reads and writes):

* an ephemeral key on the recipient's curve; ``originator`` = ``originatorKey``
  (id-ecPublicKey with absent parameters, the curve being the recipient's, as OpenSSL does);
* ``keyEncryptionAlgorithm`` = dhSinglePass-stdDH-sha{256,384,512}kdf-scheme for P-256 / P-384 /
  P-521, its parameters the key-wrap AlgorithmIdentifier id-aes256-wrap (parameters absent);
* KEK = X9.63-KDF(Z, SharedInfo = DER of ECC-CMS-SharedInfo{keyInfo = that wrap algorithm,
  suppPubInfo = KEK length in bits, 4 bytes big-endian});
* the content-encryption key wrapped with RFC 3394 AES key wrap;
* the content (the PKCS#8 key) encrypted with AES-256-CBC, random IV, PKCS#7 padding;
* the recipient named by issuerAndSerialNumber (or, on request, its subject key identifier).

Opening accepts a little more, so envelopes made by other software open too: the sha1/sha224 KDF
schemes (OpenSSL's default is sha1kdf), the cofactor variants (identical on these prime-order
curves), AES-128/192/256 wrap and AES-128/192/256-CBC content, a user keying material (ukm),
and a recipient named by subject key identifier.

Pure: bytes and key objects in, bytes out; no I/O.
"""

from __future__ import annotations

import os
from typing import Literal

from asn1crypto import algos, cms, core
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from . import _asn1
from .certs import key_identifier
from .errors import Pkcs7Error

# RFC 5753 §7.1.4 / SEC 1: the single-pass ephemeral-static ECDH schemes with the X9.63 KDF.
DH_SINGLE_PASS_STD_DH_SHA256KDF = "1.3.132.1.11.1"
DH_SINGLE_PASS_STD_DH_SHA384KDF = "1.3.132.1.11.2"
DH_SINGLE_PASS_STD_DH_SHA512KDF = "1.3.132.1.11.3"

# Every scheme we can open, with the KDF hash. The cofactor variants compute the same Z here:
# P-256/P-384/P-521 have cofactor 1.
_KDF_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "1.3.133.16.840.63.0.2": hashes.SHA1,  # dhSinglePass-stdDH-sha1kdf-scheme (OpenSSL default)
    "1.3.132.1.11.0": hashes.SHA224,
    DH_SINGLE_PASS_STD_DH_SHA256KDF: hashes.SHA256,
    DH_SINGLE_PASS_STD_DH_SHA384KDF: hashes.SHA384,
    DH_SINGLE_PASS_STD_DH_SHA512KDF: hashes.SHA512,
    "1.3.133.16.840.63.0.3": hashes.SHA1,  # dhSinglePass-cofactorDH-sha1kdf-scheme
    "1.3.132.1.14.0": hashes.SHA224,
    "1.3.132.1.14.1": hashes.SHA256,
    "1.3.132.1.14.2": hashes.SHA384,
    "1.3.132.1.14.3": hashes.SHA512,
}

# The scheme we use per recipient curve: the KDF hash matches the curve's strength (RFC 5753
# §8 / RFC 8418 §2 recommendations).
_SCHEME_FOR_CURVE: dict[str, str] = {
    "secp256r1": DH_SINGLE_PASS_STD_DH_SHA256KDF,
    "secp384r1": DH_SINGLE_PASS_STD_DH_SHA384KDF,
    "secp521r1": DH_SINGLE_PASS_STD_DH_SHA512KDF,
}
_CURVES: dict[str, ec.EllipticCurve] = {
    "secp256r1": ec.SECP256R1(),
    "secp384r1": ec.SECP384R1(),
    "secp521r1": ec.SECP521R1(),
}
SUPPORTED_CURVES: tuple[str, ...] = tuple(_SCHEME_FOR_CURVE)

# RFC 3565 AES key wrap OIDs -> KEK length in bytes (asn1crypto names them aesNNN_wrap).
_WRAP_KEY_LENGTHS: dict[str, int] = {"aes128_wrap": 16, "aes192_wrap": 24, "aes256_wrap": 32}
# RFC 3565 AES-CBC content encryption -> CEK length in bytes.
_CONTENT_KEY_LENGTHS: dict[str, int] = {"aes128_cbc": 16, "aes192_cbc": 24, "aes256_cbc": 32}
_WRAP_ALGORITHM = "aes256_wrap"
_CONTENT_ALGORITHM = "aes256_cbc"
_AES_BLOCK_BYTES = 16
_KARI_VERSION = "v3"  # RFC 5652 §6.2.2: KeyAgreeRecipientInfo version is always 3
_ENVELOPED_VERSION = "v2"  # RFC 5652 §6.1: version 2 when a RecipientInfo is not version 0

RecipientIdentification = Literal["issuer_and_serial", "subject_key_identifier"]


class EccCmsSharedInfo(core.Sequence):  # type: ignore[misc]  # asn1crypto is untyped: base is Any
    """RFC 5753 §7.2 ECC-CMS-SharedInfo, the KDF's SharedInfo (asn1crypto has no class for it)."""

    _fields = [  # noqa: RUF012 - asn1crypto declares fields as a class-level list
        ("key_info", cms.KeyEncryptionAlgorithm),
        ("entity_u_info", core.OctetString, {"explicit": 0, "optional": True}),
        ("supp_pub_info", core.OctetString, {"explicit": 2}),
    ]


def _curve_name(public_key: object) -> str | None:
    if isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name in _CURVES:
        return public_key.curve.name
    return None


def is_ec_recipient(certificate: x509.Certificate) -> bool:
    """Whether :func:`envelope_for_ec_recipient` can encrypt to ``certificate``'s key."""
    return _curve_name(certificate.public_key()) is not None


def _kek(
    shared_secret: bytes,
    kdf_hash: type[hashes.HashAlgorithm],
    wrap_algorithm: cms.KeyEncryptionAlgorithm,
    kek_length: int,
    ukm: bytes | None,
) -> bytes:
    """X9.63 KDF over Z with ECC-CMS-SharedInfo (RFC 5753 §7.2), as OpenSSL computes it."""
    fields: dict[str, object] = {
        "key_info": wrap_algorithm,
        "supp_pub_info": (kek_length * 8).to_bytes(4, "big"),
    }
    if ukm is not None:
        fields["entity_u_info"] = ukm
    shared_info = EccCmsSharedInfo(fields).dump()
    return X963KDF(algorithm=kdf_hash(), length=kek_length, sharedinfo=shared_info).derive(
        shared_secret
    )


def _asn1_certificate(certificate: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))


def envelope_for_ec_recipient(
    content: bytes,
    recipient: x509.Certificate,
    *,
    identify_by: RecipientIdentification = "issuer_and_serial",
) -> bytes:
    """DER ContentInfo(EnvelopedData) of ``content`` for ``recipient``'s EC key (one ``kari``).

    ``identify_by`` picks the RecipientEncryptedKey's ``rid``: issuerAndSerialNumber (the
    default: every CMS implementation matches it) or rKeyId with the subject key identifier.
    Raises :class:`ValueError` when the certificate's key is not P-256, P-384 or P-521.
    """
    public_key = recipient.public_key()
    curve_name = _curve_name(public_key)
    if curve_name is None or not isinstance(public_key, ec.EllipticCurvePublicKey):
        found = type(public_key).__name__
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            found = f"an EC key on {public_key.curve.name}"
        raise ValueError(
            f"key agreement needs a certificate with an EC key on {', '.join(SUPPORTED_CURVES)}; "
            f"this one has {found}"
        )
    scheme = _SCHEME_FOR_CURVE[curve_name]
    ephemeral = ec.generate_private_key(_CURVES[curve_name])
    shared_secret = ephemeral.exchange(ec.ECDH(), public_key)

    wrap_algorithm = cms.KeyEncryptionAlgorithm({"algorithm": _WRAP_ALGORITHM})
    kek = _kek(
        shared_secret,
        _KDF_HASHES[scheme],
        wrap_algorithm,
        _WRAP_KEY_LENGTHS[_WRAP_ALGORITHM],
        None,
    )
    content_key = os.urandom(_CONTENT_KEY_LENGTHS[_CONTENT_ALGORITHM])
    encrypted_key = aes_key_wrap(kek, content_key)

    iv = os.urandom(_AES_BLOCK_BYTES)
    padder = padding.PKCS7(_AES_BLOCK_BYTES * 8).padder()
    padded = padder.update(bytes(content)) + padder.finalize()
    encryptor = Cipher(algorithms.AES(content_key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()

    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    # id-ecPublicKey with absent parameters: the curve is the recipient's (RFC 5753 §3.1.1;
    # OpenSSL writes and expects this form).
    originator_key = asn1_keys.PublicKeyInfo(
        {"algorithm": asn1_keys.PublicKeyAlgorithm({"algorithm": "ec"}), "public_key": point}
    )
    if identify_by == "subject_key_identifier":
        rid = cms.KeyAgreementRecipientIdentifier(
            name="r_key_id",
            # A dict, not cms.RecipientKeyIdentifier: asn1crypto defines that name twice and the
            # module attribute is the later (S/MIME) class with different field names.
            value={"subject_key_identifier": key_identifier(recipient)},
        )
    else:
        asn1_recipient = _asn1_certificate(recipient)
        rid = cms.KeyAgreementRecipientIdentifier(
            name="issuer_and_serial_number",
            value=cms.IssuerAndSerialNumber(
                {
                    "issuer": asn1_recipient.issuer,
                    "serial_number": asn1_recipient.serial_number,
                }
            ),
        )
    kari = cms.KeyAgreeRecipientInfo(
        {
            "version": _KARI_VERSION,
            "originator": cms.OriginatorIdentifierOrKey(
                name="originator_key", value=originator_key
            ),
            "key_encryption_algorithm": cms.KeyEncryptionAlgorithm(
                {"algorithm": scheme, "parameters": wrap_algorithm}
            ),
            "recipient_encrypted_keys": [{"rid": rid, "encrypted_key": encrypted_key}],
        }
    )
    enveloped = cms.EnvelopedData(
        {
            "version": _ENVELOPED_VERSION,
            "recipient_infos": [cms.RecipientInfo(name="kari", value=kari)],
            "encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": algos.EncryptionAlgorithm(
                    {"algorithm": _CONTENT_ALGORITHM, "parameters": core.OctetString(iv)}
                ),
                "encrypted_content": ciphertext,
            },
        }
    )
    return bytes(cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump())


def _matches(rid: cms.KeyAgreementRecipientIdentifier, certificate: x509.Certificate) -> bool:
    if rid.name == "issuer_and_serial_number":
        asn1_cert = _asn1_certificate(certificate)
        wanted = rid.chosen
        return bool(
            wanted["serial_number"].native == asn1_cert.serial_number
            and wanted["issuer"] == asn1_cert.issuer
        )
    if rid.name == "r_key_id":
        return bool(rid.chosen["subject_key_identifier"].native == key_identifier(certificate))
    return False


def _originator_public_key(
    kari: cms.KeyAgreeRecipientInfo, curve_name: str
) -> ec.EllipticCurvePublicKey:
    """The ephemeral key from ``originatorKey``, on the recipient's curve."""
    originator = kari["originator"]
    if originator.name != "originator_key":
        raise Pkcs7Error(
            f"the key-agreement originator is a {originator.name}, not an ephemeral "
            "originatorKey; only ephemeral-static ECDH (RFC 5753 §3.1) is supported"
        )
    info = originator.chosen
    algorithm = info["algorithm"]
    if algorithm["algorithm"].native != "ec":
        raise Pkcs7Error(
            f"the originator key is {algorithm['algorithm'].dotted}, not id-ecPublicKey"
        )
    parameters = algorithm["parameters"]
    # Absent or NULL parameters mean the recipient's curve; a named curve must be that curve.
    if parameters.native is not None and (
        parameters.name != "named" or parameters.chosen.native != curve_name
    ):
        raise Pkcs7Error(
            f"the originator key's curve ({parameters.native}) is not the recipient "
            f"certificate's ({curve_name})"
        )
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(
            _CURVES[curve_name], bytes(info["public_key"].native)
        )
    except ValueError:
        raise Pkcs7Error(f"the originator key is not a point on {curve_name}") from None


def _content_key(
    kari: cms.KeyAgreeRecipientInfo, encrypted_key: bytes, recipient_key: ec.EllipticCurvePrivateKey
) -> bytes:
    """ECDH with the originator key, X9.63 KDF, AES key unwrap: the content-encryption key."""
    scheme = kari["key_encryption_algorithm"]["algorithm"].dotted
    kdf_hash = _KDF_HASHES.get(scheme)
    if kdf_hash is None:
        raise Pkcs7Error(
            f"the key-agreement algorithm {scheme} is not supported; expected a "
            "dhSinglePass-stdDH/cofactorDH-sha*kdf-scheme (RFC 5753)"
        )
    raw_wrap = kari["key_encryption_algorithm"]["parameters"]
    wrap_algorithm = cms.KeyEncryptionAlgorithm.load(raw_wrap.dump(), strict=True)
    wrap_name = wrap_algorithm["algorithm"].native
    if wrap_name not in _WRAP_KEY_LENGTHS:
        raise Pkcs7Error(
            f"the key-wrap algorithm {wrap_algorithm['algorithm'].dotted} is not supported; "
            "expected AES key wrap (RFC 3565)"
        )
    originator = _originator_public_key(kari, recipient_key.curve.name)
    shared_secret = recipient_key.exchange(ec.ECDH(), originator)
    ukm = kari["ukm"].native  # user keying material: entityUInfo of the SharedInfo when present
    kek = _kek(shared_secret, kdf_hash, wrap_algorithm, _WRAP_KEY_LENGTHS[wrap_name], ukm)
    try:
        return aes_key_unwrap(kek, encrypted_key)
    except (InvalidUnwrap, ValueError):  # ValueError: not a multiple of 8 bytes / too short
        raise Pkcs7Error(
            "the wrapped content-encryption key does not unwrap with this private key; the "
            "envelope was made for a different key"
        ) from None


def _decrypt_content(info: cms.EncryptedContentInfo, content_key: bytes) -> bytes:
    algorithm = info["content_encryption_algorithm"]
    name = algorithm["algorithm"].native
    if name not in _CONTENT_KEY_LENGTHS:
        raise Pkcs7Error(
            f"the content encryption {algorithm['algorithm'].dotted} is not supported; "
            "expected AES-CBC (RFC 3565)"
        )
    if len(content_key) != _CONTENT_KEY_LENGTHS[name]:
        raise Pkcs7Error(
            f"the content-encryption key has {len(content_key)} bytes; {name} needs "
            f"{_CONTENT_KEY_LENGTHS[name]}"
        )
    iv = algorithm["parameters"].native
    ciphertext = info["encrypted_content"].native
    if not isinstance(iv, bytes) or len(iv) != _AES_BLOCK_BYTES:
        raise Pkcs7Error("the AES-CBC parameters are not a 16-byte IV")
    if not isinstance(ciphertext, bytes) or not ciphertext or len(ciphertext) % _AES_BLOCK_BYTES:
        raise Pkcs7Error("the encrypted content is missing or not a whole number of AES blocks")
    decryptor = Cipher(algorithms.AES(content_key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(_AES_BLOCK_BYTES * 8).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise Pkcs7Error("the decrypted content has invalid padding") from None


def open_ec_envelope(
    envelope_der: bytes,
    recipient_cert: x509.Certificate,
    recipient_key: ec.EllipticCurvePrivateKey,
) -> bytes:
    """The content of a ContentInfo(EnvelopedData) with a ``kari`` for ``recipient_cert``.

    Raises :class:`Pkcs7Error` (a :class:`ValueError`) for anything that does not decrypt,
    naming what was wrong; ``recipient_key`` must be on P-256, P-384 or P-521.
    """
    curve_name = recipient_key.curve.name
    if curve_name not in _CURVES:
        raise ValueError(
            f"key agreement is supported on {', '.join(SUPPORTED_CURVES)}, not {curve_name}"
        )
    try:
        content_info = cms.ContentInfo.load(bytes(envelope_der), strict=True)
        if content_info["content_type"].native != "enveloped_data":
            raise Pkcs7Error(
                f"expected CMS EnvelopedData, got {content_info['content_type'].native}"
            )
        enveloped = content_info["content"]
        recipient_infos = list(enveloped["recipient_infos"])
        for recipient_info in recipient_infos:
            if recipient_info.name != "kari":
                continue
            kari = recipient_info.chosen
            for recipient_encrypted_key in kari["recipient_encrypted_keys"]:
                if _matches(recipient_encrypted_key["rid"], recipient_cert):
                    content_key = _content_key(
                        kari, recipient_encrypted_key["encrypted_key"].native, recipient_key
                    )
                    return _decrypt_content(enveloped["encrypted_content_info"], content_key)
    except _asn1.ASN1_ERRORS as exc:
        if isinstance(exc, Pkcs7Error):
            raise
        raise Pkcs7Error(f"the EnvelopedData is not valid DER CMS: {exc}") from None
    kinds = sorted({recipient_info.name for recipient_info in recipient_infos})
    raise Pkcs7Error(
        "no key-agreement recipient in the EnvelopedData names the certificate "
        f"{recipient_cert.subject.rfc4514_string()!r} (recipient kinds: {', '.join(kinds)})"
    )


__all__ = [
    "DH_SINGLE_PASS_STD_DH_SHA256KDF",
    "DH_SINGLE_PASS_STD_DH_SHA384KDF",
    "DH_SINGLE_PASS_STD_DH_SHA512KDF",
    "SUPPORTED_CURVES",
    "EccCmsSharedInfo",
    "envelope_for_ec_recipient",
    "is_ec_recipient",
    "open_ec_envelope",
]
