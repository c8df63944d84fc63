"""PKCS#7 certs-only build/parse and the EST body forms (E1, E2, quirks)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7 as crypto_pkcs7

from estkit.protocol import (
    MAX_CERTS_IN_PKCS7,
    EncodingError,
    Pkcs7Error,
    PrivateKey,
    _asn1,
    build_certs_only,
    certificates_to_pem,
    decode_certs_only_body,
    encode_base64_body,
    encode_certs_only_body,
    order_certificates,
    parse_certs_only,
    sha256_fingerprint,
)

from .helpers import run_openssl


def _fps(certs: list[x509.Certificate]) -> list[str]:
    return sorted(sha256_fingerprint(cert) for cert in certs)


def test_round_trip_and_chain_order(ca_cert: x509.Certificate, leaf_cert: x509.Certificate) -> None:
    der = build_certs_only([leaf_cert, ca_cert])
    assert der[0] == 0x30
    parsed = parse_certs_only(der)
    assert _fps(parsed) == _fps([leaf_cert, ca_cert])
    assert _fps(crypto_pkcs7.load_der_pkcs7_certificates(der)) == _fps([leaf_cert, ca_cert])
    # A SET OF has no meaningful order; order_certificates restores leaf -> root.
    assert order_certificates(parsed) == [leaf_cert, ca_cert]
    assert order_certificates(list(reversed(parsed))) == [leaf_cert, ca_cert]


def test_body_is_wrapped_base64(ca_cert: x509.Certificate, leaf_cert: x509.Certificate) -> None:
    body = encode_certs_only_body([leaf_cert, ca_cert])
    assert body.endswith(b"\n")
    assert max(len(line) for line in body.splitlines()) == 64
    assert _fps(decode_certs_only_body(body)) == _fps([leaf_cert, ca_cert])


def test_decode_body_accepts_der_pem_pkcs7_and_pem_bundle(
    ca_cert: x509.Certificate, leaf_cert: x509.Certificate
) -> None:
    certs = [leaf_cert, ca_cert]
    der = build_certs_only(certs)
    assert _fps(decode_certs_only_body(der)) == _fps(certs)
    assert _fps(decode_certs_only_body(der + b"\x00")) == _fps(certs)
    pem_pkcs7 = crypto_pkcs7.serialize_certificates(certs, serialization.Encoding.PEM)
    assert pem_pkcs7.startswith(b"-----BEGIN PKCS7-----")
    assert _fps(decode_certs_only_body(pem_pkcs7)) == _fps(certs)
    # A PEM bundle keeps its order (no SET OF involved).
    assert decode_certs_only_body(b"\n" + certificates_to_pem(certs)) == certs
    messy = encode_base64_body(der).replace(b"\n", b"\r\n \t")
    assert _fps(decode_certs_only_body(messy)) == _fps(certs)


def test_openssl_written_certs_only_is_read(
    tmp_path: Path, ca_cert: x509.Certificate, leaf_cert: x509.Certificate
) -> None:
    # openssl's own PKCS#7 writer (what many EST servers use) must be readable.
    pem = tmp_path / "certs.pem"
    pem.write_bytes(certificates_to_pem([leaf_cert, ca_cert]))
    der = run_openssl("crl2pkcs7", "-nocrl", "-certfile", str(pem), "-outform", "DER")
    assert _fps(parse_certs_only(der)) == _fps([leaf_cert, ca_cert])
    assert _fps(decode_certs_only_body(encode_base64_body(der))) == _fps([leaf_cert, ca_cert])


def test_build_refuses_empty_and_oversized(p256_key: PrivateKey, ca_cert: x509.Certificate) -> None:
    with pytest.raises(Pkcs7Error, match="at least one certificate"):
        build_certs_only([])
    with pytest.raises(Pkcs7Error, match=f"exceed the limit of {MAX_CERTS_IN_PKCS7}"):
        build_certs_only([ca_cert] * (MAX_CERTS_IN_PKCS7 + 1))


def test_parse_refuses_too_many_certificates(ca_cert: x509.Certificate) -> None:
    der = crypto_pkcs7.serialize_certificates(
        [ca_cert] * (MAX_CERTS_IN_PKCS7 + 1), serialization.Encoding.DER
    )
    with pytest.raises(Pkcs7Error, match=f"over the limit of {MAX_CERTS_IN_PKCS7}"):
        parse_certs_only(der)


def test_parse_errors_name_the_problem(ca_cert: x509.Certificate) -> None:
    der = build_certs_only([ca_cert])
    with pytest.raises(Pkcs7Error, match="cannot parse the PKCS#7 certs-only structure"):
        parse_certs_only(der[:-10])
    with pytest.raises(Pkcs7Error, match="unexpected byte"):
        parse_certs_only(der + b"junk")
    with pytest.raises(Pkcs7Error, match="cannot parse the PKCS#7"):
        parse_certs_only(b"")
    # A ContentInfo of type id-data (1.2.840.113549.1.7.1) is PKCS#7 but not SignedData.
    id_data = bytes.fromhex("300f06092a864886f70d010701a0020400")
    with pytest.raises(Pkcs7Error, match="not a certs-only SignedData"):
        parse_certs_only(id_data)


def test_decode_body_errors(ca_cert: x509.Certificate) -> None:
    with pytest.raises(EncodingError, match="not valid base64"):
        decode_certs_only_body(b"this is not base64 !")
    with pytest.raises(Pkcs7Error, match="cannot parse the PKCS#7"):
        decode_certs_only_body(encode_base64_body(b"\x30\x03\x02\x01\x00"))
    with pytest.raises(Pkcs7Error, match="unexpected PEM block 'PRIVATE KEY'"):
        decode_certs_only_body(b"-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n")
    with pytest.raises(EncodingError, match="bad content"):
        decode_certs_only_body(b"-----BEGIN CERTIFICATE-----\n*\n-----END CERTIFICATE-----\n")
    with pytest.raises(Pkcs7Error, match="cannot be read"):
        decode_certs_only_body(b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n")
    with pytest.raises(Pkcs7Error, match="no complete PKCS7 or CERTIFICATE block"):
        decode_certs_only_body(b"-----BEGIN CERTIFICATE-----\nMAA=\n")


def test_openssl_reads_our_certs_only(
    tmp_path: Path, ca_cert: x509.Certificate, leaf_cert: x509.Certificate
) -> None:
    der_path = tmp_path / "certs.p7b"
    der_path.write_bytes(build_certs_only([leaf_cert, ca_cert]))
    out = run_openssl("pkcs7", "-inform", "DER", "-in", str(der_path), "-print_certs")
    assert _fps(x509.load_pem_x509_certificates(out)) == _fps([leaf_cert, ca_cert])
    # And the base64 body, read as PEM body by openssl base64 decoding.
    body = encode_certs_only_body([leaf_cert])
    decoded = run_openssl("base64", "-d", input_bytes=body)
    assert parse_certs_only(decoded) == [leaf_cert]


def test_ber_indefinite_length_and_unsorted_set_are_tolerated(
    ca_cert: x509.Certificate, leaf_cert: x509.Certificate
) -> None:
    # Rebuild our DER ContentInfo with indefinite lengths on the outer two levels (BER), the
    # way some stream-oriented servers write it, and with the certificates in unsorted order.
    der = build_certs_only([leaf_cert, ca_cert])
    content_info = _asn1.Element(der)
    oid, explicit = content_info.children()
    ber = b"\x30\x80" + oid.der + b"\xa0\x80" + explicit.contents + b"\x00\x00\x00\x00"
    assert _fps(parse_certs_only(ber)) == _fps([leaf_cert, ca_cert])
    assert _fps(decode_certs_only_body(encode_base64_body(ber))) == _fps([leaf_cert, ca_cert])
