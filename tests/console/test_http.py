"""The console over real HTTPS on 127.0.0.1, reached as ``localhost`` (the name its certificate
carries): sign-in, refusals, CSRF and the actions, with httpx and curl/openssl as clients. Each
refusal test shows the request reached the console (its own error page or audit record) and that
nothing changed in the store."""

from __future__ import annotations

import ssl
import subprocess

import httpx
import pytest

from estkit.console import issue_admin_certificate
from estkit.console.admin_ca import admin_ca_paths

from .helpers import ConsoleEnv, csrf_from, ensure_program, new_key

PAGES = ("/", "/requests", "/certificates", "/ca", "/ca/crl.pem", "/ca/cacerts.pem")


def _console_events(env: ConsoleEnv) -> list:
    with env.store() as store:
        return store.list_events(kind="console")


def test_every_page_refuses_without_sign_in(console_env: ConsoleEnv) -> None:
    with console_env.console_client() as client:
        for path in (*PAGES, "/static/console.css", "/static/console.js", "/certificates/1.pem"):
            response = client.get(console_env.console.url + path)
            assert response.status_code == 401, path
            assert "Sign-in required" in response.text
            assert "operator certificate" in response.text
        live = client.get(console_env.console.url + "/requests", headers={"X-Console-Live": "1"})
        assert live.status_code == 401
        assert live.json() == {"error": "sign-in required"}


def test_unauthenticated_approve_is_refused_and_changes_nothing(console_env: ConsoleEnv) -> None:
    assert console_env.enroll(new_key(), "unauth-approve.example").status_code == 202
    request_id = console_env.pending_request("unauth-approve.example")
    with console_env.console_client() as client:
        response = client.post(
            f"{console_env.console.url}/requests/{request_id}/approve",
            data={"csrf_token": "0" * 64},
            headers={"Origin": console_env.console.url},
        )
    assert response.status_code == 401
    assert "Sign-in required" in response.text
    with console_env.store() as store:
        assert store.get_request(request_id).status == "pending"


def test_wrong_token_is_refused_and_audited(console_env: ConsoleEnv) -> None:
    with console_env.console_client() as client:
        response = client.get(console_env.console.url + "/login?token=not-the-token")
        assert response.status_code == 403
        assert "not valid" in response.text
        assert "set-cookie" not in response.headers
        assert client.get(console_env.console.url + "/").status_code == 401
    assert any(
        "sign-in refused: this sign-in token is not valid" in event.message
        for event in _console_events(console_env)
    )


def test_token_sign_in_sets_a_strict_session_cookie(console_env: ConsoleEnv) -> None:
    with console_env.console_client() as client:
        response = client.get(console_env.console.new_login_url("carol"))
        assert response.status_code == 200
        cookie = response.headers["set-cookie"]
        for flag in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
            assert flag in cookie
        assert 'http-equiv="refresh"' in response.text
        page = client.get(console_env.console.url + "/")
        assert page.status_code == 200
        assert "carol" in page.text
        headers = page.headers
        assert "default-src 'none'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-store"
        # Signing out ends the session on the server, not just in the browser.
        session = client.cookies.get("estkit_console_session")
        logout = client.post(
            console_env.console.url + "/logout",
            data={"csrf_token": csrf_from(page.text)},
            headers={"Origin": console_env.console.url},
        )
        assert logout.status_code == 200
    with console_env.console_client() as stale:
        stale.cookies.set(
            "estkit_console_session", session, domain=httpx.URL(console_env.console.url).host
        )
        assert stale.get(console_env.console.url + "/").status_code == 401


def test_unknown_host_name_is_refused(console_env: ConsoleEnv) -> None:
    with console_env.signed_in_client() as client:
        response = client.get(console_env.console.url + "/", headers={"Host": "attacker.example"})
    assert response.status_code == 421
    assert "attacker.example" in response.text


def test_certificate_name_and_bound_address_are_accepted_hosts(console_env: ConsoleEnv) -> None:
    """The URL uses the certificate's name; the bound address (a literal no DNS answer can
    forge) is accepted in Host as well, and a state change must then come from that origin."""
    console = console_env.console
    assert (console.host, console.hostname) == ("127.0.0.1", "localhost")
    assert console.url == f"https://localhost:{console.port}"
    by_address = f"127.0.0.1:{console.port}"
    with console_env.signed_in_client() as client:
        page = client.get(console.url + "/requests", headers={"Host": by_address})
        assert page.status_code == 200
        assert "Sign out" in page.text
        # Same session, same CSRF token, but the Origin names another origin than the Host.
        logout = client.post(
            console.url + "/logout",
            data={"csrf_token": csrf_from(page.text)},
            headers={"Host": by_address, "Origin": console.url},
        )
        assert logout.status_code == 403
        assert f"is not this console (https://{by_address})" in logout.text
        assert client.get(console.url + "/").status_code == 200  # still signed in
        logout = client.post(
            console.url + "/logout",
            data={"csrf_token": csrf_from(page.text)},
            headers={"Host": by_address, "Origin": f"https://{by_address}"},
        )
        assert logout.status_code == 200
        assert client.get(console.url + "/").status_code == 401


