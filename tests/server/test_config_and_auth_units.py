"""Unit-level checks of the configuration file, HTTP Digest/Basic and client-certificate trust,
for the cases a live request cannot reach cheaply (expired nonces, replays, P-521 chains)."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from cryptography import x509

from estkit.ca.manufacturer import create_manufacturer_ca, issue_device_certificate
from estkit.server.clientauth import ClientTrust, TrustGroup
from estkit.server.config import (
    ConfigError,
    add_label,
    add_user,
    load_config,
    verify_basic_password,
)
from estkit.server.datadir import init_data_dir
from estkit.server.httpauth import NONCE_LIFETIME_SECONDS, HttpAuthenticator, parse_auth_params


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_data_dir(tmp_path_factory.mktemp("config-units")).data_dir


# --- configuration ----------------------------------------------------------------------------


def test_add_user_stores_hashes_never_the_password(data_dir: Path) -> None:
    add_user(data_dir, "bob", "s3cret-password")
    text = (data_dir / "estkit.toml").read_text()
    assert "s3cret-password" not in text
    user = load_config(data_dir).users["bob"]
    assert user.basic.startswith("scrypt$")
    assert verify_basic_password(user.basic, "s3cret-password")
    assert not verify_basic_password(user.basic, "wrong")
    expected = hashlib.sha256(b"bob:estkit:s3cret-password").hexdigest()
    assert user.digest_sha256 == expected


def test_bad_label_fields_leave_the_file_untouched(data_dir: Path) -> None:
    before = (data_dir / "estkit.toml").read_bytes()
    with pytest.raises(ValueError, match="unknown profile option"):
        add_label(data_dir, "lab", validity_days=3)
    with pytest.raises(ValueError, match="nmos auth_mode forbids"):
        add_label(data_dir, "lab", allow_wildcards=True)
    with pytest.raises(ValueError, match="operation name"):
        add_label(data_dir, "cacerts")
    assert (data_dir / "estkit.toml").read_bytes() == before


def test_broken_config_names_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "estkit.toml"
    config.write_text('[server]\nport = "eighty"\n')
    with pytest.raises(ConfigError, match=r"estkit\.toml: server\.port must be 0-65535"):
        load_config(config)
    config.write_text("[labels.x]\napproval = 'later'\n")
    with pytest.raises(ConfigError, match=r"\[labels\.x\]: approval must be one of"):
        load_config(config)
    with pytest.raises(ConfigError, match="no configuration file") as missing:
        load_config(tmp_path / "nothing-here.toml")
    assert "estkit server init" in (missing.value.hint or "")


# --- HTTP Digest ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _hex_hash(algorithm: str, text: str) -> str:
    name = "sha256" if algorithm == "SHA-256" else "md5"
    return hashlib.new(name, text.encode()).hexdigest()


def _digest_header(
    authenticator: HttpAuthenticator,
    nonce: str,
    *,
    algorithm: str,
    nc: str = "00000001",
    password: str = "pw",
    uri: str = "/.well-known/est/x/simpleenroll",
) -> str:
    """An Authorization header computed from RFC 7616 §3.4.1 directly."""
    ha1 = _hex_hash(algorithm, f"carol:{authenticator.realm}:{password}")
    ha2 = _hex_hash(algorithm, f"POST:{uri}")
    response = _hex_hash(algorithm, f"{ha1}:{nonce}:{nc}:abc:auth:{ha2}")
    return (
        f'Digest username="carol", realm="{authenticator.realm}", nonce="{nonce}", '
        f'uri="{uri}", qop=auth, nc={nc}, cnonce="abc", response="{response}", '
        f"algorithm={algorithm}"
    )


@pytest.fixture
def authenticator(data_dir: Path) -> tuple[HttpAuthenticator, Clock]:
    add_user(data_dir, "carol", "pw")
    config = load_config(data_dir)
    clock = Clock()
    return HttpAuthenticator(config.realm, lambda: config.users, b"k" * 32, clock=clock), clock


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_digest_accepts_both_algorithms_once_per_nc(authenticator, algorithm: str) -> None:
    auth, _ = authenticator
    nonce = auth.new_nonce()
    header = _digest_header(auth, nonce, algorithm=algorithm)
    uri = "/.well-known/est/x/simpleenroll"
    assert auth.check(header, method="POST", uri=uri).user == "carol"
    replay = auth.check(header, method="POST", uri=uri)
    assert replay.user is None and "reused" in replay.reason
    next_nc = _digest_header(auth, nonce, algorithm=algorithm, nc="00000002")
    assert auth.check(next_nc, method="POST", uri=uri).user == "carol"


def test_digest_refusals(authenticator) -> None:
    auth, clock = authenticator
    uri = "/.well-known/est/x/simpleenroll"
    nonce = auth.new_nonce()
    wrong = auth.check(
        _digest_header(auth, nonce, algorithm="SHA-256", password="nope"), method="POST", uri=uri
    )
    assert wrong.user is None and "wrong user name or password" in wrong.reason
    other_uri = auth.check(
        _digest_header(auth, nonce, algorithm="SHA-256"), method="POST", uri="/elsewhere"
    )
    assert "uri does not match" in other_uri.reason
    forged = auth.check(
        _digest_header(auth, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", algorithm="MD5"),
        method="POST",
        uri=uri,
    )
    assert "not issued by this server" in forged.reason
    clock.now += NONCE_LIFETIME_SECONDS + 1
    stale = auth.check(_digest_header(auth, nonce, algorithm="SHA-256"), method="POST", uri=uri)
    assert stale.user is None and stale.stale
    assert any("stale=true" in c for c in auth.challenges(stale=True))


def test_auth_param_parser_handles_quotes_and_commas() -> None:
    params = parse_auth_params('a="x, \\"y\\"", b=token, c=""')
    assert params == {"a": 'x, "y"', "b": "token", "c": ""}


# --- client certificate trust -----------------------------------------------------------------


def test_p521_device_chain_is_accepted_and_reasons_are_specific(tmp_path: Path) -> None:
    """cryptography's Web-PKI policy refuses P-521; the plain check accepts a sound chain."""
    manufacturer = create_manufacturer_ca(tmp_path / "m521", key_type="p521")
    device = issue_device_certificate(manufacturer, device_serial="P521", key_type="p521")
    group = TrustGroup.from_certificates("the test CA", "manufacturer", [manufacturer.certificate])
    trust = ClientTrust([group], lambda serial: (False, None))
    now = dt.datetime.now(dt.UTC)
    assert trust.check(device.certificate, now).trusted
    later = device.certificate.not_valid_after_utc + dt.timedelta(days=1)
    expired = trust.check(device.certificate, later)
    assert not expired.trusted and "expired on" in expired.reason
    # A CA certificate presented as a client certificate is not a device.
    as_client = trust.check(manufacturer.certificate, now)
    assert not as_client.trusted and "CA certificate" in as_client.reason
    assert trust.check(None, now).reason == "no client certificate was presented"


