"""One run's state: the network operations several cases share, each done at most once.

Why memoised operations: "re-enroll with the issued certificate", "EKU of every issued
certificate" and "media type of every response" all need the same enrollments. Doing each
operation once, on first use, keeps the run fast and lets ``--only reenroll-rsa`` work on its own
(the enrollment it depends on simply happens inside it). Operations here are *tolerant* — they
accept DER, PEM or base64 and any media type, like a robust client — so that the one case that
judges an encoding or a media type is the only one that fails for it.
"""

from __future__ import annotations

import base64
import re
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from cryptography import x509
from cryptography.x509.oid import AttributeOID, ExtendedKeyUsageOID, NameOID

from estkit.conformance import chains
from estkit.conformance.dnssd import DnsSdError, DnsView, browse, browse_mdns
from estkit.conformance.rogue import make_rogue_identity
from estkit.conformance.suites import CipherCatalogue, local_catalogue
from estkit.conformance.target import Identity, PrivateKey, Target
from estkit.conformance.tlsprobe import Handshake, probe_tls12_suites, probe_version
from estkit.conformance.transport import (
    DEFAULT_TLS,
    TLS12_ONLY,
    BodySource,
    ContextFactory,
    Exchange,
    TlsSettings,
    perform,
)
from estkit.protocol import (
    MAX_RETRY_AFTER_SECONDS,
    PKCS10,
    CsrAttrs,
    ServerKeygenResult,
    build_csr,
    build_path,
    challenge_password_for,
    decode_body,
    decode_certs_only_body,
    decode_csrattrs,
    encode_csr_body,
    exporter_challenge_password_for,
    generate_private_key,
    is_self_signed,
    key_matches_certificate,
    parse_retry_after,
    parse_serverkeygen_response,
    signature_hash_for,
    tls_unique_for,
)
from estkit.tlsbind import exporter_support, tls_exporter_for

_T = TypeVar("_T")

KEY_TYPES = {"rsa": "rsa2048", "ecdsa": "p256"}
"""Key types of the test CSRs: the smallest each family allows, so generation stays fast."""

DEFERRAL_BUDGET_SECONDS = 5.0
"""How long a whole run may spend waiting on 202 + Retry-After answers (the run must stay fast;
a server that defers for an operator gets its deferral judged, not waited out)."""

MAX_DEFERRED_ATTEMPTS = 3
"""Repeats of a deferred (202) request, each after the server's Retry-After (E8, C10)."""

NOT_OFFERED_STATUSES = frozenset({404, 405, 501})
"""Answers meaning "this operation is not implemented here"."""
DEFERRED_STATUSES = frozenset({202, 503})
"""Answers that come with Retry-After: "accepted, come back later" and "busy" (E8)."""

MAX_CHALLENGE_ANSWERS = 2
"""Answers to one 401: the first, and one more when a Digest nonce was stale (RFC 7616 §3.3)."""


def link_challenge(sock: ssl.SSLSocket, *, exporter_offered: bool) -> str | None:
    """The challengePassword linking a CSR to ``sock``'s connection: base64(tls-unique) under
    TLS 1.2 (RFC 7030 §3.5), "tls-exporter:" + base64(tls-exporter) under TLS 1.3 when the
    server offers that (estkit extension, RFC 9266), else None."""
    unique = tls_unique_for(sock)
    if unique:
        return challenge_password_for(unique)
    exporter = tls_exporter_for(sock) if exporter_offered else None
    return exporter_challenge_password_for(exporter) if exporter else None


@dataclass
class Issuance:
    """An enrollment-like operation (simpleenroll, simplereenroll, serverkeygen) and its result."""

    kind: str
    operation: str
    key: PrivateKey
    csr: x509.CertificateSigningRequest | None = None
    exchanges: list[Exchange] = field(default_factory=list)
    certificates: list[x509.Certificate] = field(default_factory=list)
    certificate: x509.Certificate | None = None
    problem: str | None = None
    deferred: bool = False
    client: Identity | None = None
    keygen: ServerKeygenResult | None = None

    @property
    def exchange(self) -> Exchange | None:
        return self.exchanges[-1] if self.exchanges else None

    @property
    def ok(self) -> bool:
        return self.certificate is not None

    @property
    def title(self) -> str:
        return f"{self.operation} ({self.kind})"

    def evidence(self) -> dict[str, Any]:
        record: dict[str, Any] = {"operation": self.operation, "kind": self.kind}
        if self.certificate is not None:
            record["certificate"] = chains.summary(self.certificate)
        if self.problem:
            record["problem"] = self.problem
        if self.exchange is not None:
            record["response"] = self.exchange.evidence()
        return record