@pytest.mark.parametrize(
    ("case", "origin_headers", "send_token"),
    [
        ("no token", {"Origin": None}, False),
        ("foreign origin", {"Origin": "https://evil.example"}, True),
        ("null origin", {"Origin": "null"}, True),
        ("no origin or referer", {}, True),
    ],
)
def test_csrf_attempts_are_refused(
    console_env: ConsoleEnv, case: str, origin_headers: dict, send_token: bool
) -> None:
    common_name = f"csrf-{case.replace(' ', '-')}.example"
    assert console_env.enroll(new_key(), common_name).status_code == 202
    request_id = console_env.pending_request(common_name)
    before = len(_console_events(console_env))
    with console_env.signed_in_client() as client:
        token = csrf_from(client.get(console_env.console.url + "/requests").text)
        headers = {
            name: (value if value is not None else console_env.console.url)
            for name, value in origin_headers.items()
        }
        response = client.post(
            f"{console_env.console.url}/requests/{request_id}/approve",
            data={"csrf_token": token} if send_token else {},
            headers=headers,
        )
    assert response.status_code == 403
    assert "Cross-site request protection" in response.text
    with console_env.store() as store:
        assert store.get_request(request_id).status == "pending"
    refused = _console_events(console_env)[before:]
    assert any("console refused POST" in e.message for e in refused), refused


def test_csrf_token_of_another_session_is_refused(console_env: ConsoleEnv) -> None:
    assert console_env.enroll(new_key(), "csrf-other-session.example").status_code == 202
    request_id = console_env.pending_request("csrf-other-session.example")
    with console_env.signed_in_client() as first:
        foreign_token = csrf_from(first.get(console_env.console.url + "/requests").text)
    with console_env.signed_in_client() as second:
        response = second.post(
            f"{console_env.console.url}/requests/{request_id}/approve",
            data={"csrf_token": foreign_token},
            headers={"Origin": console_env.console.url},
        )
    assert response.status_code == 403
    assert "does not belong to this sign-in" in response.text


def test_approve_and_reject_record_the_operator(console_env: ConsoleEnv) -> None:
    approve_key = new_key()
    assert console_env.enroll(approve_key, "http-approve.example").status_code == 202
    assert console_env.enroll(new_key(), "http-reject.example").status_code == 202
    approve_id = console_env.pending_request("http-approve.example")
    reject_id = console_env.pending_request("http-reject.example")
    with console_env.signed_in_client("dave") as client:
        token = csrf_from(client.get(console_env.console.url + "/requests").text)
        origin = {"Origin": console_env.console.url}
        approved = client.post(
            f"{console_env.console.url}/requests/{approve_id}/approve",
            data={"csrf_token": token},
            headers=origin,
        )
        assert approved.status_code == 200  # after the 303 to the requests page
        assert f"Request #{approve_id} approved" in approved.text
        rejected = client.post(
            f"{console_env.console.url}/requests/{reject_id}/reject",
            data={"csrf_token": token, "note": "unknown device"},
            headers=origin,
        )
        assert f"Request #{reject_id} rejected" in rejected.text
        again = client.post(
            f"{console_env.console.url}/requests/{reject_id}/approve",
            data={"csrf_token": token},
            headers=origin,
        )
        assert again.status_code == 409
        assert "rejected by dave" in again.text
    with console_env.store() as store:
        assert store.get_request(approve_id).decided_by == "dave"
        rejected_request = store.get_request(reject_id)
        assert (rejected_request.status, rejected_request.note) == ("rejected", "unknown device")
        console_events = store.list_events(kind="console")
    assert any(
        e.fields.get("operator") == "dave" and e.fields.get("request_id") == approve_id
        for e in console_events
    )
    # The device's identical retry now gets its certificate.
    assert console_env.enroll(approve_key, "http-approve.example").status_code == 200