def test_own_revocation_is_checked(tmp_path: Path) -> None:
    manufacturer = create_manufacturer_ca(tmp_path / "own")
    device = issue_device_certificate(manufacturer, device_serial="OWN-1")
    group = TrustGroup.from_certificates("this server's CA", "own", [manufacturer.certificate])
    revoked_at = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    trust = ClientTrust([group], lambda serial: (True, revoked_at))
    status = trust.check(device.certificate, dt.datetime.now(dt.UTC))
    assert status.revoked and "revoked on 2030-01-01" in status.reason
    assert isinstance(status.certificate, x509.Certificate)


def test_cached_chain_verdict_never_hides_a_revocation(tmp_path: Path) -> None:
    manufacturer = create_manufacturer_ca(tmp_path / "cache")
    device = issue_device_certificate(manufacturer, device_serial="CACHE-1")
    group = TrustGroup.from_certificates("this server's CA", "own", [manufacturer.certificate])
    revocations: dict[str, dt.datetime] = {}
    trust = ClientTrust([group], lambda serial: (True, revocations.get(serial)))
    now = dt.datetime.now(dt.UTC)
    assert trust.check(device.certificate, now).trusted
    revocations[format(device.certificate.serial_number, "x")] = now
    second = trust.check(device.certificate, now)
    assert second.revoked and not second.trusted
