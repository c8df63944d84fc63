"""Profiles: defaults, validation with actionable messages, CSR policy mapping, TOML round trip."""

from __future__ import annotations

import tomllib

import pytest
import tomli_w
from cryptography.x509.oid import ExtendedKeyUsageOID

from estkit.ca import Profile, ProfileError, profile_from_mapping, profile_to_mapping
from estkit.protocol import CsrPolicy


def test_defaults_follow_the_contract() -> None:
    profile = Profile()
    assert profile.label is None
    assert profile.validity_seconds == 90 * 86400
    assert profile.key_families == frozenset({"rsa", "ec"})
    assert profile.auth_mode == "nmos"
    assert profile.approval == "auto"
    assert profile.ekus == ("serverAuth", "clientAuth")
    assert profile.eku_oids == (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
    assert profile.backdate_seconds == 300
    assert profile.serverkeygen_key_type == "p256"


def test_nmos_profile_policy_refuses_wildcards_and_ip_addresses() -> None:
    policy = Profile(key_families=frozenset({"ec"})).csr_policy()
    assert isinstance(policy, CsrPolicy)
    assert policy.allow_wildcards is False
    assert policy.allow_ip_addresses is False
    assert policy.key_families == frozenset({"ec"})


def test_rfc7030_profile_may_allow_ip_addresses_and_wildcards() -> None:
    profile = Profile(auth_mode="rfc7030", allow_ip_addresses=True, allow_wildcards=True)
    policy = profile.csr_policy()
    assert policy.allow_ip_addresses and policy.allow_wildcards


def test_nmos_profile_refuses_ip_addresses_setting_with_a_clear_message() -> None:
    with pytest.raises(ProfileError, match="nmos auth_mode forbids wildcard names and IP"):
        Profile(allow_ip_addresses=True)
    with pytest.raises(ProfileError, match="auth_mode = 'rfc7030'"):
        Profile(allow_wildcards=True)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"validity_seconds": 0}, "validity_seconds must be between 1 and"),
        ({"validity_seconds": True}, "validity_seconds must be a whole number"),
        ({"validity_seconds": "90d"}, "validity_seconds must be a whole number"),
        ({"backdate_seconds": -1}, "backdate_seconds must be between 0 and 86400"),
        ({"retry_after_seconds": 0}, "retry_after_seconds must be between 1 and 3600"),
        ({"key_families": frozenset()}, "key_families must not be empty"),
        ({"key_families": frozenset({"dsa"})}, "unknown key family dsa"),
        ({"auth_mode": "basic"}, "auth_mode must be one of nmos, rfc7030"),
        ({"approval": "sometimes"}, "approval must be one of auto, manual, untrusted"),
        ({"ekus": ("serverauth",)}, "unknown extended key usage 'serverauth'"),
        ({"ekus": ()}, "ekus must not be empty"),
        ({"serverkeygen_key_type": "p192"}, "serverkeygen_key_type must be one of"),
        ({"label": "simpleenroll"}, "profile label: label 'simpleenroll' is an EST operation"),
        ({"label": "a/b"}, "profile label: invalid label"),
        ({"require_pop": "yes"}, "require_pop must be true or false"),
    ],
)
def test_invalid_values_are_refused_naming_the_field(fields: dict, message: str) -> None:
    with pytest.raises(ProfileError, match=message.replace("(", r"\(")):
        Profile(**fields)


def test_dotted_oid_ekus_are_accepted() -> None:
    profile = Profile(ekus=("serverAuth", "1.3.6.1.4.1.99999.1"))
    assert profile.eku_oids[1].dotted_string == "1.3.6.1.4.1.99999.1"


def test_toml_round_trip_through_mapping() -> None:
    original = Profile(
        label="manual",
        validity_seconds=3600,
        key_families=frozenset({"ec"}),
        approval="manual",
        retry_after_seconds=1,
        require_pop=True,
        ekus=("clientAuth", "serverAuth"),
    )
    table = profile_to_mapping(original)
    assert table["key_families"] == ["ec"]
    text = tomli_w.dumps({"labels": {"manual": profile_to_mapping(original, include_label=False)}})
    loaded = tomllib.loads(text)["labels"]["manual"]
    assert "label" not in loaded
    restored = profile_from_mapping(loaded, label="manual")
    assert restored == original


def test_default_profile_mapping_has_no_none_values() -> None:
    # TOML cannot hold None: an unlabelled profile must serialise without a label key.
    table = profile_to_mapping(Profile())
    assert "label" not in table
    assert None not in table.values()
    tomli_w.dumps(table)


def test_unknown_mapping_keys_are_refused() -> None:
    with pytest.raises(ProfileError, match=r"unknown profile option valdity_seconds; valid"):
        profile_from_mapping({"valdity_seconds": 10})


def test_string_instead_of_list_is_refused() -> None:
    with pytest.raises(ProfileError, match="key_families must be a list of strings"):
        profile_from_mapping({"key_families": "ec"})
    with pytest.raises(ProfileError, match="ekus must be a list of strings"):
        profile_from_mapping({"ekus": "serverAuth"})
