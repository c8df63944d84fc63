"""Proof-of-possession under TLS 1.3 (tls-exporter, RFC 9266; estkit extension, docs/tls13-pop.md)
over real TLS: the client links to the TLS 1.3 connection when /csrattrs offers it, instead of
reconnecting pinned to TLS 1.2, and still falls back for servers that do not offer it.

The fixture server records, per request, the TLS version and tls-exporter of *its* end of the
connection, so every assertion about versions and values is the server's view.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from estkit.cli.main import cli
from estkit.client import AsyncEstClient, CsrSpec, EstClient, EstPopError
from estkit.client import _transport as client_transport
from estkit.client.submit import MAX_POP_RELINKS, POP_WHEN_POSSIBLE
from estkit.protocol import (
    CHALLENGE_PASSWORD_OID,
    TLS_EXPORTER_POP_OID,
    TLS_EXPORTER_PREFIX,
    CsrAttrs,
    PopResult,
    build_certs_only,
    check_pop,
    decode_csr_body,
    describe_csr,
    encode_base64_body,
    encode_csrattrs,
)
from estkit.server import app as server_app
from estkit.tlsbind import tls_exporter_for

from .pki import QuirkyPki
from .quirky import Canned, QuirkyServer, Recorded

if TYPE_CHECKING:
    from conftest import EstkitTestServer

CSRATTRS = "/.well-known/est/csrattrs"
ENROLL = "/.well-known/est/simpleenroll"

Start = Callable[..., QuirkyServer]


def _csrattrs(*, requires_pop: bool, offers_exporter: bool) -> Canned:
    oids = [x509.ObjectIdentifier(CHALLENGE_PASSWORD_OID)] if requires_pop else []
    if offers_exporter:
        oids.append(x509.ObjectIdentifier(TLS_EXPORTER_POP_OID))
    body = encode_base64_body(encode_csrattrs(CsrAttrs(oids=tuple(oids))))
    return Canned(200, [("Content-Type", "application/csrattrs")], body)


def _checking_enroll(pki: QuirkyPki, *, require: bool) -> Callable[[Recorded], Canned]:
    """Issue only when the challengePassword is this very connection's binding (both kinds)."""

    def handle(request: Recorded) -> Canned:
        csr = decode_csr_body(request.body)
        challenge = describe_csr(csr).challenge_password
        outcome = check_pop(challenge, request.tls_unique, request.tls_exporter)
        if outcome is PopResult.MISMATCH or (require and outcome is not PopResult.MATCH):
            text = f"proof-of-possession {outcome.value}\n".encode()
            return Canned(400, [("Content-Type", "text/plain")], text)
        body = encode_base64_body(build_certs_only([pki.issue(csr.public_key(), "pop.example")]))
        return Canned(200, [("Content-Type", "application/pkcs7-mime")], body)

    return handle


def _routes(
    pki: QuirkyPki, *, requires_pop: bool = True, offers_exporter: bool = True
) -> dict[str, object]:
    return {
        CSRATTRS: _csrattrs(requires_pop=requires_pop, offers_exporter=offers_exporter),
        ENROLL: _checking_enroll(pki, require=requires_pop),
    }


def _spec() -> CsrSpec:
    return CsrSpec(key=ec.generate_private_key(ec.SECP256R1()), common_name="pop.example")


def _challenge(request: Recorded) -> str | None:
    return describe_csr(decode_csr_body(request.body)).challenge_password


def _assert_linked_with_exporter(server: QuirkyServer) -> None:
    opener, post = server.requests[-2:]
    assert (opener.path, post.path) == (CSRATTRS, ENROLL)
    assert opener.connection_id == post.connection_id  # one TLS connection for both
    assert (opener.tls_version, post.tls_version) == ("TLSv1.3", "TLSv1.3")  # server's view
    challenge = _challenge(post)
    assert challenge is not None and challenge.startswith(TLS_EXPORTER_PREFIX)
    assert check_pop(challenge, None, post.tls_exporter) is PopResult.MATCH


