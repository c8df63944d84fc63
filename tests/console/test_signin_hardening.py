"""Console sign-in hardening (issue 24, item 7), over real HTTPS.

Operator certificates are recorded when issued and checked against the store on every request, so
`estkit server revoke-admin-cert` shuts a certificate out at once (even on an open connection).
Sign-in tokens work once, for 10 minutes (the clock is injected), only for the operator they were
made for, and are never written whole to a log or to the audit trail.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import ssl
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from estkit.console import issue_admin_certificate, start_console
from estkit.console.admin_ca import load_admin_ca, operator_paths
from estkit.console.auth import LOGIN_TOKEN_LIFETIME_SECONDS, token_label

from .helpers import ConsoleEnv


def _estkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "estkit.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _cert_client(env: ConsoleEnv, cert, key) -> httpx.Client:
    context = ssl.create_default_context(cafile=env.ca_file)
    context.load_cert_chain(cert, key)
    return httpx.Client(verify=context, timeout=30)


def test_a_revoked_operator_certificate_is_refused_on_the_next_request(
    console_env: ConsoleEnv,
) -> None:
    cert, key = issue_admin_certificate(console_env.data_dir, "henry")
    with _cert_client(console_env, cert, key) as client:
        assert client.get(console_env.console.url + "/ca").status_code == 200
        revoked = _estkit("server", "revoke-admin-cert", str(console_env.data_dir), "henry")
        assert revoked.returncode == 0, revoked.stdout + revoked.stderr
        # Same client, same TLS connection: the check is per request, not per handshake.
        refused = client.get(console_env.console.url + "/ca")
    assert refused.status_code == 403
    assert "Certificate not accepted" in refused.text and "was revoked" in refused.text
    listed = _estkit("server", "admin-certs", str(console_env.data_dir), "--json")
    henry = [r for r in json.loads(listed.stdout) if r["name"] == "henry"]
    assert [r["status"] for r in henry] == ["revoked"]


def test_an_operator_certificate_the_store_never_recorded_is_refused(
    console_env: ConsoleEnv, tmp_path
) -> None:
    # Signed by the real operators CA key (as a stolen key or an old estkit would), not recorded.
    ca_cert, ca_key = load_admin_ca(console_env.data_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ghost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "ghost.pem", tmp_path / "ghost.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with _cert_client(console_env, cert_path, key_path) as client:
        refused = client.get(console_env.console.url + "/ca")
    assert refused.status_code == 403
    assert "not recorded by this server" in refused.text
    assert not operator_paths(console_env.data_dir, "ghost")[0].exists()


class FakeClock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clocked(console_env: ConsoleEnv):
    """A second console on the same data directory whose clock the test moves."""
    clock = FakeClock()
    with start_console(console_env.data_dir, clock=clock) as console:
        yield console, clock


def _sign_in(console_env: ConsoleEnv, url: str) -> httpx.Response:
    with console_env.console_client() as client:
        return client.get(url)


def test_a_sign_in_token_works_once(console_env: ConsoleEnv, clocked) -> None:
    console, _ = clocked
    url = console.new_login_url("ivy")
    first = _sign_in(console_env, url)
    assert first.status_code == 200 and "Signed in as ivy" in first.text
    second = _sign_in(console_env, url)
    assert second.status_code == 403
    assert "already used" in second.text
    assert "set-cookie" not in second.headers


def test_a_sign_in_token_expires_after_ten_minutes(console_env: ConsoleEnv, clocked) -> None:
    console, clock = clocked
    assert LOGIN_TOKEN_LIFETIME_SECONDS <= 600
    fresh, stale = console.new_login_url("jane"), console.new_login_url("jane")
    start = clock.now
    clock.now = start + dt.timedelta(seconds=LOGIN_TOKEN_LIFETIME_SECONDS - 1)
    assert _sign_in(console_env, fresh).status_code == 200
    clock.now = start + dt.timedelta(seconds=LOGIN_TOKEN_LIFETIME_SECONDS + 1)
    late = _sign_in(console_env, stale)
    assert late.status_code == 403
    assert "expired" in late.text


def test_a_sign_in_token_is_bound_to_its_operator(console_env: ConsoleEnv, clocked) -> None:
    console, _ = clocked
    url = console.new_login_url("kate")
    token = parse_qs(urlsplit(url).query)["token"][0]
    other = f"{console.url}/login?token={token}&operator=mallory"
    refused = _sign_in(console_env, other)
    assert refused.status_code == 403
    assert "another operator" in refused.text
    # The refusal did not spend it: kate can still use her token.
    assert _sign_in(console_env, url).status_code == 200


def test_no_log_or_audit_record_holds_a_whole_token(
    console_env: ConsoleEnv, clocked, caplog: pytest.LogCaptureFixture
) -> None:
    console, _ = clocked
    tokens = []
    with caplog.at_level(logging.DEBUG):
        for operator in ("liam", "mia"):
            url = console.new_login_url(operator)
            tokens.append(parse_qs(urlsplit(url).query)["token"][0])
            assert _sign_in(console_env, url).status_code == 200
            assert _sign_in(console_env, url).status_code == 403  # spent: logged as refused
        wrong = "x" * 43
        tokens.append(wrong)
        assert _sign_in(console_env, f"{console.url}/login?token={wrong}").status_code == 403
    with console_env.store() as store:
        events = store.list_events(kind="console")
    audit = "\n".join(e.message + json.dumps(e.fields) for e in events)
    # The server side's logs (the test's own HTTP client logs the URLs it requests).
    server_log = "\n".join(
        record.getMessage()
        for record in caplog.records
        if record.name.startswith(("estkit", "aiohttp"))
    )
    assert server_log
    for token in tokens:
        assert token not in server_log
        assert token not in audit
        assert token_label(token) in audit  # the log names the token by its hash prefix
    assert any("console sign-in refused" in r.getMessage() for r in caplog.records)
