"""End to end in a real headless Chromium (Debian's package, driven by Playwright): a device's
request is queued (202), shows up live on the requests page, the operator approves it in the
browser and the device's retry gets the certificate; revoking in the browser puts the serial on
the server's CRL (read with ``openssl crl``); a cross-site form post from another origin is
refused. Screenshots of every page go to ``test-artifacts/console/``."""

from __future__ import annotations

import http.server
import re
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from estkit.protocol.keys import public_keys_equal
from estkit.protocol.pkcs7 import decode_certs_only_body

from .helpers import ARTIFACTS, ConsoleEnv, ensure_program, new_key, spki_pins

playwright_sync = pytest.importorskip("playwright.sync_api")

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDE = {"width": 1280, "height": 800}
NARROW = {"width": 390, "height": 844}
# Generous upper bounds for things to appear; not timing assertions.
APPEAR_TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def browser(console_env: ConsoleEnv) -> Iterator[Browser]:
    chromium = ensure_program("chromium", "chromium")
    pins = ",".join(spki_pins(console_env.paths.server_certificates))
    args = [*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={pins}"]
    with playwright_sync.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium, args=args)
        try:
            yield instance
        finally:
            instance.close()


def _signed_in_page(browser: Browser, env: ConsoleEnv, operator: str, viewport: dict) -> Page:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.goto(env.console.new_login_url(operator))
    page.wait_for_url(env.console.url + "/")
    return page


def _shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0
    return path


