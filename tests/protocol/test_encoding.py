"""RFC 8951 body encoding: tolerant base64, PEM and raw DER (checklist E15 and quirks)."""

from __future__ import annotations

import base64

import pytest

from estkit.protocol import EncodingError, decode_base64_body, decode_body, encode_base64_body
from estkit.protocol.encoding import der_length, iter_pem_blocks

# A small but real DER structure: SEQUENCE { INTEGER 5, OCTET STRING 'hello' }.
SAMPLE_DER = bytes.fromhex("300a020105040568656c6c6f")
LONG_DER = b"\x30\x82\x01\x00" + bytes(range(256))


def test_encode_wraps_at_64_columns_and_ends_with_newline() -> None:
    body = encode_base64_body(LONG_DER)
    lines = body.split(b"\n")
    assert body.endswith(b"\n")
    assert lines[-1] == b""
    assert all(len(line) == 64 for line in lines[:-2])
    assert 0 < len(lines[-2]) <= 64
    assert b"\r" not in body
    assert base64.b64decode(body) == LONG_DER


def test_encode_short_body_is_single_terminated_line() -> None:
    assert encode_base64_body(SAMPLE_DER) == base64.b64encode(SAMPLE_DER) + b"\n"


def test_decode_accepts_cr_lf_space_tab_anywhere() -> None:
    text = base64.b64encode(LONG_DER)
    messy = b" \t" + b"\r\n".join(text[i : i + 7] for i in range(0, len(text), 7)) + b" \t\r\n"
    messy = messy[:20] + b" \t " + messy[20:]
    assert decode_base64_body(messy) == LONG_DER


def test_round_trip() -> None:
    assert decode_base64_body(encode_base64_body(LONG_DER)) == LONG_DER


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "it is empty"),
        (b" \r\n\t", "it is empty"),
        (b"MAo*AQUE", "contains the byte b'*' (at offset 3)"),
        (b"MAo-AQUE", "contains the byte b'-'"),  # base64url is not RFC 4648 §4 base64
        (b"MAoCAQUE\x00", "contains the byte b'\\x00'"),
        (b"MAoCAQU", "not valid base64"),  # bad length
        (b"MA==oCAQ", "not valid base64"),  # padding in the middle
    ],
)
def test_decode_base64_errors_name_the_problem(body: bytes, fragment: str) -> None:
    with pytest.raises(EncodingError, match="body is not valid base64") as info:
        decode_base64_body(body)
    assert fragment in str(info.value)


def test_decode_body_detects_base64() -> None:
    assert decode_body(encode_base64_body(SAMPLE_DER)) == (SAMPLE_DER, "base64")


def test_decode_body_detects_raw_der_and_tolerates_trailing_nul_and_whitespace() -> None:
    assert decode_body(SAMPLE_DER) == (SAMPLE_DER, "der")
    assert decode_body(SAMPLE_DER + b"\x00\x00\r\n ") == (SAMPLE_DER, "der")
    assert decode_body(LONG_DER) == (LONG_DER, "der")


def test_decode_body_raw_der_may_end_in_bytes_that_look_like_junk() -> None:
    # The DER itself ends with 0x00 and 0x20: they must not be stripped.
    der = bytes.fromhex("3004") + b"\x04\x02\x00\x20"
    assert decode_body(der) == (der, "der")


def test_decode_body_base64_with_trailing_nul() -> None:
    assert decode_body(encode_base64_body(SAMPLE_DER) + b"\x00") == (SAMPLE_DER, "base64")


def test_decode_body_pem_with_and_without_headers() -> None:
    pem = b"-----BEGIN CERTIFICATE REQUEST-----\n" + encode_base64_body(SAMPLE_DER)
    pem += b"-----END CERTIFICATE REQUEST-----\n"
    assert decode_body(pem) == (SAMPLE_DER, "pem")
    assert decode_body(b"\r\n" + pem.replace(b"\n", b"\r\n") + b"\x00") == (SAMPLE_DER, "pem")
    legacy = (
        b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: x\n\n"
        + encode_base64_body(SAMPLE_DER)
        + b"-----END RSA PRIVATE KEY-----\n"
    )
    assert decode_body(legacy) == (SAMPLE_DER, "pem")


def test_decode_body_ignores_content_transfer_encoding_claims() -> None:
    # A server that says "binary" but sends base64, or the reverse: the bytes decide (E15).
    assert decode_body(encode_base64_body(SAMPLE_DER))[1] == "base64"
    assert decode_body(SAMPLE_DER)[1] == "der"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "body is empty"),
        (b"\x00\x00 ", "body is empty"),
        (b"-----BEGIN X-----\nMAo=\n", "no matching '-----END' line"),
        (b"-----BEGIN X-----\nM*o=\n-----END X-----\n", "the PEM block 'X' has bad content"),
        (SAMPLE_DER[:-3], "truncated"),
        (b"hello world!", "neither PEM nor raw DER"),
        (SAMPLE_DER + b"garbage", "neither PEM nor raw DER"),
    ],
)
def test_decode_body_errors_name_the_problem(body: bytes, fragment: str) -> None:
    with pytest.raises(EncodingError) as info:
        decode_body(body)
    assert fragment in str(info.value)


def test_der_length_forms() -> None:
    assert der_length(b"\x30\x00") == 2
    assert der_length(b"\x30\x81\x80" + bytes(128)) == 131
    assert der_length(b"\x30\x82\x01\x00") == 260
    assert der_length(b"\x30\x80\x00\x00") is None  # indefinite length is BER, not DER
    assert der_length(b"\x31\x00") is None
    assert der_length(b"\x30") is None
    assert der_length(b"\x30\x85" + bytes(5)) is None


def test_iter_pem_blocks_returns_every_block_in_order() -> None:
    one = b"-----BEGIN A-----\n" + encode_base64_body(b"\x30\x00") + b"-----END A-----\n"
    two = b"-----BEGIN B-----\n" + encode_base64_body(SAMPLE_DER) + b"-----END B-----\n"
    assert iter_pem_blocks(b"junk\n" + one + b"between\n" + two) == [
        ("A", b"\x30\x00"),
        ("B", SAMPLE_DER),
    ]
