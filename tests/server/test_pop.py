"""Proof-of-possession linking (E14, RFC 7030 §3.5): challengePassword = base64(tls-unique) of
the TLS 1.2 session, never trusted under TLS 1.3. http.client is the witness here: curl cannot
put the session's tls-unique into the CSR it sends."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from estkit.protocol.csr import build_csr, encode_csr_body
from estkit.protocol.keys import generate_private_key
from estkit.protocol.pop import challenge_password_for

from .witness import HttpResult, client_context, last_event_id, last_refusal, post

if TYPE_CHECKING:
    from conftest import EstkitTestServer

TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3


def _enroll(
    server: EstkitTestServer, label: str | None, version: ssl.TLSVersion, password: str | None
) -> HttpResult:
    """``password``: "link" = the session's tls-unique, None = absent, else that literal text."""
    key = generate_private_key("p256")
    context = client_context(
        server.paths.ca_certificates,
        cert=server.paths.device_certificate,
        key=server.paths.device_key,
        tls_version=version,
    )

    def body(sock: ssl.SSLSocket) -> bytes:
        value = password
        if password == "link":
            unique = sock.get_channel_binding("tls-unique")
            assert unique is not None
            value = challenge_password_for(unique)
        csr = build_csr(key, common_name="pop.example.com", challenge_password=value)
        return encode_csr_body(csr)

    url = urlsplit(server.est_url("simpleenroll", label))
    # The URL's name (``localhost``), not the bound address: the certificate names no address.
    assert url.hostname is not None and url.port == server.port
    return post(url.hostname, server.port, url.path, b"", context, body_for_tls_unique=body)


def test_linked_csr_is_accepted_under_tls12(estkit_server: EstkitTestServer) -> None:
    response = _enroll(estkit_server, "pop", TLS12, "link")
    assert response.status == 200, response.text


@pytest.mark.parametrize(
    ("label", "version", "password", "reason"),
    [
        ("pop", TLS12, "not-the-tls-unique", "does not match this TLS session"),
        (None, TLS12, "not-the-tls-unique", "does not match this TLS session"),
        ("pop", TLS12, None, "requires proof-of-possession"),
        ("pop", TLS13, "link-impossible", "exists only in TLS 1.2"),
    ],
)
def test_pop_refusals(
    estkit_server: EstkitTestServer,
    label: str | None,
    version: ssl.TLSVersion,
    password: str | None,
    reason: str,
) -> None:
    store = estkit_server.open_store()
    before = last_event_id(store)
    response = _enroll(estkit_server, label, version, password)
    assert response.status == 400
    assert reason in response.text
    assert reason in last_refusal(store, before).message


def test_challenge_password_is_not_checked_under_tls13(estkit_server: EstkitTestServer) -> None:
    """Python returns bytes for tls-unique even under TLS 1.3; the server must not compare
    them. A label without require_pop accepts the request (nothing can be checked)."""
    response = _enroll(estkit_server, None, TLS13, "anything")
    assert response.status == 200, response.text