def test_approve_in_browser_then_revoke_puts_the_serial_on_the_crl(
    console_env: ConsoleEnv, browser: Browser
) -> None:
    env = console_env
    key = new_key()
    queued = env.enroll(key, "studio-cam-7.example")
    assert queued.status_code == 202
    assert queued.headers["Retry-After"] == "1"

    page = _signed_in_page(browser, env, "olivia", WIDE)
    assert page.locator(".operator").inner_text() == "olivia"
    assert int(page.locator(".stat.warn .value").first.inner_text()) >= 1

    page.goto(env.console.url + "/requests")
    row = page.locator('tr[data-cn="studio-cam-7.example"]')
    row.wait_for()
    row_text = row.inner_text()
    for expected in ("ECDSA P-256", "estkit-demo-device", "Manufacturer CA", "127.0.0.1", "manual"):
        assert expected in row_text
    assert "sha256:" in row.locator(".fp").inner_text()

    # Live refresh: a second device queues while the page is open and appears without a reload.
    page.evaluate("window.__sameDocument = true")
    assert env.enroll(new_key(), "studio-cam-8.example").status_code == 202
    page.locator('tr[data-cn="studio-cam-8.example"]').wait_for(timeout=APPEAR_TIMEOUT_MS)
    assert page.evaluate("window.__sameDocument") is True
    page.locator("#live-status.on").wait_for()
    _shot(page, "requests")

    row.get_by_role("button", name="Approve").click()
    page.locator(".notice.ok").wait_for()
    assert "approved" in page.locator(".notice.ok").inner_text()
    # Out of the queue, into the decisions table with the operator's name.
    assert page.locator('#pending tr[data-cn="studio-cam-7.example"]').count() == 0
    request_id = env.pending_request("studio-cam-8.example")  # still waiting: untouched

    # The device repeats the identical request and now receives its certificate.
    issued = env.enroll(key, "studio-cam-7.example")
    assert issued.status_code == 200, issued.text
    # A certs-only reply is a SET: find ours by its public key, not by position.
    certificates = decode_certs_only_body(issued.content)
    mine = [c for c in certificates if public_keys_equal(c.public_key(), key.public_key())]
    assert len(mine) == 1
    certificate = mine[0]
    serial = format(certificate.serial_number, "x")
    with env.store() as store:
        decided = [r for r in store.list_requests() if r.common_name == "studio-cam-7.example"]
        assert decided[-1].decided_by == "olivia"
        assert decided[-1].status == "issued"
        assert store.get_request(request_id).status == "pending"

    page.goto(env.console.url + "/certificates?q=studio-cam-7")
    cert_row = page.locator(f"#cert-{serial}")
    cert_row.wait_for()
    assert cert_row.get_attribute("data-status") == "valid"
    _shot(page, "certificates")
    cert_row.locator("select[name=reason]").select_option("keyCompromise")
    page.once("dialog", lambda dialog: dialog.accept())
    cert_row.get_by_role("button", name="Revoke").click()
    page.locator(".notice.ok").wait_for()
    assert serial in page.locator(".notice.ok").inner_text()
    assert page.locator(f"#cert-{serial}").get_attribute("data-status") == "revoked"

    # The EST server's CRL, fetched with curl and read with openssl, lists the serial.
    crl_path = env.data_dir / "server-crl.der"
    curl = ensure_program("curl", "curl")
    openssl = ensure_program("openssl", "openssl")
    subprocess.run(
        [curl, "-sSf", "--cacert", env.ca_file, "-o", str(crl_path), env.server.url + "/crl"],
        check=True,
        timeout=60,
    )
    crl_text = subprocess.run(
        [openssl, "crl", "-inform", "DER", "-in", str(crl_path), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    listed = [int(s, 16) for s in re.findall(r"Serial Number: ([0-9A-F]+)", crl_text)]
    assert certificate.serial_number in listed
    assert "Key Compromise" in crl_text
    with env.store() as store:
        revocations = [
            e for e in store.list_events(kind="console") if e.fields.get("serial") == serial
        ]
    assert revocations and revocations[-1].fields["operator"] == "olivia"

    page.goto(env.console.url + "/ca")
    assert int(page.locator("#crl-count").inner_text()) >= 1
    assert "no rollover" in page.locator("#live").inner_text()
    _shot(page, "ca")

    # The dashboard counts what just happened, including a refusal by the EST server.
    refused = env.enroll(new_key(), "lost-device.example", label="no-such-label")
    assert refused.status_code == 404
    page.goto(env.console.url + "/")
    assert int(page.locator(".stat", has_text="revoked").locator(".value").inner_text()) >= 1
    refusals = page.locator("section", has_text="Refusals by reason").inner_text()
    assert "404" in refusals and "unknown EST label" in refusals
    activity = page.locator("section", has_text="Recent activity").inner_text()
    assert "olivia revoked certificate" in activity
    _shot(page, "dashboard")

    narrow = _signed_in_page(browser, env, "olivia", NARROW)
    narrow.goto(env.console.url + "/requests")
    narrow.locator('tr[data-cn="studio-cam-8.example"]').wait_for()
    # Stacked layout: the table header is hidden and each cell carries its column name.
    assert not narrow.locator("table.data thead").first.is_visible()
    _shot(narrow, "requests-narrow")
    narrow.goto(env.console.url + "/certificates")
    _shot(narrow, "certificates-narrow")


def test_browser_without_sign_in_sees_only_the_refusal(
    console_env: ConsoleEnv, browser: Browser
) -> None:
    context = browser.new_context(viewport=WIDE)
    page = context.new_page()
    response = page.goto(console_env.console.url + "/requests")
    assert response.status == 401
    assert "Sign-in required" in page.locator("h1").inner_text()
    assert page.locator("table").count() == 0
    _shot(page, "signed-out")
    context.close()


class _AttackerHandler(http.server.BaseHTTPRequestHandler):
    """Serves one page that silently posts an approval form to the console."""

    target = ""

    def do_GET(self) -> None:
        body = (
            "<!doctype html><html><body><h1>Cute cat pictures</h1>"
            f'<form id="f" method="post" action="{self.target}">'
            '<input type="hidden" name="csrf_token" value="guessed"></form>'
            "<script>document.getElementById('f').submit()</script></body></html>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_cross_site_form_post_is_refused(console_env: ConsoleEnv, browser: Browser) -> None:
    """The attacker's page is on another port of the console's host name (same site, so the
    browser even sends the SameSite=Strict cookie): the Origin check and the CSRF token stop it.
    It listens on 127.0.0.1 like the console and is reached by the same name, ``localhost``."""
    env = console_env
    assert env.enroll(new_key(), "csrf-victim.example").status_code == 202
    request_id = env.pending_request("csrf-victim.example")
    handler = type(
        "Handler",
        (_AttackerHandler,),
        {"target": f"{env.console.url}/requests/{request_id}/approve"},
    )
    attacker = http.server.ThreadingHTTPServer((env.console.host, 0), handler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pair = load_config_pair(env)
    tls.load_cert_chain(*pair)
    attacker.socket = tls.wrap_socket(attacker.socket, server_side=True)
    thread = threading.Thread(target=attacker.serve_forever, daemon=True)
    thread.start()
    try:
        page = _signed_in_page(browser, env, "olivia", WIDE)
        page.goto(f"https://{env.console.hostname}:{attacker.server_address[1]}/")
        page.wait_for_url(f"{env.console.url}/requests/{request_id}/approve")
        assert "Request refused" in page.locator("h1").inner_text()
        assert "Cross-site request protection" in page.content()
        _shot(page, "csrf-refused")
    finally:
        attacker.shutdown()
        attacker.server_close()
    with env.store() as store:
        assert store.get_request(request_id).status == "pending"
        refusals = [
            e
            for e in store.list_events(kind="console")
            if e.fields.get("path") == f"/requests/{request_id}/approve"
        ]
    assert refusals and "Origin" in refusals[-1].fields["reason"]
    assert refusals[-1].fields["operator"] == "olivia"


def load_config_pair(env: ConsoleEnv) -> tuple[str, str]:
    """The server's ECDSA certificate and key: already trusted by the test browser."""
    from estkit.server.config import load_config

    pair = load_config(env.data_dir).tls_certificates[-1]
    return str(pair.certificate), str(pair.key)