@dataclass
class Fetched:
    """A GET of ``/cacerts`` or ``/csrattrs`` and what could be made of it."""

    exchange: Exchange
    certificates: list[x509.Certificate] = field(default_factory=list)
    attrs: CsrAttrs | None = None
    warnings: list[str] = field(default_factory=list)
    problem: str | None = None


class Session:
    """State shared by the cases of one run. Not thread-safe; one run at a time."""

    def __init__(self, target: Target, *, now: Callable[[], datetime] | None = None):
        self.target = target
        self.now = now or (lambda: datetime.now(UTC))
        self.token = secrets.token_hex(3)
        self.factory = ContextFactory(target.trust_anchors, check_hostname=not target.host_is_ip)
        self.log: list[Exchange] = []
        self.challenges: list[Exchange] = []
        self.deferrals: list[Exchange] = []
        self._memo: dict[str, Any] = {}
        self.deferral_budget = DEFERRAL_BUDGET_SECONDS

    def close(self) -> None:
        self.factory.close()

    # -- generic requests -------------------------------------------------------------------

    def path(self, operation: str, *, label: str | bool | None = True) -> str:
        """EST path of ``operation``; ``label=True`` means the target's label."""
        chosen = self.target.label if label is True else (label or None)
        return build_path(operation, chosen)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: BodySource = b"",
        content_type: str | None = None,
        identity: Identity | None = None,
        settings: TlsSettings = DEFAULT_TLS,
        answer_challenge: bool = True,
        headers: dict[str, str] | None = None,
    ) -> Exchange:
        """One exchange, logged as evidence; answers an HTTP Basic or Digest challenge if allowed.

        ``answer_challenge=False`` sends no credentials at all (not even preemptive Basic): the
        probes that use it test what a client without credentials gets.
        """
        if answer_challenge and self.target.basic and self.target.basic_preemptive:
            headers = {"Authorization": _basic(*self.target.basic), **(headers or {})}

        def send(sent_headers: dict[str, str] | None) -> Exchange:
            sent = perform(
                self.factory,
                self.target,
                method,
                path,
                body=body,
                content_type=content_type,
                headers=sent_headers,
                identity=identity,
                settings=settings,
            )
            self.log.append(sent)
            if sent.status in DEFERRED_STATUSES:
                self.deferrals.append(sent)
            return sent

        exchange = send(headers)
        challenges = exchange.headers_named("www-authenticate")
        if exchange.status != 401 or not challenges:
            return exchange
        self.challenges.append(exchange)
        # Every exchange has its own connection, so an answer never depends on the challenged
        # connection staying open, and a PoP body is rebuilt for the answer's connection.
        for _answer in range(MAX_CHALLENGE_ANSWERS):
            authorization = (
                self._authorization(method, path, challenges) if answer_challenge else None
            )
            if authorization is None:
                break
            exchange = send({**(headers or {}), "Authorization": authorization})
            challenges = exchange.headers_named("www-authenticate")
            if exchange.status != 401 or not any(_is_stale(c) for c in challenges):
                break  # answered, or refused for good (a stale nonce is worth one more answer)
        return exchange

    def enroll_probe(
        self,
        body: BodySource,
        *,
        client: Identity | None = None,
        anonymous: bool = False,
        content_type: str = PKCS10,
        settings: TlsSettings = DEFAULT_TLS,
    ) -> Exchange:
        """One POST to /simpleenroll outside the memoised enrollments: what a probe sends when
        it varies the body, the media type, the client or the TLS version.

        The client is the manufacturer identity, answering HTTP challenges like the memoised
        enrollments, unless ``client`` names another one or ``anonymous`` asks for none at all:
        those send no HTTP credentials, so what they get rests on their TLS identity alone.
        """
        manufacturer = client is None and not anonymous
        return self.request(
            "POST",
            self.path("simpleenroll"),
            body=body,
            content_type=content_type,
            identity=self.target.manufacturer if manufacturer else client,
            settings=settings,
            answer_challenge=manufacturer,
        )

    def _authorization(self, method: str, path: str, challenges: list[str]) -> str | None:
        """The Authorization header answering ``challenges`` (Digest preferred), or None."""
        schemes = {c.strip().split(" ", 1)[0].lower() for c in challenges}
        if self.target.digest and "digest" in schemes:
            user, password = self.target.digest
            return digest_authorization(
                user, password, method, f"{self.target.url}{path}", challenges
            )
        if self.target.basic and "basic" in schemes:
            return _basic(*self.target.basic)
        return None

    def memoised(self, key: str, compute: Callable[[], _T]) -> _T:
        if key not in self._memo:
            self._memo[key] = compute()
        value: _T = self._memo[key]  # what compute() gave for this key
        return value

    # -- names and CSRs ---------------------------------------------------------------------

    def device_name(self, role: str) -> str:
        return f"est-conformance-{role}-{self.token}.{self.target.domain}"

    def device_serial(self) -> str | None:
        """The manufacturer certificate's serialNumber attribute, reused in CSRs (C7)."""
        attributes = self.target.manufacturer.certificate.subject.get_attributes_for_oid(
            NameOID.SERIAL_NUMBER
        )
        return str(attributes[0].value) if attributes else None

    def spare_key(self, kind: str) -> PrivateKey:
        """A key for requests that are expected to be refused (no need for a fresh one each)."""
        return self.memoised(f"spare-key-{kind}", lambda: generate_private_key(KEY_TYPES[kind]))

    def csr_body(
        self, key: PrivateKey, role: str, *, challenge_password: str | None = None
    ) -> tuple[x509.CertificateSigningRequest, bytes]:
        name = self.device_name(role)
        csr = build_csr(
            key,
            common_name=name,
            dns_names=[name],
            serial_number=self.device_serial(),
            challenge_password=challenge_password,
        )
        return csr, encode_csr_body(csr)

    def pop_challenge(self, sock: ssl.SSLSocket) -> str | None:
        """The challengePassword for this connection when the server wants PoP linking (E14)."""
        if not self.requires_pop:
            return None
        return link_challenge(sock, exporter_offered=self.offers_tls_exporter)

    def csr_source(
        self,
        key: PrivateKey,
        role: str,
        *,
        encode: Callable[[x509.CertificateSigningRequest], bytes] | None = None,
        challenge: Callable[[ssl.SSLSocket], str | None] | None = None,
    ) -> BodySource:
        """A CSR body built on the connection, PoP-linked when the server wants it.

        Refusal probes use it so that the one thing wrong with their request is the thing they
        test, not a missing challengePassword. A PoP probe passes its own ``challenge`` (the
        challengePassword for the connection) to link the CSR to another connection, or by hand.
        """
        linking = challenge or self.pop_challenge

        def body(sock: ssl.SSLSocket) -> bytes:
            csr, encoded = self.csr_body(key, role, challenge_password=linking(sock))
            return encode(csr) if encode is not None else encoded

        return body

    # -- shared reads -----------------------------------------------------------------------

    def cacerts(self) -> Fetched:
        return self.memoised("cacerts", self._fetch_cacerts)

    def _fetch_cacerts(self) -> Fetched:
        exchange = self.request("GET", self.path("cacerts"))
        fetched = Fetched(exchange)
        if exchange.status != 200:
            fetched.problem = f"/cacerts failed: {exchange.describe()}"
            return fetched
        try:
            fetched.certificates = decode_certs_only_body(exchange.body)
        except ValueError as exc:
            fetched.problem = f"/cacerts body is not a certs-only PKCS#7: {exc}"
        return fetched

    def csrattrs(self) -> Fetched:
        return self.memoised("csrattrs", self._fetch_csrattrs)

    def _fetch_csrattrs(self) -> Fetched:
        exchange = self.request("GET", self.path("csrattrs"), identity=self.target.manufacturer)
        fetched = Fetched(exchange)
        if exchange.status != 200:
            return fetched
        try:
            der, _form = decode_body(exchange.body)
            fetched.attrs, fetched.warnings = decode_csrattrs(der)
            if b"\x00" in exchange.body:
                # Tolerated like a robust client does (checklist quirks), but said: NUL is
                # neither base64 nor the white space RFC 8951 lets receivers skip.
                fetched.warnings.append(
                    "the body contains NUL byte(s) besides the base64 (tolerated)"
                )
        except ValueError as exc:
            fetched.problem = f"/csrattrs body does not parse: {exc}"
        return fetched

    @property
    def requires_pop(self) -> bool:
        attrs = self.csrattrs().attrs
        return bool(attrs is not None and attrs.requires_pop)

    @property
    def offers_tls_exporter(self) -> bool:
        """The server lists the estkit tls-exporter OID: it links CSRs under TLS 1.3 too."""
        attrs = self.csrattrs().attrs
        return bool(attrs is not None and attrs.offers_tls_exporter)

    def enroll_settings(self) -> TlsSettings:
        """TLS 1.2 when the server wants PoP linking and can link only with tls-unique (which
        TLS 1.3 lacks); any version when it also takes tls-exporter and we can read it."""
        if not self.requires_pop:
            return DEFAULT_TLS
        if self.offers_tls_exporter and exporter_support().available:
            return DEFAULT_TLS
        return TLS12_ONLY

    # -- issuing operations -----------------------------------------------------------------

    def enroll(self, kind: str) -> Issuance:
        """``/simpleenroll`` with the manufacturer certificate and a ``kind`` key (memoised)."""
        return self.memoised(f"enroll-{kind}", lambda: self.issue(kind))

    def issue(
        self,
        kind: str,
        *,
        identity: Identity | None = None,
        role: str | None = None,
        operation: str = "simpleenroll",
        answer_challenge: bool = True,
    ) -> Issuance:
        """A fresh enrollment (not memoised); ``answer_challenge=False`` presents the client
        certificate only, as a BCP-003-03 node does (C8)."""
        key = generate_private_key(KEY_TYPES[kind])
        identity = identity or self.target.manufacturer
        issuance = Issuance(kind=kind, operation=operation, key=key, client=identity)
        name = role or kind
        self._post_csr(
            issuance,
            lambda challenge: self.csr_body(key, name, challenge_password=challenge),
            answer_challenge=answer_challenge,
        )
        return issuance

    def reenroll(self, kind: str) -> Issuance:
        """``/simplereenroll`` authenticated with the certificate from :meth:`enroll` (memoised)."""
        return self.memoised(f"reenroll-{kind}", lambda: self.renew(self.enroll(kind)))

    def renew(self, base: Issuance, *, change_subject: bool = False) -> Issuance:
        """Re-enroll with ``base``'s certificate as client identity; same subject unless asked."""
        key = generate_private_key(KEY_TYPES[base.kind])
        renewal = Issuance(kind=base.kind, operation="simplereenroll", key=key)
        if base.certificate is None:
            renewal.problem = f"no certificate from {base.title} to re-enroll with"
            return renewal
        renewal.client = self.issued_identity(base)
        cert = base.certificate
        if change_subject:
            new_name = self.device_name(f"changed-{base.kind}")
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, new_name)])
            san: x509.SubjectAlternativeName | None = x509.SubjectAlternativeName(
                [x509.DNSName(new_name)]
            )
        else:
            subject, san = cert.subject, chains.subject_alt_names(cert)

        def build(challenge: str | None) -> tuple[x509.CertificateSigningRequest, bytes]:
            csr = csr_with_subject(key, subject, san, challenge)
            return csr, encode_csr_body(csr)

        self._post_csr(renewal, build)
        return renewal

    def issued_identity(self, issuance: Issuance) -> Identity:
        """The issued certificate + key as a TLS client identity, with its CA chain if known."""
        assert issuance.certificate is not None
        pool = self.cacerts().certificates + issuance.certificates
        chain, _problem = chains.chain_to_root(issuance.certificate, pool)
        intermediates = [c for c in chain[1:] if not is_self_signed(c)]
        return Identity(
            name=f"issued {issuance.kind}",
            chain=(issuance.certificate, *intermediates),
            key=issuance.key,
        )

    def serverkeygen(self) -> Issuance:
        return self.memoised("serverkeygen", self._serverkeygen)

    def _serverkeygen(self) -> Issuance:
        placeholder = self.spare_key("ecdsa")
        issuance = Issuance(
            kind="ecdsa", operation="serverkeygen", key=placeholder, client=self.target.manufacturer
        )
        self._post_csr(
            issuance,
            lambda challenge: self.csr_body(
                placeholder, "serverkeygen", challenge_password=challenge
            ),
            parse=self._parse_serverkeygen,
        )
        return issuance

    def _parse_serverkeygen(self, issuance: Issuance, exchange: Exchange) -> None:
        try:
            result = parse_serverkeygen_response(exchange.body, exchange.content_type or "")
        except ValueError as exc:
            issuance.problem = f"/serverkeygen reply does not parse: {exc}"
            return
        issuance.keygen = result
        issuance.certificates = list(result.certificates)
        if result.private_key is not None:
            issuance.key = result.private_key
            for cert in result.certificates:
                if key_matches_certificate(result.private_key, cert):
                    issuance.certificate = cert
                    return
            issuance.problem = "none of the returned certificates matches the returned private key"
        else:
            issuance.problem = "the returned private key is encrypted or unreadable"

    def _post_csr(
        self,
        issuance: Issuance,
        build: Callable[[str | None], tuple[x509.CertificateSigningRequest, bytes]],
        *,
        parse: Callable[[Issuance, Exchange], None] | None = None,
        answer_challenge: bool = True,
    ) -> None:
        """POST a CSR (rebuilt per connection for PoP linking) and follow 202 + Retry-After."""
        settings = self.enroll_settings()

        def body(sock: ssl.SSLSocket) -> bytes:
            issuance.csr, encoded = build(self.pop_challenge(sock))
            return encoded

        for _attempt in range(MAX_DEFERRED_ATTEMPTS + 1):
            exchange = self.request(
                "POST",
                self.path(issuance.operation),
                body=body,
                content_type=PKCS10,
                identity=issuance.client,
                settings=settings,
                answer_challenge=answer_challenge,
            )
            issuance.exchanges.append(exchange)
            if exchange.status not in DEFERRED_STATUSES:
                break
            delay = parse_retry_after(exchange.header("retry-after"), self.now())
            if delay is None:
                issuance.problem = f"{exchange.status} without a usable Retry-After header"
                issuance.deferred = exchange.status == 202
                return
            delay = min(max(delay, 0.0), MAX_RETRY_AFTER_SECONDS)
            if delay > self.deferral_budget:
                issuance.deferred = True
                issuance.problem = (
                    f"deferred by the server ({exchange.status}, Retry-After {delay:g} s); "
                    f"not issued within the suite's {DEFERRAL_BUDGET_SECONDS:g} s budget"
                )
                return
            time.sleep(delay)
            self.deferral_budget -= delay
        else:
            issuance.deferred = True
            issuance.problem = f"still deferred after {MAX_DEFERRED_ATTEMPTS} repeats"
            return
        exchange = issuance.exchanges[-1]
        if exchange.status != 200:
            issuance.problem = describe_refusal(exchange)
            return
        if parse is not None:
            parse(issuance, exchange)
            return
        try:
            issuance.certificates = decode_certs_only_body(exchange.body)
        except ValueError as exc:
            issuance.problem = f"the 200 reply is not a certs-only PKCS#7: {exc}"
            return
        for cert in issuance.certificates:
            if key_matches_certificate(issuance.key, cert):
                issuance.certificate = cert
                return
        issuance.problem = "no certificate in the reply carries the CSR's public key"

    def baseline(self) -> Issuance | None:
        """A plain enrollment the server accepted: issued, or else deferred for approval (202).

        A refusal probe proves something only when the same client's correct request is taken.
        """
        enrollments = [self.enroll("ecdsa"), self.enroll("rsa")]
        for issuance in enrollments:
            if issuance.ok:
                return issuance
        for issuance in enrollments:
            if issuance.deferred:
                return issuance
        return None

    def issued(self) -> list[tuple[str, x509.Certificate]]:
        """(operation title, certificate) for every issuing operation that produced one."""
        operations = [
            self.enroll("rsa"),
            self.enroll("ecdsa"),
            self.reenroll("rsa"),
            self.reenroll("ecdsa"),
            self.serverkeygen(),
        ]
        return [(op.title, op.certificate) for op in operations if op.certificate is not None]

    # -- rogue and TLS ----------------------------------------------------------------------

    def rogue(self) -> tuple[Identity, bool]:
        """The rogue identity and whether it was generated here (vs. given by the user)."""
        if self.target.rogue is not None:
            return self.target.rogue, False
        identity = self.memoised(
            "rogue", lambda: make_rogue_identity(self.target.manufacturer, now=self.now())[0]
        )
        return identity, True

    def dns_view(self) -> DnsView:
        """The ``_nmos-certs._tcp`` browse of the target's DNS domain (memoised; D1-D5)."""

        def browse_once() -> DnsView:
            try:
                if self.target.dns_domain is None:
                    return browse_mdns(interfaces=self.target.mdns_interfaces)
                return browse(self.target.dns_domain, self.target.dns_server)
            except DnsSdError as exc:
                service = f"_nmos-certs._tcp.{self.target.dns_domain or 'local'}"
                return DnsView(
                    service=service, where=self.target.dns_server or "system", error=str(exc)
                )

        return self.memoised("dns-view", browse_once)

    def catalogue(self) -> CipherCatalogue:
        return self.memoised("catalogue", local_catalogue)

    def version_probe(self, version: ssl.TLSVersion) -> Handshake:
        """One handshake offering only ``version`` (memoised; used by several cases)."""
        return self.memoised(
            f"tls-version-{version.name}",
            lambda: probe_version(
                self.factory, self.target, version, identity=self.target.manufacturer
            ),
        )

    def refusal_settings(self) -> TlsSettings:
        """TLS 1.2 when the server speaks it, for probes whose client certificate may be refused.

        Under TLS 1.2 a refused certificate ends the handshake with an alert the client sees at
        once; under TLS 1.3 the client's handshake is already complete and the refusal arrives
        (or the connection just closes) on the first read, which is harder to tell from a crash.
        """
        if self.version_probe(ssl.TLSVersion.TLSv1_2).accepted:
            return TLS12_ONLY
        return DEFAULT_TLS

    def server_certificates(self) -> dict[str, Handshake]:
        """TLS 1.2 handshakes asking for an RSA and for an ECDSA server certificate (T5)."""

        def probe() -> dict[str, Handshake]:
            return {
                "rsa": probe_tls12_suites(self.factory, self.target, ["aRSA"]),
                "ecdsa": probe_tls12_suites(self.factory, self.target, ["aECDSA"]),
            }

        return self.memoised("server-certificates", probe)

    def server_info(self) -> dict[str, Any]:
        """What the report says about the server: address, TLS and certificate, if seen."""
        info: dict[str, Any] = {
            "url": self.target.url,
            "host": self.target.host,
            "port": self.target.port,
            "label": self.target.label,
            "profile": self.target.profile,
            "openssl": ssl.OPENSSL_VERSION,
        }
        seen = next((ex for ex in self.log if ex.tls_version is not None), None)
        if seen is not None:
            info["tls"] = {"version": seen.tls_version, "cipher": seen.cipher}
            if seen.peer_certificate is not None:
                info["certificate"] = chains.summary(seen.peer_certificate)
        return info


