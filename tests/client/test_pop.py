"""Proof-of-possession linking (RFC 7030 §3.5, checklist E14, BCP-003-03 C7/C10) over real TLS.

The fixture server checks, like a real EST server would, that the CSR's challengePassword is
base64(tls-unique) of the very connection that carried the POST, and records each request's
connection and TLS version so the tests can show which connection carried what.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from estkit.client import (
    AsyncEstClient,
    CsrSpec,
    EstClient,
    EstHttpError,
    EstPopError,
)
from estkit.client.submit import MAX_POP_RELINKS, POP_WHEN_POSSIBLE
from estkit.protocol import (
    CHALLENGE_PASSWORD_OID,
    CsrAttrs,
    PopResult,
    build_certs_only,
    build_csr,
    check_pop,
    decode_csr_body,
    describe_csr,
    encode_base64_body,
    encode_csrattrs,
)

from .pki import QuirkyPki
from .quirky import Canned, QuirkyServer, Recorded

CSRATTRS = "/.well-known/est/csrattrs"
ENROLL = "/.well-known/est/simpleenroll"

Start = Callable[..., QuirkyServer]


def _csrattrs(requires_pop: bool) -> Canned:
    oids = (x509.ObjectIdentifier(CHALLENGE_PASSWORD_OID),) if requires_pop else ()
    body = encode_base64_body(encode_csrattrs(CsrAttrs(oids=oids)))
    return Canned(200, [("Content-Type", "application/csrattrs")], body)


def _checking_enroll(pki: QuirkyPki, *, require: bool = True) -> Callable[[Recorded], Canned]:
    def handle(request: Recorded) -> Canned:
        csr = decode_csr_body(request.body)
        outcome = check_pop(describe_csr(csr).challenge_password, request.tls_unique)
        if require and outcome is not PopResult.MATCH:
            text = f"proof-of-possession {outcome.value}\n".encode()
            return Canned(400, [("Content-Type", "text/plain")], text)
        cert = pki.issue(csr.public_key(), "pop.example")
        body = encode_base64_body(build_certs_only([cert]))
        return Canned(200, [("Content-Type", "application/pkcs7-mime")], body)

    return handle


def _routes(pki: QuirkyPki, requires_pop: bool = True) -> dict[str, object]:
    return {CSRATTRS: _csrattrs(requires_pop), ENROLL: _checking_enroll(pki, require=requires_pop)}


def _spec() -> CsrSpec:
    return CsrSpec(key=ec.generate_private_key(ec.SECP256R1()), common_name="pop.example")


def test_csr_is_linked_to_the_connection_that_carries_it(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky(_routes(pki), maximum_version=ssl.TLSVersion.TLSv1_2)
    with EstClient(server.url, trust=pki.files["root"]) as client:
        result = client.simpleenroll(_spec(), pop=True)
    assert result.pop_linked
    opener, post = server.requests
    assert (opener.path, post.path) == (CSRATTRS, ENROLL)
    assert opener.connection_id == post.connection_id  # one TLS connection for both
    assert post.tls_version == "TLSv1.2"
    challenge = describe_csr(decode_csr_body(post.body)).challenge_password
    assert check_pop(challenge, post.tls_unique) is PopResult.MATCH


def test_auto_mode_links_when_csrattrs_asks(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky(_routes(pki), maximum_version=ssl.TLSVersion.TLSv1_2)
    with EstClient(server.url, trust=pki.files["root"]) as client:
        result = client.simpleenroll(_spec())  # pop=None: ask /csrattrs
    assert result.pop_linked
    assert server.paths() == [CSRATTRS, CSRATTRS, ENROLL]
    assert any("asks for proof-of-possession" in n for n in result.notes)


def test_auto_mode_does_not_link_when_not_asked(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky(_routes(pki, requires_pop=False), maximum_version=ssl.TLSVersion.TLSv1_2)
    with EstClient(server.url, trust=pki.files["root"]) as client:
        result = client.simpleenroll(_spec())
    assert not result.pop_linked
    assert server.paths() == [CSRATTRS, ENROLL]
    assert describe_csr(decode_csr_body(server.requests[-1].body)).challenge_password is None


def test_tls13_server_is_retried_pinned_to_tls12(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky(_routes(pki))  # offers TLS 1.3 and 1.2
    with EstClient(server.url, trust=pki.files["root"]) as client:
        result = client.simpleenroll(_spec(), pop=True)
    assert result.pop_linked
    versions = [(r.path, r.tls_version) for r in server.requests]
    assert versions == [
        (CSRATTRS, "TLSv1.3"),
        (CSRATTRS, "TLSv1.2"),
        (ENROLL, "TLSv1.2"),
    ]
    assert any("reconnected with TLS 1.2" in n for n in result.notes)


def test_tls13_without_fallback_fails_saying_exactly_that(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky(_routes(pki))
    with (
        EstClient(server.url, trust=pki.files["root"], pin_tls12_for_pop=False) as client,
        pytest.raises(EstPopError) as caught,
    ):
        client.simpleenroll(_spec(), pop=True)
    assert server.paths() == [CSRATTRS]  # connection opened, nothing posted
    message = str(caught.value)
    assert "TLSv1.3" in message and "tls-unique" in message
    assert "TLS 1.2" in (caught.value.hint or "")


def test_tls13_only_server_makes_pop_impossible(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky(_routes(pki), minimum_version=ssl.TLSVersion.TLSv1_3)
    with (
        EstClient(server.url, trust=pki.files["root"]) as client,
        pytest.raises(EstPopError) as caught,
    ):
        client.simpleenroll(_spec(), pop=True)
    assert server.paths() == [CSRATTRS]  # the TLS 1.3 opener; the TLS 1.2 retry was refused
    assert "unsupported protocol" in server.wait_for_handshake_error().lower()
    assert "refused TLS 1.2" in str(caught.value)


def test_connection_closed_between_link_and_post(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky(_routes(pki), maximum_version=ssl.TLSVersion.TLSv1_2)
    server.close_after(CSRATTRS)  # every opener's connection ends: the POST cannot be linked
    with (
        EstClient(server.url, trust=pki.files["root"]) as client,
        pytest.raises(EstPopError, match="closed the connection") as caught,
    ):
        client.simpleenroll(_spec(), pop=True)
    posts = [r for r in server.requests if r.path == ENROLL]
    assert len(posts) == MAX_POP_RELINKS + 1  # rebuilt each time (C10), then gave up
    assert all(
        post.connection_id != opener.connection_id
        for post, opener in zip(
            posts, [r for r in server.requests if r.path == CSRATTRS], strict=True
        )
    )
    assert "keep-alive" in (caught.value.hint or "")


def test_prebuilt_csr_cannot_be_linked() -> None:
    csr = build_csr(ec.generate_private_key(ec.SECP256R1()), common_name="x.example")
    client = EstClient("https://127.0.0.1:9", use_system_trust=True)
    with client, pytest.raises(ValueError, match="CsrSpec"):
        client.simpleenroll(csr, pop=True)


def test_server_refusal_without_link_reaches_the_caller(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky(_routes(pki), maximum_version=ssl.TLSVersion.TLSv1_2)
    with (
        EstClient(server.url, trust=pki.files["root"]) as client,
        pytest.raises(EstHttpError) as caught,
    ):
        client.simpleenroll(_spec(), pop=False)
    assert server.paths() == [ENROLL]
    assert caught.value.status == 400
    assert "proof-of-possession absent" in caught.value.server_text


async def test_async_client_links_too(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky(_routes(pki))
    async with AsyncEstClient(server.url, trust=pki.files["root"]) as client:
        result = await client.simpleenroll(_spec(), pop=True)
    assert result.pop_linked
    opener, post = server.requests[-2:]
    assert opener.connection_id == post.connection_id
    assert post.tls_version == "TLSv1.2"


def test_when_possible_links_under_tls12_without_being_asked(pki: QuirkyPki, quirky: Start) -> None:
    """BCP-003-03 C7 (what the NMOS node uses): link whenever TLS 1.2 gives a tls-unique."""
    server = quirky(_routes(pki, requires_pop=False), maximum_version=ssl.TLSVersion.TLSv1_2)
    with EstClient(server.url, trust=pki.files["root"]) as client:
        result = client.simpleenroll(_spec(), pop=POP_WHEN_POSSIBLE)
    assert result.pop_linked
    post = server.requests[-1]
    assert post.path == ENROLL and post.tls_version == "TLSv1.2"
    challenge = describe_csr(decode_csr_body(post.body)).challenge_password
    assert check_pop(challenge, post.tls_unique) is PopResult.MATCH


def test_when_possible_sends_unlinked_under_tls13_when_not_required(
    pki: QuirkyPki, quirky: Start
) -> None:
    server = quirky(_routes(pki, requires_pop=False))  # offers TLS 1.3
    with EstClient(server.url, trust=pki.files["root"]) as client:
        result = client.simpleenroll(_spec(), pop=POP_WHEN_POSSIBLE)
    assert not result.pop_linked
    # One /csrattrs, both the server's wishes and the opener (issue 23); no pinned reconnect.
    assert [(r.path, r.tls_version) for r in server.requests] == [
        (CSRATTRS, "TLSv1.3"),
        (ENROLL, "TLSv1.3"),
    ]
    assert describe_csr(decode_csr_body(server.requests[-1].body)).challenge_password is None
    assert any("not linked" in note for note in result.notes)


def test_when_possible_links_to_the_connection_of_its_one_csrattrs(
    pki: QuirkyPki, quirky: Start
) -> None:
    """The /csrattrs that says what the server wants is also the opener the CSR is linked to
    (issue 23): one request, not one for the wishes and one to open the connection. The link is
    that connection's own: a match for the POST's tls-unique, on the same connection."""
    server = quirky(_routes(pki, requires_pop=True), maximum_version=ssl.TLSVersion.TLSv1_2)
    with EstClient(server.url, trust=pki.files["root"]) as client:
        result = client.simpleenroll(_spec(), pop=POP_WHEN_POSSIBLE)
    assert result.pop_linked
    opener, post = server.requests
    assert (opener.path, post.path) == (CSRATTRS, ENROLL)
    assert opener.connection_id == post.connection_id
    challenge = describe_csr(decode_csr_body(post.body)).challenge_password
    assert check_pop(challenge, post.tls_unique) is PopResult.MATCH
    assert any("asks for proof-of-possession" in n for n in result.notes)


def test_when_possible_relinks_when_the_csrattrs_connection_closes(
    pki: QuirkyPki, quirky: Start
) -> None:
    """The /csrattrs opener is checked like any other: its connection ends, so the CSR linked to
    it reaches the server on another one, is refused there (PoP mismatch) and is rebuilt for a
    new opener each time, until the client gives up. Kills a client that trusts the first
    opener's link without checking the POST's connection."""
    server = quirky(_routes(pki), maximum_version=ssl.TLSVersion.TLSv1_2)
    server.close_after(CSRATTRS)
    with (
        EstClient(server.url, trust=pki.files["root"]) as client,
        pytest.raises(EstPopError, match="closed the connection"),
    ):
        client.simpleenroll(_spec(), pop=POP_WHEN_POSSIBLE)
    posts = [r for r in server.requests if r.path == ENROLL]
    openers = [r for r in server.requests if r.path == CSRATTRS]
    assert len(posts) == len(openers) == MAX_POP_RELINKS + 1
    for post, opener in zip(posts, openers, strict=True):
        assert post.connection_id != opener.connection_id
        challenge = describe_csr(decode_csr_body(post.body)).challenge_password
        assert check_pop(challenge, post.tls_unique) is PopResult.MISMATCH


def test_when_possible_pins_tls12_when_the_server_requires_linking(
    pki: QuirkyPki, quirky: Start
) -> None:
    server = quirky(_routes(pki, requires_pop=True))  # offers TLS 1.3, requires PoP
    with EstClient(server.url, trust=pki.files["root"]) as client:
        result = client.simpleenroll(_spec(), pop=POP_WHEN_POSSIBLE)
    assert result.pop_linked
    assert server.requests[-1].tls_version == "TLSv1.2"
