"""CsrAttrs (RFC 7030 §4.5.2 as corrected by RFC 8951 §4), checklist E4 and quirks."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from asn1crypto import core
from cryptography.x509.oid import ObjectIdentifier

from estkit.protocol import (
    CsrAttribute,
    CsrAttrs,
    CsrAttrsError,
    decode_body,
    decode_csrattrs,
    encode_base64_body,
    encode_csrattrs,
)
from estkit.protocol.limits import MAX_CSRATTRS_ITEMS

from .helpers import run_openssl

# The example of RFC 7030 §4.5.2.
RFC7030_EXAMPLE = (
    "MEEGCSqGSIb3DQEJBzASBgcqhkjOPQIBMQcGBSuBBAAiMBYGCSqGSIb3DQEJDjEJBgcrBgEBAQEWBggqhkjOPQQDAw=="
)
CHALLENGE_PASSWORD = ObjectIdentifier("1.2.840.113549.1.9.7")
ECDSA_WITH_SHA384 = ObjectIdentifier("1.2.840.10045.4.3.3")
EC_PUBLIC_KEY = ObjectIdentifier("1.2.840.10045.2.1")
EXTENSION_REQUEST = ObjectIdentifier("1.2.840.113549.1.9.14")
MAC_ADDRESS = ObjectIdentifier("1.3.6.1.1.1.1.22")


def _oid_der(dotted: str) -> bytes:
    return bytes(core.ObjectIdentifier(dotted).dump())


def test_rfc7030_example_decodes() -> None:
    attrs, warnings = decode_csrattrs(base64.b64decode(RFC7030_EXAMPLE))
    assert warnings == []
    assert attrs.oids == (CHALLENGE_PASSWORD, ECDSA_WITH_SHA384)
    assert attrs.attributes == (
        CsrAttribute(EC_PUBLIC_KEY, (_oid_der("1.3.132.0.34"),)),
        CsrAttribute(EXTENSION_REQUEST, (_oid_der("1.3.6.1.1.1.1.22"),)),
    )
    assert attrs.requires_pop
    assert attrs.requested_curve == "secp384r1"
    assert attrs.requested_hash == "sha384"
    assert attrs.requested_rsa_bits is None
    assert attrs.requested_extension_oids == (MAC_ADDRESS,)
    text = "\n".join(attrs.describe())
    assert "challengePassword" in text and "proof-of-possession" in text
    assert "secp384r1" in text
    assert "sha384" in text
    assert "macAddress (1.3.6.1.1.1.1.22)" in text


def test_rfc7030_example_through_body_decoding_and_openssl() -> None:
    der, form = decode_body(RFC7030_EXAMPLE.encode() + b"\n")
    assert form == "base64"
    dump = run_openssl("asn1parse", "-inform", "DER", input_bytes=der).decode()
    assert "secp384r1" in dump and "ecdsa-with-SHA384" in dump
    # Re-encoding keeps every entry (bare OIDs are written before attributes).
    attrs = decode_csrattrs(der)[0]
    again = encode_csrattrs(attrs)
    assert len(again) == len(der)
    assert decode_csrattrs(again)[0] == attrs


def test_trailing_nul_gives_warning_not_error() -> None:
    attrs, warnings = decode_csrattrs(base64.b64decode(RFC7030_EXAMPLE) + b"\x00")
    assert attrs.requires_pop
    assert warnings == ["ignored 1 trailing byte(s) (0x00) after CsrAttrs"]
    _attrs, warnings = decode_csrattrs(b"\x30\x00" + bytes(range(12)))
    assert warnings == ["ignored 12 trailing byte(s) (0x00 01 02 03 04 05 06 07...) after CsrAttrs"]


def test_empty_sequence_is_valid() -> None:
    attrs, warnings = decode_csrattrs(b"\x30\x00")
    assert attrs == CsrAttrs()
    assert warnings == []
    assert not attrs.requires_pop
    assert attrs.requested_curve is None and attrs.requested_hash is None
    assert attrs.requested_extension_oids == ()
    assert attrs.describe() == ["no attributes requested"]
    assert encode_csrattrs(CsrAttrs()) == b"\x30\x00"


def test_round_trip_with_rsa_size_context_tags_and_extension_template() -> None:
    extensions_template = bytes(
        core.Sequence.load(
            b"\x30\x0b" + b"\x30\x09" + b"\x06\x03\x55\x1d\x11" + b"\x04\x02\x30\x00"
        ).dump()
    )
    attrs = CsrAttrs(
        oids=(CHALLENGE_PASSWORD, ObjectIdentifier("1.2.840.113549.1.1.11")),
        attributes=(
            CsrAttribute(ObjectIdentifier("1.2.840.113549.1.1.1"), (core.Integer(3072).dump(),)),
            CsrAttribute(EXTENSION_REQUEST, (extensions_template,)),
            CsrAttribute(ObjectIdentifier("1.2.3.4"), (b"\x04\x01\x00", b"\xa0\x03\x02\x01\x05")),
        ),
    )
    der = encode_csrattrs(attrs)
    decoded, warnings = decode_csrattrs(der)
    assert warnings == []
    assert decoded.oids == attrs.oids
    assert decoded.attributes[0] == attrs.attributes[0]
    # SET OF values come back in DER order (sorted by encoding).
    assert decoded.attributes[2].values == (b"\x04\x01\x00", b"\xa0\x03\x02\x01\x05")
    assert decoded.requested_rsa_bits == 3072
    assert decoded.requested_hash == "sha256"
    assert decoded.requested_extension_oids == (ObjectIdentifier("2.5.29.17"),)
    lines = decoded.describe()
    assert any("3072-bit" in line for line in lines)
    assert any("subjectAltName" in line for line in lines)
    assert any(line.startswith("1.2.3.4: values") for line in lines)
    run_openssl("asn1parse", "-inform", "DER", input_bytes=der)  # well-formed for openssl too


def test_values_sorted_on_encode() -> None:
    attrs = CsrAttrs(
        attributes=(CsrAttribute(ObjectIdentifier("1.2.3"), (b"\x05\x00", b"\x02\x01\x01")),)
    )
    decoded, _ = decode_csrattrs(encode_csrattrs(attrs))
    assert decoded.attributes[0].values == (b"\x02\x01\x01", b"\x05\x00")


@pytest.mark.parametrize(
    ("der", "fragment"),
    [
        (b"", "the CsrAttrs body is empty"),
        (b"\x31\x00", "must be a DER SEQUENCE (first byte 0x30), got 0x3100"),
        (b"\x30\x05\x06\x03\x2a\x03", "truncated: the SEQUENCE announces 7 bytes, only 6 arrived"),
        (b"\x30\x03\x02\x01\x01", "entry 1 has tag 2"),
        (b"\x30\x02\x30\x00", "must hold exactly an OID and a SET of values"),
        (b"\x30\x07\x30\x05\x06\x01\x2a\x04\x00", "values must be a SET"),
        (b"\x30\x07\x30\x05\x06\x01\x2a\x31\x00", "has an empty value SET"),
        (b"\x30\x04\x06\x05\x2a\x03", "not valid DER"),
    ],
)
def test_malformed_csrattrs_raise_with_reason(der: bytes, fragment: str) -> None:
    with pytest.raises(CsrAttrsError) as info:
        decode_csrattrs(der)
    assert fragment in str(info.value)


def test_too_many_entries_refused() -> None:
    attrs = CsrAttrs(
        oids=tuple(ObjectIdentifier(f"1.2.{i}") for i in range(MAX_CSRATTRS_ITEMS + 1))
    )
    with pytest.raises(CsrAttrsError, match=f"over the limit of {MAX_CSRATTRS_ITEMS}"):
        decode_csrattrs(encode_csrattrs(attrs))


def test_encode_refuses_empty_or_malformed_values() -> None:
    with pytest.raises(CsrAttrsError, match="has no values"):
        encode_csrattrs(CsrAttrs(attributes=(CsrAttribute(ObjectIdentifier("1.2.3"), ()),)))
    with pytest.raises(CsrAttrsError, match="is not one DER element"):
        encode_csrattrs(
            CsrAttrs(attributes=(CsrAttribute(ObjectIdentifier("1.2.3"), (b"\x04\x05ab",)),))
        )


def test_openssl_written_csrattrs_decode(tmp_path: Path) -> None:
    # Build the RFC example independently with `openssl asn1parse -genconf`.
    conf = tmp_path / "attrs.cnf"
    conf.write_text(
        "asn1 = SEQUENCE:attrs\n"
        "[attrs]\n"
        "pop = OID:challengePassword\n"
        "ec = SEQUENCE:ecattr\n"
        "hash = OID:ecdsa-with-SHA384\n"
        "[ecattr]\n"
        "type = OID:id-ecPublicKey\n"
        "values = SET:curves\n"
        "[curves]\n"
        "c = OID:secp521r1\n"
    )
    out = tmp_path / "attrs.der"
    run_openssl("asn1parse", "-genconf", str(conf), "-out", str(out), "-noout")
    attrs, warnings = decode_csrattrs(out.read_bytes())
    assert warnings == []
    assert attrs.requires_pop
    assert attrs.requested_curve == "secp521r1"
    assert attrs.requested_hash == "sha384"
    assert decode_csrattrs(decode_body(encode_base64_body(out.read_bytes()))[0])[0] == attrs
