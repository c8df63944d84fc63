"""Servers that close the connection after a 401 challenge (issue 13), over real TLS.

The in-test server imitates the C EST server behind a widely used public test server: HTTP Basic
(or Digest) required for enrollment, a 401 for the unauthenticated request, and then the
connection is gone, either announced (``Connection: close``) or silently (the client's answer on
the old connection is dropped unanswered: "Server disconnected without sending a response").
Each test shows the answer reached the server on a *new* connection and was accepted.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
from collections.abc import Callable
from pathlib import Path
from urllib.request import parse_http_list, parse_keqv_list

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from estkit.cli.main import cli
from estkit.client import (
    AsyncEstClient,
    ClientCredentials,
    CsrSpec,
    EstAuthError,
    EstClient,
)
from estkit.client.auth import ChallengeAuth
from estkit.protocol import (
    CHALLENGE_PASSWORD_OID,
    CsrAttrs,
    PopResult,
    build_certs_only,
    build_serverkeygen_response,
    check_pop,
    decode_csr_body,
    describe_csr,
    encode_base64_body,
    encode_csrattrs,
    public_keys_equal,
)

from .pki import QuirkyPki
from .quirky import Canned, QuirkyServer, Recorded

EST = "/.well-known/est"
USER, PASSWORD = "estuser", "estpwd"
REALM = "estrealm"

Start = Callable[..., QuirkyServer]
Handler = Callable[[Recorded], Canned]


def _basic_ok(request: Recorded) -> bool:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return request.headers.get("authorization") == f"Basic {token}"


class DigestRealm:
    """RFC 7616 Digest (MD5, qop=auth) with nonces that go stale on demand."""

    def __init__(self) -> None:
        self.serial = 0
        self.valid: set[str] = set()
        self.stale_once = False

    def challenge(self, stale: bool = False) -> str:
        self.serial += 1
        nonce = f"nonce{self.serial:04d}"
        self.valid.add(nonce)
        extra = ", stale=true" if stale else ""
        return f'Digest realm="{REALM}", qop="auth", nonce="{nonce}", algorithm=MD5{extra}'

    def check(self, request: Recorded) -> str:
        """``ok``, ``stale`` (right password, retired nonce) or ``no``."""
        header = request.headers.get("authorization", "")
        if not header.startswith("Digest "):
            return "no"
        fields = parse_keqv_list(parse_http_list(header[len("Digest ") :]))
        ha1 = hashlib.md5(f"{USER}:{REALM}:{PASSWORD}".encode()).hexdigest()
        ha2 = hashlib.md5(f"{request.method}:{fields['uri']}".encode()).hexdigest()
        expected = hashlib.md5(
            f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}".encode()
        ).hexdigest()
        if fields.get("username") != USER or fields.get("response") != expected:
            return "no"
        if self.stale_once or fields["nonce"] not in self.valid:
            self.stale_once = False
            self.valid.discard(fields["nonce"])
            return "stale"
        return "ok"


def _protected(inner: Handler, digest: DigestRealm | None = None) -> Handler:
    def handle(request: Recorded) -> Canned:
        if digest is None:
            if _basic_ok(request):
                return inner(request)
            return Canned(401, [("WWW-Authenticate", f'Basic realm="{REALM}"')], b"auth\n")
        verdict = digest.check(request)
        if verdict == "ok":
            return inner(request)
        challenge = digest.challenge(stale=verdict == "stale")
        return Canned(401, [("WWW-Authenticate", challenge)], b"auth\n")

    return handle


def _csrattrs(requires_pop: bool) -> Canned:
    oids = (x509.ObjectIdentifier(CHALLENGE_PASSWORD_OID),) if requires_pop else ()
    body = encode_base64_body(encode_csrattrs(CsrAttrs(oids=oids)))
    return Canned(200, [("Content-Type", "application/csrattrs")], body)


def _issuing(pki: QuirkyPki, pop: bool) -> Handler:
    def handle(request: Recorded) -> Canned:
        csr = decode_csr_body(request.body)
        info = describe_csr(csr)
        if pop and check_pop(info.challenge_password, request.tls_unique) is not PopResult.MATCH:
            return Canned(400, [("Content-Type", "text/plain")], b"PoP mismatch\n")
        cert = pki.issue(csr.public_key(), info.common_name, tuple(info.dns_names))
        body = encode_base64_body(build_certs_only([cert]))
        return Canned(200, [("Content-Type", "application/pkcs7-mime")], body)

    return handle


def _keygen(pki: QuirkyPki, pop: bool) -> Handler:
    def handle(request: Recorded) -> Canned:
        info = describe_csr(decode_csr_body(request.body))
        if pop and check_pop(info.challenge_password, request.tls_unique) is not PopResult.MATCH:
            return Canned(400, [("Content-Type", "text/plain")], b"PoP mismatch\n")
        key = ec.generate_private_key(ec.SECP256R1())
        pkcs8 = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        cert = pki.issue(key.public_key(), info.common_name, tuple(info.dns_names))
        body, content_type = build_serverkeygen_response(pkcs8, "application/pkcs8", [cert])
        return Canned(200, [("Content-Type", content_type)], body)

    return handle


def _est_routes(
    pki: QuirkyPki,
    *,
    label: str | None = None,
    pop: bool = False,
    digest: DigestRealm | None = None,
) -> dict[str, object]:
    base = f"{EST}/{label}" if label else EST
    return {
        # The issuing CA that enrollment answers leave out: the client checks the chain before
        # writing anything (issue 20).
        f"{base}/cacerts": Canned(
            200,
            [("Content-Type", "application/pkcs7-mime")],
            encode_base64_body(build_certs_only([pki.issuing, pki.root])),
        ),
        f"{base}/csrattrs": _csrattrs(pop),  # unauthenticated, like the C server's
        f"{base}/simpleenroll": _protected(_issuing(pki, pop), digest),
        f"{base}/simplereenroll": _protected(_issuing(pki, pop), digest),
        f"{base}/serverkeygen": _protected(_keygen(pki, pop), digest),
    }


def _start(quirky: Start, routes: dict[str, object], mode: str) -> QuirkyServer:
    server = quirky(routes, maximum_version=ssl.TLSVersion.TLSv1_2, client_ca=None)
    server.drop_after_challenge = mode
    return server


def _spec(cn: str = "dev.example") -> CsrSpec:
    return CsrSpec(key=ec.generate_private_key(ec.SECP256R1()), common_name=cn, dns_names=(cn,))


def _authorized(server: QuirkyServer, path: str) -> list[Recorded]:
    return [r for r in server.requests if r.path == path and "authorization" in r.headers]


def _client(server: QuirkyServer, pki: QuirkyPki, **options: object) -> EstClient:
    return EstClient(
        server.url,
        trust=pki.files["root"],
        username=USER,
        password=PASSWORD,
        **options,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("mode", ["silent", "header"])
def test_enroll_answers_the_challenge_on_a_new_connection(
    pki: QuirkyPki, quirky: Start, mode: str
) -> None:
    server = _start(quirky, _est_routes(pki), mode)
    with _client(server, pki) as client:
        result = client.simpleenroll(_spec(), pop=False)
    assert result.certificate.subject.rfc4514_string() == "CN=dev.example"
    challenged, answered = [r for r in server.requests if r.path.endswith("/simpleenroll")]
    assert "authorization" not in challenged.headers
    assert _basic_ok(answered)
    assert answered.connection_id != challenged.connection_id  # a new connection
    # "silent": the answer first went out on the dead connection and was dropped there.
    assert server.dropped == ([f"{EST}/simpleenroll"] if mode == "silent" else [])


@pytest.mark.parametrize("mode", ["silent", "header"])
def test_reenroll_serverkeygen_and_label_after_close(
    pki: QuirkyPki, quirky: Start, mode: str
) -> None:
    server = _start(quirky, _est_routes(pki, label="arena"), mode)
    credentials = ClientCredentials.from_files(pki.files["client_chain"], pki.files["client_key"])
    with _client(server, pki, label="arena", credentials=credentials) as client:
        renewed = client.simplereenroll(_spec("device-1"), pop=False)
        generated = client.serverkeygen(common_name="gen.example", pop=False)
    assert renewed.certificate.subject.rfc4514_string() == "CN=device-1"
    assert public_keys_equal(generated.private_key.public_key(), generated.certificate.public_key())
    assert len(_authorized(server, f"{EST}/arena/simplereenroll")) >= 1
    assert len(_authorized(server, f"{EST}/arena/serverkeygen")) >= 1
    assert all("/arena/" in path for path in server.paths())


@pytest.mark.parametrize("mode", ["silent", "header"])
@pytest.mark.parametrize("operation", ["simpleenroll", "simplereenroll", "serverkeygen"])
def test_pop_relinks_the_csr_on_the_new_connection(
    pki: QuirkyPki, quirky: Start, mode: str, operation: str
) -> None:
    server = _start(quirky, _est_routes(pki, pop=True), mode)
    credentials = ClientCredentials.from_files(pki.files["client_chain"], pki.files["client_key"])
    with _client(server, pki, credentials=credentials) as client:
        if operation == "simpleenroll":
            assert client.simpleenroll(_spec(), pop=True).pop_linked
        elif operation == "simplereenroll":
            assert client.simplereenroll(pop=True).pop_linked
        else:
            client.serverkeygen(common_name="gen.example", pop=True)
    posts = [r for r in server.requests if r.path.endswith(operation)]
    accepted = posts[-1]
    assert _basic_ok(accepted)
    # The accepted CSR carries the tls-unique of the connection that carried it, not the
    # challenged one: it was rebuilt and signed again there.
    password = describe_csr(decode_csr_body(accepted.body)).challenge_password
    assert check_pop(password, accepted.tls_unique) is PopResult.MATCH
    assert accepted.connection_id != posts[0].connection_id
    first_password = describe_csr(decode_csr_body(posts[0].body)).challenge_password
    assert first_password != password
    # Never a PoP-linked CSR sent on a connection it was not linked to (no 400 from the server).
    assert all(
        check_pop(describe_csr(decode_csr_body(r.body)).challenge_password, r.tls_unique)
        is PopResult.MATCH
        for r in posts
        if r.path not in server.dropped
    )


def test_async_client_answers_on_a_new_connection(pki: QuirkyPki, quirky: Start) -> None:
    plain_server = _start(quirky, _est_routes(pki), "silent")
    pop_server = _start(quirky, _est_routes(pki, pop=True), "silent")

    async def enroll(server: QuirkyServer, pop: bool) -> bool:
        async with AsyncEstClient(
            server.url, trust=pki.files["root"], username=USER, password=PASSWORD
        ) as client:
            result = await client.simpleenroll(_spec(), pop=pop)
            return result.certificate is not None and result.pop_linked == pop

    assert asyncio.run(enroll(plain_server, False))
    assert asyncio.run(enroll(pop_server, True))
    # both old connections really were dead: the answers sent there were dropped
    assert plain_server.dropped == [f"{EST}/simpleenroll"]
    assert pop_server.dropped == [f"{EST}/simpleenroll"]


@pytest.mark.parametrize("mode", ["silent", "header"])
def test_digest_with_close_and_stale_nonce(pki: QuirkyPki, quirky: Start, mode: str) -> None:
    digest = DigestRealm()
    server = _start(quirky, _est_routes(pki, digest=digest), mode)
    with _client(server, pki, auth_scheme="digest") as client:
        client.simpleenroll(_spec(), pop=False)
        digest.stale_once = True  # the next answer is refused as stale: take the fresh nonce
        second = client.simpleenroll(_spec("two.example"), pop=False)
    assert second.certificate.subject.rfc4514_string() == "CN=two.example"
    stale_challenges = [
        r
        for r in server.requests
        if r.path.endswith("simpleenroll") and "authorization" in r.headers
    ]
    assert len(stale_challenges) >= 3  # first answer, refused stale answer, fresh answer
    assert digest.serial >= 2  # a fresh nonce was issued and used


def test_digest_pop_with_close(pki: QuirkyPki, quirky: Start) -> None:
    digest = DigestRealm()
    server = _start(quirky, _est_routes(pki, pop=True, digest=digest), "silent")
    with _client(server, pki, auth_scheme="digest") as client:
        result = client.simpleenroll(_spec(), pop=True)
    assert result.pop_linked
    accepted = [r for r in server.requests if r.path.endswith("simpleenroll")][-1]
    assert digest.check(accepted) == "ok"


def test_refused_password_is_not_retried_forever(pki: QuirkyPki, quirky: Start) -> None:
    server = _start(quirky, _est_routes(pki), "silent")
    with (
        EstClient(server.url, trust=pki.files["root"], username=USER, password="wrong") as client,
        pytest.raises(EstAuthError),
    ):
        client.simpleenroll(_spec(), pop=False)
    posts = [r for r in server.requests if r.path.endswith("simpleenroll")]
    # unauthenticated, answered on the dead connection (dropped), answered again: refused.
    assert len(posts) + len(server.dropped) <= 3


def test_preemptive_basic_for_a_server_that_never_challenges(pki: QuirkyPki, quirky: Start) -> None:
    def no_challenge(request: Recorded) -> Canned:
        if not _basic_ok(request):
            return Canned(403, [("Content-Type", "text/plain")], b"credentials required\n")
        return _issuing(pki, False)(request)

    server = quirky({f"{EST}/simpleenroll": no_challenge})
    with _client(server, pki, preemptive_basic=True) as client:
        result = client.simpleenroll(_spec(), pop=False)
    assert result.certificate is not None
    (only,) = server.requests
    assert _basic_ok(only)  # sent with the very first request


def test_without_preemptive_basic_no_password_goes_out_unasked(
    pki: QuirkyPki, quirky: Start
) -> None:
    server = quirky({f"{EST}/simpleenroll": Canned(403, [], b"credentials required\n")})
    with _client(server, pki) as client, pytest.raises(Exception, match="403"):
        client.simpleenroll(_spec(), pop=False)
    assert "authorization" not in server.requests[0].headers


def test_preemptive_digest_is_refused() -> None:
    with pytest.raises(ValueError, match="only Basic"):
        ChallengeAuth("u", "p", "digest", preemptive=True)


def test_rsa_key_reenroll_keeps_working_without_auth_quirks(pki: QuirkyPki, quirky: Start) -> None:
    # A well-behaved server (keeps the connection after 401): the answer stays on the same
    # connection, so PoP needs no relink at all.
    server = _start(quirky, _est_routes(pki, pop=True), "")
    server.drop_after_challenge = None
    spec = CsrSpec(key=rsa.generate_private_key(65537, 2048), common_name="rsa.example")
    with _client(server, pki) as client:
        result = client.simpleenroll(spec, pop=True)
    assert result.pop_linked
    posts = [r for r in server.requests if r.path.endswith("simpleenroll")]
    assert len(posts) == 2
    assert posts[0].connection_id == posts[1].connection_id


def _cli(*args: object) -> Result:
    return CliRunner().invoke(cli, ["client", *map(str, args)])


@pytest.mark.parametrize("pop", [False, True])
def test_cli_enroll_against_a_server_that_closes_after_401(
    pki: QuirkyPki, quirky: Start, tmp_path: Path, pop: bool
) -> None:
    # The issue's reproduction: `estkit client enroll --user U --password P [--pop]` used to
    # fail with "Server disconnected without sending a response".
    server = _start(quirky, _est_routes(pki, pop=pop), "silent")
    result = _cli(
        "enroll",
        "--server",
        server.url,
        "--trust",
        pki.files["root"],
        "--user",
        USER,
        "--password",
        PASSWORD,
        "--key-type",
        "p256",
        "--cn",
        "cli.example",
        *(["--pop"] if pop else []),
        "--out-cert",
        tmp_path / "c.pem",
        "--out-key",
        tmp_path / "c.key",
    )
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "c.pem").exists()
    assert server.dropped == [f"{EST}/simpleenroll"]


def test_cli_basic_preemptive(pki: QuirkyPki, quirky: Start, tmp_path: Path) -> None:
    def no_challenge(request: Recorded) -> Canned:
        if not _basic_ok(request):
            return Canned(403, [("Content-Type", "text/plain")], b"credentials required\n")
        return _issuing(pki, False)(request)

    server = quirky(
        {f"{EST}/simpleenroll": no_challenge, f"{EST}/cacerts": _est_routes(pki)[f"{EST}/cacerts"]}
    )
    result = _cli(
        "enroll",
        "--server",
        server.url,
        "--trust",
        pki.files["root"],
        "--user",
        USER,
        "--password",
        PASSWORD,
        "--auth-scheme",
        "basic-preemptive",
        "--key-type",
        "p256",
        "--cn",
        "cli.example",
        "--out-cert",
        tmp_path / "c.pem",
        "--out-key",
        tmp_path / "c.key",
    )
    assert result.exit_code == 0, result.stderr
    (enroll,) = [r for r in server.requests if r.path == f"{EST}/simpleenroll"]
    assert _basic_ok(enroll)  # on the first and only enrollment request, unchallenged