def test_tls13_links_with_tls_exporter_instead_of_pinning(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky(_routes(pki))  # offers TLS 1.3 and 1.2
    with EstClient(server.url, trust=pki.files["root"]) as client:
        result = client.simpleenroll(_spec(), pop=True)
    assert result.pop_linked
    assert server.paths() == [CSRATTRS, ENROLL]  # no TLS 1.2 reconnect
    _assert_linked_with_exporter(server)
    assert any("tls-exporter (RFC 9266)" in note for note in result.notes)
    assert not any("reconnected with TLS 1.2" in note for note in result.notes)


def test_no_tls12_fallback_now_works_under_tls13(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky(_routes(pki), minimum_version=ssl.TLSVersion.TLSv1_3)  # TLS 1.3 only
    with EstClient(server.url, trust=pki.files["root"], pin_tls12_for_pop=False) as client:
        result = client.simpleenroll(_spec(), pop=True)
    assert result.pop_linked
    _assert_linked_with_exporter(server)


async def test_async_client_links_with_tls_exporter(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky(_routes(pki))
    async with AsyncEstClient(server.url, trust=pki.files["root"]) as client:
        result = await client.simpleenroll(_spec(), pop=True)
    assert result.pop_linked
    _assert_linked_with_exporter(server)


def test_when_possible_links_under_tls13_when_offered(pki: QuirkyPki, quirky: Start) -> None:
    """BCP-003-03 C7 ("linking SHOULD be included"): no longer unlinked under TLS 1.3."""
    server = quirky(_routes(pki, requires_pop=False))
    with EstClient(server.url, trust=pki.files["root"]) as client:
        result = client.simpleenroll(_spec(), pop=POP_WHEN_POSSIBLE)
    assert result.pop_linked
    _assert_linked_with_exporter(server)


def test_a_server_that_does_not_offer_it_still_gets_tls12(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky(_routes(pki, offers_exporter=False))
    with EstClient(server.url, trust=pki.files["root"]) as client:
        result = client.simpleenroll(_spec(), pop=True)
    assert result.pop_linked
    assert [(r.path, r.tls_version) for r in server.requests] == [
        (CSRATTRS, "TLSv1.3"),
        (CSRATTRS, "TLSv1.2"),
        (ENROLL, "TLSv1.2"),
    ]
    challenge = _challenge(server.requests[-1])
    assert challenge is not None and not challenge.startswith(TLS_EXPORTER_PREFIX)
    assert check_pop(challenge, server.requests[-1].tls_unique) is PopResult.MATCH
    assert any("does not offer tls-exporter" in note for note in result.notes)


def test_no_fallback_against_a_server_that_does_not_offer_it_says_so(
    pki: QuirkyPki, quirky: Start
) -> None:
    server = quirky(_routes(pki, offers_exporter=False))
    with (
        EstClient(server.url, trust=pki.files["root"], pin_tls12_for_pop=False) as client,
        pytest.raises(EstPopError) as caught,
    ):
        client.simpleenroll(_spec(), pop=True)
    assert server.paths() == [CSRATTRS]
    message = str(caught.value)
    assert "TLSv1.3" in message and "does not offer tls-exporter linking" in message


def test_a_client_that_cannot_read_the_exporter_falls_back_to_tls12(
    pki: QuirkyPki, quirky: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The binding unavailable in this process (e.g. a future CPython layout): as before."""
    monkeypatch.setattr(client_transport, "tls_exporter_for", lambda _ssl_object: None)
    server = quirky(_routes(pki))
    with EstClient(server.url, trust=pki.files["root"]) as client:
        result = client.simpleenroll(_spec(), pop=True)
    assert result.pop_linked
    assert server.requests[-1].tls_version == "TLSv1.2"
    assert any("cannot read tls-exporter" in note for note in result.notes)


def test_connection_closed_between_link_and_post_under_tls13(pki: QuirkyPki, quirky: Start) -> None:
    """The same-connection check compares tls-exporter values under TLS 1.3: a POST on a new
    connection carries a stale link, the server refuses it, the CSR is rebuilt each time."""
    server = quirky(_routes(pki), minimum_version=ssl.TLSVersion.TLSv1_3)
    server.close_after(CSRATTRS)
    with (
        EstClient(server.url, trust=pki.files["root"], pin_tls12_for_pop=False) as client,
        pytest.raises(EstPopError, match="closed the connection"),
    ):
        client.simpleenroll(_spec(), pop=True)
    openers = [r for r in server.requests if r.path == CSRATTRS]
    posts = [r for r in server.requests if r.path == ENROLL]
    assert len(posts) == MAX_POP_RELINKS + 1
    for opener, post in zip(openers, posts, strict=True):
        assert post.connection_id != opener.connection_id
        challenge = _challenge(post)
        assert check_pop(challenge, None, opener.tls_exporter) is PopResult.MATCH  # linked to it
        assert check_pop(challenge, None, post.tls_exporter) is PopResult.MISMATCH


@pytest.fixture
def server_saw(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The TLS version the estkit server's enroll handler saw, per request."""
    seen: list[str | None] = []

    def spy(ssl_object: Any) -> bytes | None:
        seen.append(ssl_object.version() if isinstance(ssl_object, ssl.SSLObject) else None)
        return tls_exporter_for(ssl_object)

    monkeypatch.setattr(server_app, "tls_exporter_for", spy)
    return seen


def test_cli_no_tls12_fallback_enrolls_with_the_estkit_server_under_tls13(
    estkit_server: EstkitTestServer, tmp_path: Path, server_saw: list[str | None]
) -> None:
    """End to end: `estkit client enroll --pop --no-tls12-fallback` against a require_pop
    label, which issue 18 reported failing with "tls-unique does not exist"."""
    paths = estkit_server.paths
    result = CliRunner().invoke(
        cli,
        ["client", "enroll", "--server", estkit_server.url,
         "--trust", str(paths.ca_certificates), "--cert", str(paths.device_certificate),
         "--key", str(paths.device_key), "--label", "pop", "--pop", "--no-tls12-fallback",
         "--key-type", "p256", "--cn", "pop13-cli.example",
         "--out-cert", str(tmp_path / "c.pem"), "--out-key", str(tmp_path / "c.key"), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert '"pop_linked": true' in result.stdout
    assert server_saw == ["TLSv1.3"]
    assert (tmp_path / "c.pem").exists()
