"""A small, purpose-built EST server with switchable faults, for faults no real option produces.

By default it behaves correctly (so the suite passes against it); each field of :class:`Faults`
breaks exactly one behaviour. It runs aiohttp with real TLS on 127.0.0.1 in a background thread
and records every request it answered in :attr:`FakeEstServer.answers`, so a test can show the
suite's probe reached it and what it answered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.request import parse_http_list, parse_keqv_list

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from estkit.protocol import (
    CHALLENGE_PASSWORD_OID,
    PKCS7_CERTS_ONLY,
    PKCS8,
    TLS_EXPORTER,
    TLS_EXPORTER_POP_OID,
    CsrAttrs,
    EstProtocolError,
    PopResult,
    binding_type_of,
    build_certs_only,
    build_serverkeygen_response,
    certificates_to_pem,
    check_pop,
    decode_body,
    decode_csr_body,
    describe_csr,
    encode_base64_body,
    encode_certs_only_body,
    encode_csrattrs,
    parse_media_type,
    parse_path,
    private_key_to_der,
    tls_unique_for,
)
from estkit.tlsbind import tls_exporter_for

from .pki import SERVER_NAME, FakePki, sign

BCP_TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-SHA256:"
    "ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-SHA256:"
    "ECDHE-RSA-AES256-SHA384:DHE-RSA-AES128-SHA256:DHE-RSA-AES256-SHA256"
)
MAX_BODY_BYTES = 64 * 1024
UNLIMITED_BODY_BYTES = 16 * 1024 * 1024
DIGEST_REALM = "fake-digest"
DIGEST_USER, DIGEST_PASSWORD = "digest-user", "digest-secret"
BASIC_USER, BASIC_PASSWORD = "basic-user", "basic-secret"
SMALL_RCVBUF_BYTES = 4096
EARLY_413 = (
    b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 15\r\nConnection: close\r\n\r\nbody too large\n"
)
PLAIN_HTTP_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
OPERATIONS = {
    "cacerts": "GET",
    "csrattrs": "GET",
    "simpleenroll": "POST",
    "simplereenroll": "POST",
    "serverkeygen": "POST",
}


@dataclass(frozen=True)
class Faults:
    """Each field breaks one thing; the defaults are a compliant server."""

    wrong_media_type: bool = False  # /simpleenroll answers application/octet-stream
    der_bodies: bool = False  # 200 bodies are raw DER, not base64
    accept_wrong_content_type: bool = False  # no 415 for text/plain
    crash_on_bad_base64: bool = False  # 500 instead of 400
    no_size_limit: bool = False  # reads any body: no 413
    basic_challenge: bool = False  # 401 + WWW-Authenticate: Basic on POSTs without credentials
    # 401 + WWW-Authenticate: Digest (only) on POSTs; answers are verified against
    # DIGEST_USER/DIGEST_PASSWORD, and the first correct one is refused as stale=true
    digest_challenge: bool = False
    # POSTs need Basic BASIC_USER/BASIC_PASSWORD but are never challenged: 403 without them
    basic_upfront: bool = False
    # 413 + Connection: close as soon as the headers announce an oversized body, then the
    # connection is closed while the client is still sending (the C server's habit)
    early_413_close: bool = False
    issue_without_client_cert: bool = False  # S3
    accept_changed_subject: bool = False  # E3
    refuse_rsa: bool = False  # S6: only ECDSA keys get certificates
    no_serverkeygen: bool = False  # 404 (S1 is a SHOULD)
    defer_without_retry_after: bool = False  # 202 without Retry-After (E8)
    defer_first: int = 0  # the first N enrollments get 202 + Retry-After: 1, then are issued
    require_pop: bool = False  # lists challengePassword and checks it (E14), correctly
    extra_ciphers: str = ""  # TLS 1.2 suites accepted beyond BCP-003-01
    server_names: tuple[str, ...] = (SERVER_NAME,)  # a wildcard here breaks T4
    self_signed_tls: bool = False  # TLS certificates not issued by the CA of /cacerts (S2)
    unknown_label_status: int = 404  # what an unknown label answers (E7 wants 404)
    wrong_method_status: int = 405  # what a wrong HTTP method answers (E2, E10 want a 4xx)
    accept_bad_signature: bool = False  # issues for a CSR whose signature does not verify (E2)
    pop_presence_only: bool = False  # with require_pop: any challengePassword will do (E14)
    # lists the estkit tls-exporter OID in /csrattrs and checks "tls-exporter:" values (E14 under
    # TLS 1.3, docs/tls13-pop.md), correctly
    tls_exporter_pop: bool = False
    exporter_unchecked: bool = False  # with tls_exporter_pop: any tls-exporter value will do
    csrattrs_not_csrattrs: bool = False  # /csrattrs 200 is base64 DER, but not CsrAttrs (E4)
    csrattrs_trailing_nul: bool = False  # /csrattrs 200 with a NUL byte after the base64
    serverkeygen_pkcs1: bool = False  # the application/pkcs8 key part holds a PKCS#1 RSA key
    serverkeygen_wrong_key: bool = False  # the key part is not the certificate's key (E5)
    drop_san: bool = False  # issued certificates lack the SAN the CSR asked for (C9)
    refuse_reenroll: bool = False  # /simplereenroll always 400 (E3)
    intermediate_ca: bool = False  # issues from an intermediate /cacerts does not return (E1)
    tls12_only: bool = False  # no TLS 1.3 (T1 SHOULD)
    drop_ciphers: tuple[str, ...] = ()  # TLS 1.2 suites of BCP-003-01 not offered (T3)
    server_key_types: tuple[str, ...] = ("rsa", "ec")  # TLS certificates loaded (T5)
    plain_http: bool = False  # the EST port also answers unencrypted HTTP (T5)
    # /serverkeygen parts: "der" = raw DER without Content-Transfer-Encoding (E15 fail),
    # "no-cte" = base64 without the header (noted only: RFC 8951 receivers ignore it)
    serverkeygen_parts: str = "base64"


@dataclass
class Answer:
    method: str
    path: str
    status: int
    reason: str
    content_type: str = ""


@dataclass
class FakeEstServer:
    pki: FakePki
    workdir: Path
    faults: Faults = field(default_factory=Faults)
    labels: frozenset[str | None] = frozenset({None})
    answers: list[Answer] = field(default_factory=list)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _deferred: int = 0
    _tls_port: int = 0
    _intermediate: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None
    _nonces: int = 0
    _valid_nonces: set[str] = field(default_factory=set)
    _stale_sent: bool = False

    # -- TLS ------------------------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.faults.tls12_only:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        listed = [c for c in BCP_TLS12_CIPHERS.split(":") if c not in self.faults.drop_ciphers]
        ciphers = ":".join(listed) + (
            f":{self.faults.extra_ciphers}" if self.faults.extra_ciphers else ""
        )
        ctx.set_ciphers(ciphers + ":@SECLEVEL=0")
        for kind in self.faults.server_key_types:
            cert, key = self.pki.server_pair(
                kind,
                self.faults.server_names,
                self.workdir,
                self_signed=self.faults.self_signed_tls,
            )
            ctx.load_cert_chain(cert, key)
        dh = self.workdir / "ffdhe2048.pem"
        if dh.exists():
            ctx.load_dh_params(dh)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(cadata=self.pki.client_roots_pem)
        if self.faults.intermediate_ca:  # so certificates it issued authenticate re-enrollment
            ctx.load_verify_locations(cadata=certificates_to_pem([self._issuer[0]]).decode())
        return ctx

    # -- HTTP -----------------------------------------------------------------------------------

    def _new_nonce(self) -> str:
        self._nonces += 1
        nonce = f"fake{self._nonces:06d}"
        self._valid_nonces.add(nonce)
        return nonce

    def _digest_verdict(self, request: web.Request) -> str:
        """``ok``, ``stale`` (right password, nonce retired) or ``missing``/``wrong``."""
        header = request.headers.get("Authorization", "")
        if not header.startswith("Digest "):
            return "missing"
        fields = parse_keqv_list(parse_http_list(header[len("Digest ") :]))
        ha1 = _md5(f"{DIGEST_USER}:{DIGEST_REALM}:{DIGEST_PASSWORD}")
        ha2 = _md5(f"{request.method}:{fields.get('uri', '')}")
        expected = _md5(
            f"{ha1}:{fields.get('nonce')}:{fields.get('nc')}:{fields.get('cnonce')}:auth:{ha2}"
        )
        if fields.get("username") != DIGEST_USER or fields.get("response") != expected:
            return "wrong"
        if fields.get("uri") != request.path_qs:
            return "wrong"
        nonce = fields.get("nonce", "")
        if nonce not in self._valid_nonces:
            return "stale"
        if not self._stale_sent:  # the first correct answer: its nonce "expired" meanwhile
            self._stale_sent = True
            self._valid_nonces.discard(nonce)
            return "stale"
        return "ok"

    def _early_413(self, request: web.Request) -> None:
        """The early_413_close fault: answer 413 from the headers alone and hang up at once."""
        if request.content_length is None or request.content_length <= MAX_BODY_BYTES:
            return
        self.answers.append(Answer(request.method, request.path, 413, "early close"))
        transport = request.transport
        assert transport is not None
        transport.write(EARLY_413)
        transport.close()  # with the client's body unread
        raise asyncio.CancelledError  # nothing more to send on this connection

    def _answer(
        self, request: web.Request, status: int, reason: str = "", **kwargs: object
    ) -> web.Response:
        sent = request.headers.get("Content-Type", "")
        self.answers.append(Answer(request.method, request.path, status, reason, sent))
        if "body" in kwargs or "text" in kwargs:
            return web.Response(status=status, **kwargs)  # type: ignore[arg-type]
        return web.Response(status=status, text=reason or "ok", **kwargs)  # type: ignore[arg-type]

    def _certs_response(self, request: web.Request, certs: list[x509.Certificate]) -> web.Response:
        wrong = self.faults.wrong_media_type and not request.path.endswith("/cacerts")
        content_type = "application/octet-stream" if wrong else PKCS7_CERTS_ONLY
        body = build_certs_only(certs) if self.faults.der_bodies else encode_certs_only_body(certs)
        return self._answer(
            request, 200, "issued", body=body, headers={"Content-Type": content_type}
        )

    async def dispatch(self, request: web.Request) -> web.Response:
        try:
            label, operation = parse_path(request.path)
        except EstProtocolError as exc:
            return self._answer(request, 404, f"not an EST path: {exc}")
        if label not in self.labels:
            status = self.faults.unknown_label_status
            if status == 200 and operation == "cacerts":
                return self._certs_response(request, [self.pki.root])
            return self._answer(request, status, f"unknown label {label!r}")
        wanted = OPERATIONS.get(operation)
        if wanted is None or (operation == "serverkeygen" and self.faults.no_serverkeygen):
            return self._answer(request, 404, f"{operation} not implemented")
        if request.method != wanted:
            status = self.faults.wrong_method_status
            return self._answer(request, status, f"use {wanted}", headers={"Allow": wanted})
        if self.faults.early_413_close and request.method == "POST":
            self._early_413(request)
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        peer_der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        peer = x509.load_der_x509_certificate(peer_der) if peer_der else None
        if operation == "cacerts":
            return self._certs_response(request, [self.pki.root])
        if operation == "csrattrs":
            if self.faults.csrattrs_not_csrattrs:  # an INTEGER, not a SEQUENCE of attributes
                return self._answer(request, 200, body=encode_base64_body(b"\x02\x01\x05"),
                                    headers={"Content-Type": "application/csrattrs"})  # fmt: skip
            wishes = self.faults.require_pop or self.faults.tls_exporter_pop
            if not wishes and not self.faults.csrattrs_trailing_nul:
                return self._answer(request, 204, "no attributes")
            oids = (
                (x509.ObjectIdentifier(CHALLENGE_PASSWORD_OID),) if self.faults.require_pop else ()
            )
            if self.faults.tls_exporter_pop:
                oids = (*oids, x509.ObjectIdentifier(TLS_EXPORTER_POP_OID))
            der = encode_csrattrs(CsrAttrs(oids=oids))
            nul = b"\x00" if self.faults.csrattrs_trailing_nul else b""
            return self._answer(request, 200, body=encode_base64_body(der) + nul,
                                headers={"Content-Type": "application/csrattrs"})  # fmt: skip
        return await self._enroll(request, operation, peer, ssl_object)

    async def _enroll(
        self,
        request: web.Request,
        operation: str,
        peer: x509.Certificate | None,
        ssl_object: ssl.SSLObject | None,
    ) -> web.Response:
        if self.faults.basic_upfront and request.headers.get("Authorization") != basic_header(
            BASIC_USER, BASIC_PASSWORD
        ):
            return self._answer(request, 403, "credentials required")
        if self.faults.digest_challenge:
            verdict = self._digest_verdict(request)
            if verdict != "ok":
                stale = ", stale=true" if verdict == "stale" else ""
                challenge = (
                    f'Digest realm="{DIGEST_REALM}", qop="auth", algorithm=MD5, '
                    f'nonce="{self._new_nonce()}"{stale}'
                )
                return self._answer(request, 401, f"digest: {verdict}",
                                    headers={"WWW-Authenticate": challenge})  # fmt: skip
        if self.faults.basic_challenge and "Authorization" not in request.headers:
            return self._answer(request, 401, "credentials needed",
                                headers={"WWW-Authenticate": 'Basic realm="fake"'})  # fmt: skip
        content_type = request.headers.get("Content-Type", "")
        if not self.faults.accept_wrong_content_type:
            try:
                essence = parse_media_type(content_type).essence
            except EstProtocolError:
                essence = ""
            if essence != "application/pkcs10":
                return self._answer(request, 415, f"need application/pkcs10, got {content_type}")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._answer(request, 413, "body too large")
        try:
            csr = decode_csr_body(body)
        except EstProtocolError as exc:
            if self.faults.accept_bad_signature and "signature" in str(exc):
                csr = x509.load_der_x509_csr(decode_body(body)[0])
            else:
                return self._bad_csr(request, exc, content_type)
        return await self._issue(request, operation, peer, ssl_object, csr)

    def _bad_csr(
        self, request: web.Request, exc: EstProtocolError, content_type: str
    ) -> web.Response:
        if self.faults.crash_on_bad_base64 and "base64" in str(exc):
            self.answers.append(Answer(request.method, request.path, 500, "crashed", content_type))
            raise RuntimeError("simulated crash on bad base64") from exc
        return self._answer(request, 400, f"bad CSR: {exc}")

    async def _issue(
        self,
        request: web.Request,
        operation: str,
        peer: x509.Certificate | None,
        ssl_object: ssl.SSLObject | None,
        csr: x509.CertificateSigningRequest,
    ) -> web.Response:
        if peer is None and not self.faults.issue_without_client_cert:
            return self._answer(request, 403, "client certificate required")
        info = describe_csr(csr)
        exporter = tls_exporter_for(ssl_object) if self.faults.tls_exporter_pop else None
        claims_exporter = binding_type_of(info.challenge_password or "") == TLS_EXPORTER
        if self.faults.require_pop:
            result = check_pop(info.challenge_password, tls_unique_for(ssl_object), exporter)
            if self.faults.pop_presence_only and result is PopResult.MISMATCH:
                result = PopResult.MATCH
            if self.faults.exporter_unchecked and claims_exporter:
                result = PopResult.MATCH
            if result is not PopResult.MATCH:
                return self._answer(request, 400, f"proof-of-possession: {result.value}")
        elif self.faults.tls_exporter_pop and info.challenge_password is not None:
            # Offered, so a tls-exporter value is checked even where linking is not required.
            result = check_pop(info.challenge_password, tls_unique_for(ssl_object), exporter)
            if result is PopResult.MISMATCH and not self.faults.exporter_unchecked:
                return self._answer(request, 400, "tls-exporter: mismatch")
        if self.faults.refuse_rsa and info.key.family == "rsa":
            return self._answer(request, 400, "RSA keys are not accepted")
        if operation == "simplereenroll":
            if self.faults.refuse_reenroll:
                return self._answer(request, 400, "re-enrollment is broken here")
            ours = self._issuer[0] if self.faults.intermediate_ca else self.pki.root
            if peer is None or peer.issuer != ours.subject:
                return self._answer(request, 403, "re-enroll with a certificate we issued")
            if csr.subject != peer.subject and not self.faults.accept_changed_subject:
                return self._answer(request, 400, "subject differs from the certificate")
        if self.faults.defer_without_retry_after:
            return self._answer(request, 202, "waiting for an operator")
        if self._deferred < self.faults.defer_first and operation == "simpleenroll":
            self._deferred += 1
            return self._answer(request, 202, "try again", headers={"Retry-After": "1"})
        ekus = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
        names = list(info.dns_names) or ([info.common_name] if info.common_name else [])
        san = x509.SubjectAlternativeName([x509.DNSName(n) for n in names]) if names else None
        if self.faults.drop_san:
            san = None
        if operation == "serverkeygen" and self.faults.serverkeygen_pkcs1:
            rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            cert = self._sign(rsa_key.public_key(), csr.subject, san, ekus)
            pkcs1 = rsa_key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
            body, content_type = build_serverkeygen_response(pkcs1, PKCS8, [cert])
            return self._answer(request, 200, body=body, headers={"Content-Type": content_type})
        if operation == "serverkeygen":
            key = ec.generate_private_key(ec.SECP256R1())
            cert = self._sign(key.public_key(), csr.subject, san, ekus)
            sent = (
                ec.generate_private_key(ec.SECP256R1())
                if self.faults.serverkeygen_wrong_key
                else key
            )
            body, content_type = self._keygen_body(private_key_to_der(sent), cert)
            return self._answer(request, 200, body=body, headers={"Content-Type": content_type})
        cert = self._sign(csr.public_key(), csr.subject, san, ekus)
        return self._certs_response(request, [cert])

    def _keygen_body(self, key_der: bytes, cert: x509.Certificate) -> tuple[bytes, str]:
        form = self.faults.serverkeygen_parts
        if form == "base64":
            return build_serverkeygen_response(key_der, PKCS8, [cert])
        boundary = "fake-est-boundary"
        parts = [(PKCS8, key_der), (PKCS7_CERTS_ONLY, build_certs_only([cert]))]
        body = b""
        for media_type, der in parts:
            content = der if form == "der" else encode_base64_body(der)
            body += f"--{boundary}\r\nContent-Type: {media_type}\r\n\r\n".encode() + content
            body += b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        return body, f"multipart/mixed; boundary={boundary}"

    @property
    def _issuer(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """Who signs issued certificates: the root, or (fault) an intermediate under it."""
        if self._intermediate is None:
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fake EST Issuing CA")])
            cert = sign(name, key.public_key(), self.pki.root.subject, self.pki.root_key, ca=True)
            self._intermediate = (cert, key)
        return self._intermediate

    def _sign(
        self,
        public_key: object,
        subject: x509.Name,
        san: x509.SubjectAlternativeName | None,
        ekus: tuple[x509.ObjectIdentifier, ...],
    ) -> x509.Certificate:
        if not self.faults.intermediate_ca:
            return self.pki.issue(public_key, subject, san, ekus)
        cert, key = self._issuer
        return sign(subject, public_key, cert.subject, key, san=san, ekus=ekus)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeEstServer:
        ready = threading.Event()
        failure: list[BaseException] = []
        ctx = self._tls_context()
        limit = UNLIMITED_BODY_BYTES if self.faults.no_size_limit else MAX_BODY_BYTES

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application(client_max_size=limit)
            app.router.add_route("*", "/{tail:.*}", self.dispatch)
            runner = web.AppRunner(app, access_log=None)
            try:
                loop.run_until_complete(runner.setup())
                site: web.BaseSite
                if self.faults.early_413_close:
                    # A small receive window, as a busy server's: the client is still sending
                    # when the early 413 and the close arrive (loopback would swallow 1 MiB).
                    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF_BYTES)
                    listener.bind(("127.0.0.1", 0))
                    site = web.SockSite(runner, listener, ssl_context=ctx)
                else:
                    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
                loop.run_until_complete(site.start())
                self.port = runner.addresses[0][1]
                if self.faults.plain_http:
                    front = loop.run_until_complete(
                        asyncio.start_server(self._plain_or_tls, "127.0.0.1", 0)
                    )
                    self._tls_port, self.port = self.port, front.sockets[0].getsockname()[1]
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(runner.cleanup())
                loop.close()

        self._thread = threading.Thread(target=serve, name="fake-est", daemon=True)
        self._thread.start()
        ready.wait(timeout=30)
        if failure:
            raise failure[0]
        return self

    async def _plain_or_tls(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """The plain_http fault: TLS (first byte 0x16, a handshake record) goes through to the
        real server; anything else gets a plain-text HTTP 200."""
        try:
            first = await reader.read(1)
            if first == b"\x16":
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._tls_port)
                up_writer.write(first)
                await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
                return
            head = first + await reader.readuntil(b"\r\n\r\n")
            method, path = [*head.split(b" "), b"", b""][:2]
            self.answers.append(Answer(method.decode(), path.decode(), 200, "plain http"))
            writer.write(PLAIN_HTTP_ANSWER)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def statuses(self, path_suffix: str) -> list[int]:
        return [a.status for a in self.answers if a.path.endswith(path_suffix)]


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@contextmanager
def running(server: FakeEstServer) -> Iterator[FakeEstServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
