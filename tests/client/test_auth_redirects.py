"""HTTP auth only after a challenge (E9) and same-origin redirects only (E10), over real TLS."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from urllib.request import parse_http_list, parse_keqv_list

import pytest

from estkit.client import (
    EstAuthError,
    EstClient,
    EstNotFoundError,
    EstRedirectError,
    bootstrap_cacerts,
)
from estkit.protocol import build_certs_only, encode_base64_body, sha256_fingerprint

from .pki import QuirkyPki
from .quirky import Canned, QuirkyServer, Recorded

CACERTS = "/.well-known/est/cacerts"
CSRATTRS = "/.well-known/est/csrattrs"
REALM = "estkit-test"
NONCE = "dcd98b7102dd2f0e8b11d0f600bfb0c093"

Start = Callable[..., QuirkyServer]


def _cacerts(pki: QuirkyPki) -> Canned:
    return Canned(
        200,
        [("Content-Type", "application/pkcs7-mime")],
        encode_base64_body(build_certs_only([pki.root])),
    )


def _basic_protected(pki: QuirkyPki, user: str, password: str) -> Callable[[Recorded], Canned]:
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def handle(request: Recorded) -> Canned:
        if request.headers.get("authorization") == expected:
            return _cacerts(pki)
        return Canned(401, [("WWW-Authenticate", f'Basic realm="{REALM}"')], b"who are you?\n")

    return handle


def _digest_ok(request: Recorded, user: str, password: str) -> bool:
    """Check an RFC 7616 (qop=auth, MD5) Digest answer the way a server would."""
    header = request.headers.get("authorization", "")
    if not header.startswith("Digest "):
        return False
    fields = parse_keqv_list(parse_http_list(header[len("Digest ") :]))
    ha1 = hashlib.md5(f"{user}:{REALM}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{request.method}:{fields['uri']}".encode()).hexdigest()
    expected = hashlib.md5(
        f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}".encode()
    ).hexdigest()
    return fields.get("username") == user and fields.get("response") == expected


def _digest_protected(pki: QuirkyPki, user: str, password: str) -> Callable[[Recorded], Canned]:
    def handle(request: Recorded) -> Canned:
        if _digest_ok(request, user, password):
            return _cacerts(pki)
        challenge = f'Digest realm="{REALM}", qop="auth", nonce="{NONCE}", algorithm=MD5'
        return Canned(401, [("WWW-Authenticate", challenge)], b"digest please\n")

    return handle


def test_basic_is_sent_only_after_a_challenge(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky({CACERTS: _basic_protected(pki, "alice", "wonderland")})
    with EstClient(
        server.url, trust=pki.files["root"], username="alice", password="wonderland"
    ) as client:
        result = client.cacerts()
    assert result.certificates == [pki.root]
    first, second = server.requests
    assert "authorization" not in first.headers  # nothing unasked (the prototype's bug)
    assert second.headers["authorization"].startswith("Basic ")


def test_digest_is_preferred_and_answered_correctly(pki: QuirkyPki, quirky: Start) -> None:
    def both(request: Recorded) -> Canned:
        if _digest_ok(request, "alice", "wonderland"):
            return _cacerts(pki)
        return Canned(
            401,
            [
                ("WWW-Authenticate", f'Basic realm="{REALM}"'),
                ("WWW-Authenticate", f'Digest realm="{REALM}", qop="auth", nonce="{NONCE}"'),
            ],
        )

    server = quirky({CACERTS: both})
    with EstClient(
        server.url, trust=pki.files["root"], username="alice", password="wonderland"
    ) as client:
        result = client.cacerts()
    assert result.certificates == [pki.root]
    assert [("authorization" in r.headers) for r in server.requests] == [False, True]
    assert server.requests[1].headers["authorization"].startswith("Digest ")
    assert "wonderland" not in server.requests[1].headers["authorization"]


def test_basic_only_client_refuses_a_digest_only_server(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky({CACERTS: _digest_protected(pki, "alice", "wonderland")})
    with (
        EstClient(
            server.url,
            trust=pki.files["root"],
            username="alice",
            password="wonderland",
            auth_scheme="basic",
        ) as client,
        pytest.raises(EstAuthError),
    ):
        client.cacerts()
    assert len(server.requests) == 1
    assert "authorization" not in server.requests[0].headers


def test_wrong_password_is_reported_without_looping(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky({CACERTS: _digest_protected(pki, "alice", "wonderland")})
    with (
        EstClient(server.url, trust=pki.files["root"], username="alice", password="rabbit") as c,
        pytest.raises(EstAuthError) as caught,
    ):
        c.cacerts()
    assert len(server.requests) == 2  # challenged once, answered once, refused: no loop
    assert caught.value.status == 401
    assert "did not accept the credentials" in str(caught.value)
    assert "digest please" in caught.value.server_text


def test_no_credentials_means_no_retry(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky({CACERTS: _basic_protected(pki, "alice", "wonderland")})
    with (
        EstClient(server.url, trust=pki.files["root"]) as client,
        pytest.raises(EstAuthError) as caught,
    ):
        client.cacerts()
    assert len(server.requests) == 1
    # The library names the parameters; the CLI maps them to --user/--password/--cert/--key.
    assert "user name and password" in (caught.value.hint or "")
    assert caught.value.params == ("username", "password", "credentials")


def test_bootstrap_never_sends_credentials_or_anything_but_cacerts(
    pki: QuirkyPki, quirky: Start
) -> None:
    server = quirky({CACERTS: _basic_protected(pki, "alice", "wonderland")})
    with pytest.raises(EstAuthError):
        bootstrap_cacerts(server.url, expected_fingerprint=sha256_fingerprint(pki.root))
    assert server.paths() == [CACERTS]
    assert "authorization" not in server.requests[0].headers


def test_same_origin_redirect_is_followed(pki: QuirkyPki, quirky: Start) -> None:
    moved = "/.well-known/est/moved/cacerts"
    server = quirky({CACERTS: Canned(307, [("Location", moved)]), moved: _cacerts(pki)})
    with EstClient(server.url, trust=pki.files["root"]) as client:
        result = client.cacerts()
    assert server.paths() == [CACERTS, moved]
    assert result.certificates == [pki.root]


def test_cross_origin_redirect_is_refused(pki: QuirkyPki, quirky: Start) -> None:
    elsewhere = quirky({CACERTS: _cacerts(pki)})
    # Same host, other port: another origin (RFC 6454).
    server = quirky({CACERTS: Canned(302, [("Location", f"{elsewhere.url}{CACERTS}")])})
    with (
        EstClient(server.url, trust=pki.files["root"]) as client,
        pytest.raises(EstRedirectError) as caught,
    ):
        client.cacerts()
    assert server.paths() == [CACERTS]
    assert elsewhere.requests == []
    assert "another origin" in str(caught.value)
    assert caught.value.status == 302


def test_redirect_loop_ends(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky({CACERTS: Canned(301, [("Location", CACERTS)])})
    with (
        EstClient(server.url, trust=pki.files["root"]) as client,
        pytest.raises(EstRedirectError, match="redirects"),
    ):
        client.cacerts()
    assert len(server.requests) > 1


def test_unknown_label_is_not_found(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky({})
    with (
        EstClient(server.url, label="nosuch", trust=pki.files["root"]) as client,
        pytest.raises(EstNotFoundError) as caught,
    ):
        client.cacerts()
    assert server.paths() == ["/.well-known/est/nosuch/cacerts"]
    assert "nosuch" in (caught.value.hint or "")


def test_ipv6_loopback_and_same_origin_redirect(pki: QuirkyPki, quirky: Start) -> None:
    moved = "/.well-known/est/v6/cacerts"
    server = quirky({CACERTS: Canned(308, [("Location", moved)]), moved: _cacerts(pki)}, host="::1")
    assert server.url.startswith("https://[::1]:")
    with EstClient(server.url, trust=pki.files["root"]) as client:
        result = client.cacerts()
    assert server.paths() == [CACERTS, moved]
    assert result.certificates == [pki.root]
