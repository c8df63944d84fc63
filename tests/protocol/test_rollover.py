"""Root CA rollover classification of /cacerts (RFC 4210 §4.4, RFC 7030 §4.1.3, E1)."""

from __future__ import annotations

import datetime
import random

import pytest
from cryptography import x509

from estkit.protocol import (
    PrivateKey,
    classify_ca_certificates,
    decode_certs_only_body,
    encode_certs_only_body,
    generate_private_key,
)

from .helpers import make_cert

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(days=200)


@pytest.fixture(scope="module")
def keys() -> dict[str, PrivateKey]:
    return {name: generate_private_key("p256") for name in ("old", "new", "issuing", "stranger")}


def _rollover_set(
    keys: dict[str, PrivateKey], new_name: str = "Root"
) -> dict[str, x509.Certificate]:
    old, new = keys["old"], keys["new"]
    return {
        "old_with_old": make_cert(old, "Root", not_before=T0),
        "new_with_new": make_cert(new, new_name, not_before=T1),
        # OldWithNew: the old public key, signed by the new key.
        "old_with_new": make_cert(old, "Root", issuer_key=new, issuer=new_name, not_before=T1),
        # NewWithOld: the new public key, signed by the old key.
        "new_with_old": make_cert(new, new_name, issuer_key=old, issuer="Root", not_before=T1),
        "issuing": make_cert(keys["issuing"], "Issuing CA", issuer_key=new, issuer=new_name),
    }


@pytest.mark.parametrize("new_name", ["Root", "Root G2"])
def test_full_rollover_set_in_any_order(keys: dict[str, PrivateKey], new_name: str) -> None:
    certs = _rollover_set(keys, new_name)
    shuffled = list(certs.values())
    random.Random(7).shuffle(shuffled)
    result = classify_ca_certificates(shuffled)
    assert result.in_rollover
    assert result.current_root is certs["new_with_new"]
    assert result.new_with_new is certs["new_with_new"]
    assert result.old_with_old is certs["old_with_old"]
    assert result.old_with_new is certs["old_with_new"]
    assert result.new_with_old is certs["new_with_old"]
    assert result.intermediates == [certs["issuing"]]
    assert result.roots == [certs["old_with_old"], certs["new_with_new"]]  # oldest first
    lines = result.describe()
    assert lines[0].startswith("current root (NewWithNew): CN=" + new_name)
    assert [line.split(":")[0] for line in lines] == [
        "current root (NewWithNew)",
        "OldWithOld",
        "OldWithNew",
        "NewWithOld",
        "intermediate",
    ]


def test_survives_the_wire(keys: dict[str, PrivateKey]) -> None:
    certs = _rollover_set(keys)
    wire = decode_certs_only_body(encode_certs_only_body(list(certs.values())))
    result = classify_ca_certificates(wire)
    assert result.old_with_new == certs["old_with_new"]
    assert result.new_with_old == certs["new_with_old"]
    assert result.current_root == certs["new_with_new"]


def test_single_root_outside_rollover(keys: dict[str, PrivateKey]) -> None:
    root = make_cert(keys["old"], "Root", not_before=T0)
    issuing = make_cert(keys["issuing"], "Issuing CA", issuer_key=keys["old"], issuer="Root")
    result = classify_ca_certificates([issuing, root])
    assert result.current_root is root
    assert result.roots == [root]
    assert not result.in_rollover
    assert result.old_with_old is None and result.new_with_new is None
    assert result.old_with_new is None and result.new_with_old is None
    assert result.intermediates == [issuing]
    assert result.describe()[0].startswith("root: CN=Root")


def test_only_intermediate_no_root(keys: dict[str, PrivateKey]) -> None:
    # Some servers answer /cacerts with only the issuing CA (checklist quirks).
    issuing = make_cert(keys["issuing"], "Issuing CA", issuer_key=keys["old"], issuer="Root")
    result = classify_ca_certificates([issuing])
    assert result.current_root is None
    assert result.roots == []
    assert result.intermediates == [issuing]


def test_empty_set() -> None:
    result = classify_ca_certificates([])
    assert result.current_root is None
    assert result.describe() == ["no CA certificates"]


def test_cross_certificate_signed_by_a_stranger_is_not_a_rollover_link(
    keys: dict[str, PrivateKey],
) -> None:
    certs = _rollover_set(keys)
    fake = make_cert(keys["old"], "Root", issuer_key=keys["stranger"], issuer="Root")
    result = classify_ca_certificates([certs["old_with_old"], certs["new_with_new"], fake])
    assert result.old_with_new is None
    assert result.new_with_old is None
    assert result.intermediates == [fake]
