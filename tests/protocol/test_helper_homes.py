"""Helpers that had several copies and now have one home in protocol/ (issue 22, item 4).

``key_type_for_curve`` / ``KeyInfo.key_type`` replace three curve -> key type tables (client
apply, client renewal, server serverkeygen); ``signed_with_key`` replaces the rollover module's
private copy and is the one the NMOS trust anchors should use; ``colon_hex`` is the one
fingerprint and key-id format (the console had its own).
"""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from estkit.protocol import (
    KEY_TYPES,
    KeyInfo,
    PrivateKey,
    colon_hex,
    describe_public_key,
    format_fingerprint,
    generate_private_key,
    is_hostname,
    is_signed_by,
    key_type_for_curve,
    key_usage,
    signed_with_key,
    split_host_port,
)

from .helpers import make_cert


@pytest.mark.parametrize(
    ("curve", "key_type"),
    [("secp256r1", "p256"), ("secp384r1", "p384"), ("secp521r1", "p521")],
)
def test_key_type_for_curve_names_every_curve_estkit_generates(curve: str, key_type: str) -> None:
    assert key_type_for_curve(curve) == key_type


@pytest.mark.parametrize("curve", ["secp256k1", "brainpoolP256r1", "", None])
def test_key_type_for_curve_is_none_for_other_curves(curve: str | None) -> None:
    assert key_type_for_curve(curve) is None


@pytest.mark.parametrize(
    "key_type", [t for t in KEY_TYPES if not t.startswith("rsa")] + ["rsa2048"]
)
def test_key_info_names_the_key_type_a_key_was_made_as(key_type: str) -> None:
    key = generate_private_key(key_type)
    assert describe_public_key(key.public_key()).key_type == key_type


@pytest.mark.parametrize(
    "info",
    [KeyInfo("rsa", 1024, None, "RSA 1024"), KeyInfo("ec", 256, "secp256k1", "ECDSA secp256k1")],
)
def test_key_info_has_no_key_type_for_keys_estkit_does_not_make(info: KeyInfo) -> None:
    assert info.key_type is None


@pytest.fixture(scope="module")
def roots() -> tuple[PrivateKey, x509.Certificate, PrivateKey, x509.Certificate]:
    old_key, new_key = generate_private_key("p256"), generate_private_key("p256")
    return (
        old_key,
        make_cert(old_key, "Old Root"),
        new_key,
        make_cert(new_key, "New Root"),
    )


def test_signed_with_key_links_a_cross_certificate_whose_names_differ(
    roots: tuple[PrivateKey, x509.Certificate, PrivateKey, x509.Certificate],
) -> None:
    old_key, old_root, new_key, new_root = roots
    # NewWithOld: the new root's key, certified by the old key, under the old root's name.
    new_with_old = make_cert(new_key, "New Root", issuer_key=old_key, issuer="Old Root Renamed")
    assert signed_with_key(new_with_old, old_root)
    # The name check of is_signed_by refuses it: that is why both helpers exist.
    assert not is_signed_by(new_with_old, old_root)
    assert not signed_with_key(new_with_old, new_root)


def test_signed_with_key_checks_rsa_signatures_too(rsa_key: PrivateKey) -> None:
    other = generate_private_key("p256")
    rsa_root = make_cert(rsa_key, "RSA Root")
    child = make_cert(other, "Child", issuer_key=rsa_key, issuer="Someone Else")
    assert signed_with_key(child, rsa_root)
    assert not signed_with_key(child, make_cert(other, "Child"))


def test_colon_hex_is_the_fingerprint_format(ca_cert: x509.Certificate) -> None:
    assert colon_hex(b"\x00\xab\x0f") == "00:AB:0F"
    assert colon_hex(b"") == ""
    assert format_fingerprint(ca_cert) == colon_hex(ca_cert.fingerprint(hashes.SHA256()))


def test_key_usage_sets_only_the_named_bits() -> None:
    usage = key_usage(digital_signature=True, key_agreement=True)
    assert usage.digital_signature and usage.key_agreement
    assert not (usage.key_encipherment or usage.key_cert_sign or usage.crl_sign)
    assert not (usage.content_commitment or usage.data_encipherment)
    ca = key_usage(key_cert_sign=True, crl_sign=True)
    assert ca.key_cert_sign and ca.crl_sign and not ca.digital_signature


def test_the_ca_builds_its_key_usages_with_the_one_helper(rsa_key: PrivateKey) -> None:
    from estkit.ca.builders import CA_KEY_USAGE, leaf_key_usage

    assert key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True) == CA_KEY_USAGE
    # keyEncipherment only for RSA (TLS 1.2 RSA key transport).
    assert leaf_key_usage(rsa_key.public_key()) == key_usage(
        digital_signature=True, key_encipherment=True
    )
    ec_key = generate_private_key("p256").public_key()
    assert leaf_key_usage(ec_key) == key_usage(digital_signature=True)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("node1.example.com", True),
        ("*.example.com", True),
        ("lab_host.local.", True),
        ("a" * 63 + ".example", True),
        ("a" * 64 + ".example", False),  # a label is at most 63 characters
        (".".join(["a" * 63] * 4), False),  # 255 characters: longer than a DNS name can be
        ("bad name", False),
        ("-leading.example", False),
        ("", False),
    ],
)
def test_is_hostname_has_one_home_in_protocol(name: str, expected: bool) -> None:
    assert is_hostname(name) is expected


def test_the_tls12_cipher_list_has_one_home() -> None:
    from estkit.client.trust import BCP_003_01_TLS12_CIPHERS as client_cipher_string
    from estkit.conformance.suites import TLS12_SUITES, TLS13_SUITES
    from estkit.protocol.tlsprofile import BCP_003_01_TLS12_CIPHERS, BCP_003_01_TLS13_SUITES

    assert client_cipher_string == ":".join(BCP_003_01_TLS12_CIPHERS)
    # The suite's table adds IANA names and SHALL/SHOULD; its names and order are the same.
    assert tuple(suite.openssl_name for suite in TLS12_SUITES) == BCP_003_01_TLS12_CIPHERS
    assert tuple(suite.openssl_name for suite in TLS13_SUITES) == BCP_003_01_TLS13_SUITES


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("dns.example", ("dns.example", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("[::1]", ("::1", 53)),
        ("::1", ("::1", 53)),  # a bare IPv6 address: its colons are not a port
    ],
)
def test_split_host_port_is_shared_by_the_node_and_the_suite(
    text: str, expected: tuple[str, int]
) -> None:
    from estkit.conformance.dnssd import parse_server
    from estkit.nmos.config import parse_host_port

    assert split_host_port(text, 53) == expected
    assert parse_server(text) == expected
    assert parse_host_port(text, 53) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("host:99999", "out of range"),
        ("host:http", "not a number"),
        ("", "no host"),
        (":53", "no host"),
    ],
)
def test_split_host_port_says_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        split_host_port(text, 53)