def digest_authorization(
    user: str, password: str, method: str, url: str, challenges: list[str]
) -> str | None:
    """An RFC 7616 Digest answer to ``challenges``, computed by ``httpx.DigestAuth``.

    Driving httpx's own auth flow with a synthetic 401 keeps the hashing (MD5/SHA-256, qop,
    cnonce, nc) in a well-kept library instead of a copy here.
    """
    request = httpx.Request(method, url)
    response = httpx.Response(
        401, headers=[("WWW-Authenticate", c) for c in challenges], request=request
    )
    flow = httpx.DigestAuth(user, password).auth_flow(request)
    next(flow)
    try:
        answered = flow.send(response)
    except (StopIteration, httpx.ProtocolError, NotImplementedError):
        return None  # no Digest challenge httpx can parse
    finally:
        flow.close()
    authorization: str | None = answered.headers.get("Authorization")
    return authorization


def _basic(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def _is_stale(challenge: str) -> bool:
    text = challenge.strip().lower()
    return text.startswith("digest") and re.search(r"\bstale\s*=\s*\"?true\b", text) is not None


def csr_with_subject(
    key: PrivateKey,
    subject: x509.Name,
    san: x509.SubjectAlternativeName | None,
    challenge_password: str | None,
) -> x509.CertificateSigningRequest:
    """A CSR with an exact subject and SAN (re-enrollment must repeat them: RFC 7030 §4.2.2).

    ``estkit.protocol.build_csr`` builds subjects from a CN and serial number only; a certificate
    may carry more attributes, so this copies the subject as issued.
    """
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if san is not None:
        builder = builder.add_extension(san, critical=len(subject) == 0)
    if challenge_password is not None:
        builder = builder.add_attribute(
            AttributeOID.CHALLENGE_PASSWORD, challenge_password.encode("ascii")
        )
    return builder.sign(key, signature_hash_for(key))


def describe_refusal(exchange: Exchange) -> str:
    """Why a request did not succeed, in one sentence with the server's own words."""
    if exchange.status is None:
        return exchange.describe()
    text = exchange.body_text() if exchange.status >= 400 else ""
    return f"{exchange.describe()}" + (f": {text}" if text else "")


def has_eku(cert: x509.Certificate, wanted: x509.ObjectIdentifier) -> bool:
    usages = chains.extended_key_usages(cert)
    return usages is not None and wanted in usages


CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
