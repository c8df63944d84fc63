"""Proof-of-possession under TLS 1.3 (estkit extension, docs/tls13-pop.md): the server verifies
``"tls-exporter:" + base64(RFC 9266 tls-exporter)`` against its own end of the connection and
offers it in /csrattrs. http.client is the client here (it hands us the connected socket before
the body is built); a spy on the server's own call records what the *server* negotiated and read.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from estkit.protocol.csr import build_csr, encode_csr_body
from estkit.protocol.csrattrs import TLS_EXPORTER_POP_OID, decode_csrattrs
from estkit.protocol.encoding import decode_base64_body
from estkit.protocol.keys import generate_private_key
from estkit.protocol.pop import challenge_password_for, exporter_challenge_password_for
from estkit.server import app as server_app
from estkit.tlsbind import tls_exporter_for

from .witness import (
    HttpResult,
    certificate_from_response,
    client_context,
    curl,
    last_event_id,
    last_refusal,
    post,
    run,
    tool,
)

if TYPE_CHECKING:
    from pathlib import Path

    from conftest import EstkitTestServer

TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3


@pytest.fixture
def server_saw(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str | None, bytes | None]]:
    """(TLS version, tls-exporter) as the server's enroll handler read them, per request."""
    seen: list[tuple[str | None, bytes | None]] = []

    def spy(ssl_object: object) -> bytes | None:
        value = tls_exporter_for(ssl_object)
        version = ssl_object.version() if isinstance(ssl_object, ssl.SSLObject) else None
        seen.append((version, value))
        return value

    monkeypatch.setattr(server_app, "tls_exporter_for", spy)
    return seen


def _enroll(
    server: EstkitTestServer,
    label: str | None,
    version: ssl.TLSVersion,
    challenge: Callable[[ssl.SSLSocket], str | None],
    *,
    common_name: str = "pop13.example.com",
) -> HttpResult:
    key = generate_private_key("p256")
    context = client_context(
        server.paths.ca_certificates,
        cert=server.paths.device_certificate,
        key=server.paths.device_key,
        tls_version=version,
    )

    def body(sock: ssl.SSLSocket) -> bytes:
        csr = build_csr(key, common_name=common_name, challenge_password=challenge(sock))
        return encode_csr_body(csr)

    url = urlsplit(server.est_url("simpleenroll", label))
    assert url.hostname is not None
    return post(url.hostname, server.port, url.path, b"", context, body_for_tls_unique=body)


def _exporter_link(sock: ssl.SSLSocket) -> str:
    exporter = tls_exporter_for(sock)
    assert exporter is not None, "the client end could not read tls-exporter"
    return exporter_challenge_password_for(exporter)


def test_tls13_linked_csr_is_accepted_without_pinning(
    estkit_server: EstkitTestServer, server_saw: list[tuple[str | None, bytes | None]]
) -> None:
    sent: list[str] = []

    def link(sock: ssl.SSLSocket) -> str:
        assert sock.version() == "TLSv1.3"
        sent.append(_exporter_link(sock))
        return sent[-1]

    response = _enroll(estkit_server, "pop", TLS13, link, common_name="linked13.example.com")
    assert response.status == 200, response.text
    certificate = certificate_from_response(response.body)
    assert "linked13.example.com" in certificate.subject.rfc4514_string()
    # The server negotiated TLS 1.3 on its side and read the same value from its own end.
    assert len(server_saw) == 1
    version, exporter = server_saw[0]
    assert version == "TLSv1.3"
    assert exporter is not None and sent == [exporter_challenge_password_for(exporter)]


@pytest.mark.parametrize("label", ["pop", None])
def test_a_replayed_exporter_value_is_refused(
    estkit_server: EstkitTestServer,
    server_saw: list[tuple[str | None, bytes | None]],
    label: str | None,
) -> None:
    """The tls-exporter of a first connection, sent on a second: 400, naming tls-exporter. On a
    label without require_pop too: a value that claims a link must be the right one."""
    first: list[str] = []

    def link(sock: ssl.SSLSocket) -> str:
        first.append(_exporter_link(sock))
        return first[-1]

    taken = _enroll(estkit_server, label, TLS13, link)
    assert taken.status == 200, taken.text
    store = estkit_server.open_store()
    before = last_event_id(store)
    replay = _enroll(estkit_server, label, TLS13, lambda _sock: first[0])
    reason = "does not match this TLS session's tls-exporter value"
    assert replay.status == 400
    assert reason in replay.text
    assert reason in last_refusal(store, before).message
    assert [version for version, _value in server_saw] == ["TLSv1.3", "TLSv1.3"]
    assert server_saw[0][1] != server_saw[1][1]  # two connections, two values


def test_an_exporter_value_under_tls12_is_refused_saying_why(
    estkit_server: EstkitTestServer,
) -> None:
    store = estkit_server.open_store()
    before = last_event_id(store)

    def exporter_shaped(sock: ssl.SSLSocket) -> str:
        assert sock.version() == "TLSv1.2"
        return exporter_challenge_password_for(b"\x01" * 32)

    response = _enroll(estkit_server, "pop", TLS12, exporter_shaped)
    assert response.status == 400
    assert "accepted only under TLS 1.3" in response.text
    assert "tls-unique" in last_refusal(store, before).message


def test_tls12_tls_unique_still_links(estkit_server: EstkitTestServer) -> None:
    def unique(sock: ssl.SSLSocket) -> str:
        value = sock.get_channel_binding("tls-unique")
        assert sock.version() == "TLSv1.2" and value
        return challenge_password_for(value)

    response = _enroll(estkit_server, "pop", TLS12, unique)
    assert response.status == 200, response.text


def test_required_label_without_a_link_under_tls13_names_the_tls13_way(
    estkit_server: EstkitTestServer,
) -> None:
    response = _enroll(estkit_server, "pop", TLS13, lambda _sock: None)
    assert response.status == 400
    assert "requires proof-of-possession" in response.text
    assert '"tls-exporter:" + base64(tls-exporter) of this TLS 1.3 session' in response.text


def test_csrattrs_offers_tls_exporter_on_every_label(
    estkit_server: EstkitTestServer, tmp_path: Path
) -> None:
    for label in (None, "pop"):
        response = curl(
            estkit_server.est_url("csrattrs", label),
            cacert=estkit_server.paths.ca_certificates,
            content_type=None,
            workdir=tmp_path,
        )
        assert response.status == 200
        der = decode_base64_body(response.body)
        attrs, _warnings = decode_csrattrs(der)
        assert attrs.offers_tls_exporter
        assert attrs.requires_pop is (label == "pop")
        # openssl reads the OID from the DER on its own (an independent decoder).
        parsed = run([tool("openssl"), "asn1parse", "-inform", "DER"], input=der).stdout.decode()
        assert TLS_EXPORTER_POP_OID in parsed