def test_operator_certificate_signs_in_with_curl(console_env: ConsoleEnv) -> None:
    curl = ensure_program("curl", "curl")
    cert, key = issue_admin_certificate(console_env.data_dir, "erin")
    base = [curl, "-sS", "--cacert", console_env.ca_file, "-o", "-", "-w", "\n%{http_code}"]
    signed_in = subprocess.run(
        [*base, "--cert", str(cert), "--key", str(key), console_env.console.url + "/ca"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    body, _, status = signed_in.stdout.rpartition("\n")
    assert status == "200"
    assert "erin" in body and "Certificate revocation list" in body
    anonymous = subprocess.run(
        [*base, console_env.console.url + "/ca"], capture_output=True, text=True, timeout=60
    )
    assert anonymous.stdout.rpartition("\n")[2] == "401"


def test_operator_certificate_actions_are_audited_with_its_fingerprint(
    console_env: ConsoleEnv,
) -> None:
    cert, key = issue_admin_certificate(console_env.data_dir, "frank")
    assert console_env.enroll(new_key(), "cert-operator.example").status_code == 202
    request_id = console_env.pending_request("cert-operator.example")
    context = ssl.create_default_context(cafile=console_env.ca_file)
    context.load_cert_chain(cert, key)
    with httpx.Client(verify=context, timeout=30) as client:
        page = client.get(console_env.console.url + "/requests")
        assert "Sign out" not in page.text  # nothing to sign out of with a certificate
        response = client.post(
            f"{console_env.console.url}/requests/{request_id}/reject",
            data={"csrf_token": csrf_from(page.text)},
            headers={"Origin": console_env.console.url},
        )
        assert response.status_code == 303
        assert response.headers["location"] == f"/requests?done=rejected&id={request_id}"
    with console_env.store() as store:
        assert store.get_request(request_id).decided_by == "frank"
        events = [
            e for e in store.list_events(kind="console") if e.fields.get("operator") == "frank"
        ]
    assert events and events[-1].fields["auth"] == "certificate"
    assert events[-1].fields["operator_certificate"].startswith("sha256:")


def test_device_certificate_cannot_sign_in(console_env: ConsoleEnv) -> None:
    """A certificate from the EST world (here the demo device's) is never an operator."""
    context = ssl.create_default_context(cafile=console_env.ca_file)
    context.load_cert_chain(console_env.paths.device_certificate, console_env.paths.device_key)
    client = httpx.Client(verify=context, timeout=30)
    if not console_env.server.info.verify_in_app:
        # TLS fallback mode: the handshake itself verifies against the operators CA only.
        with client, pytest.raises(httpx.ConnectError):
            client.get(console_env.console.url + "/")
        return
    with client:
        response = client.get(console_env.console.url + "/")
    assert response.status_code == 403
    assert "not issued by the console operators CA" in response.text


def test_operators_ca_is_separate_from_the_est_ca(console_env: ConsoleEnv) -> None:
    openssl = ensure_program("openssl", "openssl")
    cert, _ = issue_admin_certificate(console_env.data_dir, "grace")
    operators_ca, _ = admin_ca_paths(console_env.data_dir)
    good = subprocess.run(
        [openssl, "verify", "-CAfile", str(operators_ca), str(cert)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert good.returncode == 0, good.stderr
    est_root = subprocess.run(
        [openssl, "verify", "-CAfile", console_env.ca_file, str(cert)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert est_root.returncode != 0


def test_revoke_over_http_lists_the_serial_in_the_server_crl(console_env: ConsoleEnv) -> None:
    key = new_key()
    assert console_env.enroll(key, "http-revoke.example").status_code == 202
    request_id = console_env.pending_request("http-revoke.example")
    with console_env.signed_in_client() as client:
        token = csrf_from(client.get(console_env.console.url + "/requests").text)
        origin = {"Origin": console_env.console.url}
        client.post(
            f"{console_env.console.url}/requests/{request_id}/approve",
            data={"csrf_token": token},
            headers=origin,
        )
        assert console_env.enroll(key, "http-revoke.example").status_code == 200
        with console_env.store() as store:
            serial = store.get_request(request_id).serial
        download = client.get(f"{console_env.console.url}/certificates/{serial}.pem")
        assert download.status_code == 200
        assert download.text.startswith("-----BEGIN CERTIFICATE-----")
        bad_reason = client.post(
            f"{console_env.console.url}/certificates/{serial}/revoke",
            data={"csrf_token": token, "reason": "boredom"},
            headers=origin,
        )
        assert bad_reason.status_code == 409
        assert "unknown revocation reason" in bad_reason.text
        revoked = client.post(
            f"{console_env.console.url}/certificates/{serial}/revoke",
            data={"csrf_token": token, "reason": "superseded"},
            headers=origin,
        )
        assert revoked.status_code == 200
        assert f"Certificate {serial} revoked" in revoked.text
        twice = client.post(
            f"{console_env.console.url}/certificates/{serial}/revoke",
            data={"csrf_token": token, "reason": "superseded"},
            headers=origin,
        )
        assert twice.status_code == 409
    with httpx.Client(verify=console_env.trust(), timeout=30) as est:
        crl_der = est.get(console_env.server.url + "/crl").content
    from cryptography import x509

    crl = x509.load_der_x509_crl(crl_der)
    entry = crl.get_revoked_certificate_by_serial_number(int(serial, 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.value == (
        "superseded"
    )
    # The same library call as `estkit server revoke`: the published CRL file is rewritten too.
    published = x509.load_der_x509_crl((console_env.data_dir / "crl.der").read_bytes())
    assert published.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
