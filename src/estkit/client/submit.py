"""The CSR-posting operations as flows: /simpleenroll, /simplereenroll, /serverkeygen.

Why apart from :mod:`.flows`: submitting a CSR is where proof-of-possession linking happens
(RFC 7030 §3.5, checklist E14): open a connection, read its tls-unique (TLS 1.2) or tls-exporter
(TLS 1.3, RFC 9266, when the server offers it: docs/tls13-pop.md), build the CSR with it,
POST on that same connection and check afterwards that it really was the same one, rebuilding the
CSR when it was not (BCP-003-03 C10). The flows only yield actions; :mod:`.sync` and :mod:`.aio`
carry them out.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Final, Literal

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from estkit.protocol import (
    PrivateKey,
    challenge_password_for,
    describe_csr,
    exporter_challenge_password_for,
)
from estkit.protocol.certs import key_identifier
from estkit.tlsbind import exporter_support

from ._transport import CHANNEL_BINDING, LINKED
from .apply import apply_csrattrs
from .errors import EstConnectionChanged, EstError, EstPopError, EstTlsError
from .flows import (
    CSRATTRS_ANSWERS,
    Flow,
    FlowSettings,
    PinTls12,
    build_csr_for,
    csrattrs_flow,
    exchange,
    get,
    polled,
    post_csr,
    require_ok,
)
from .issued import interpret_enroll, interpret_serverkeygen
from .models import CsrAttrsResult, CsrSpec, EnrollResult, ServerKeygenResult
from .responses import Reply, interpret_csrattrs
from .trust import ClientCredentials

# When the POST of a proof-of-possession enrollment did not travel on the connection whose
# tls-unique is in the CSR (the server closed it in between, or after its 401 challenge), the CSR
# is rebuilt for the new connection (C10) at most this many times before giving up. Three covers
# the worst honest case: a 401 that closes, then a Digest nonce refused as stale (closing again),
# then the answer; a server that closes more often than that is not keeping connections at all.
MAX_POP_RELINKS = 3

# RFC 7030 §3.5: TLS versions where tls-unique exists.
TLS12 = "TLSv1.2"

# ``pop=POP_WHEN_POSSIBLE``: link the CSR whenever the connection has a channel binding the server
# checks (tls-unique under TLS 1.2, tls-exporter under TLS 1.3 when /csrattrs offers it), send it
# unlinked otherwise unless the server's /csrattrs requires linking (then as ``pop=True``).
# What BCP-003-03 C7 asks of a node: "TLS-session linking SHOULD be included".
POP_WHEN_POSSIBLE: Final = "when-possible"
PopMode = bool | None | Literal["when-possible"]


@dataclass
class _Submission:
    """State of one CSR submission across attempts."""

    pop_linked: bool = False
    pinned: bool = False
    notes: list[str] = field(default_factory=list)  # what happened, for the curious
    warnings: list[str] = field(default_factory=list)  # what someone should look at


def _linkable(request: httpx.Request) -> httpx.Request:
    """Mark ``request`` so its reply carries the connection's tls-exporter (TLS 1.3)."""
    request.extensions[CHANNEL_BINDING] = True
    return request


def _offers_exporter(opener: Reply) -> bool:
    """Whether the opener (``GET /csrattrs``) lists the estkit tls-exporter OID."""
    if opener.status != 200:
        return False
    try:
        return interpret_csrattrs(opener).offers_tls_exporter
    except EstError:
        return False


def _binding_of(reply: Reply) -> bytes | None:
    """The channel binding a CSR on ``reply``'s connection is linked to (tls-unique or
    tls-exporter: never both, the first exists only under TLS 1.2, the second under 1.3)."""
    return reply.tls_unique if reply.tls_unique is not None else reply.tls_exporter


def _link(opener: Reply, state: _Submission) -> str | None:
    """The challengePassword linking a CSR to the opener's connection, or None if impossible:
    base64(tls-unique) under TLS 1.2 (RFC 7030 §3.5), "tls-exporter:" + base64(tls-exporter)
    under TLS 1.3 when the server offers it (estkit extension, RFC 9266)."""
    if opener.tls_unique is not None:
        return challenge_password_for(opener.tls_unique)
    if opener.tls_exporter is None or not _offers_exporter(opener):
        return None
    state.notes.append(
        f"linked the CSR to the {opener.tls_version} connection with tls-exporter (RFC 9266), "
        "which the server's /csrattrs offers"
    )
    return exporter_challenge_password_for(opener.tls_exporter)


def _why_not_linkable(opener: Reply) -> str:
    """Why a connection without tls-unique cannot be linked either (for messages)."""
    version = opener.tls_version or "an unknown TLS version"
    if not _offers_exporter(opener):
        return (
            f"the server negotiated {version}, where tls-unique does not exist, and its "
            "/csrattrs does not offer tls-exporter linking"
        )
    if opener.tls_exporter is None:
        support = exporter_support()
        why = (
            "the connection did not pass the checks for reading it"
            if support.available
            else support.reason
        )
        return (
            f"the server negotiated {version}, where tls-unique does not exist, and offers "
            f"tls-exporter linking, but this Python cannot read tls-exporter ({why})"
        )
    return f"the server negotiated {version}, which has no usable channel binding"


def _open(settings: FlowSettings) -> Flow[Reply]:
    """The opener of a proof-of-possession attempt: ``GET /csrattrs`` on the operation's
    connection, with its channel binding read (the CSR is then linked to that connection)."""
    return (yield from exchange(_linkable(get(settings, "csrattrs")), dedicated=True))


def _opening_csrattrs(settings: FlowSettings) -> Flow[tuple[CsrAttrsResult, Reply | None]]:
    """``/csrattrs`` for an enrollment that links its CSR whatever the answer (``pop`` "when
    possible"), asked as the first attempt's opener: one request tells what the server wants
    and opens the connection the CSR is linked to, instead of one request for each (issue 23).

    Returns the answer and the opener. An answer :func:`csrattrs_flow` would not take at once
    (202/503 to wait for, an error status) is left to it, exactly as without the opener; then
    there is no opener to reuse and the attempt opens its own.
    """
    opener = yield from _open(settings)
    if opener.status in CSRATTRS_ANSWERS:
        return interpret_csrattrs(opener), opener
    return (yield from csrattrs_flow(settings)), None


def _pop_attempt(
    settings: FlowSettings,
    operation: str,
    spec: CsrSpec,
    state: _Submission,
    optional: bool = False,
    opened: Reply | None = None,
) -> Flow[Reply]:
    """Open a connection, link the CSR to its channel binding, POST on that same connection (E14).

    TLS 1.2: tls-unique. TLS 1.3: tls-exporter when the server's /csrattrs offers it (the
    opener is that request), else reconnect pinned to TLS 1.2 as RFC 7030 clients must.
    ``optional``: a connection without either carries the CSR unlinked instead of failing or
    reconnecting pinned to TLS 1.2. ``opened``: an opener already received on the operation's
    connection (see :func:`_opening_csrattrs`), used for the first link; the check that the POST
    travelled on the linked connection is the same for it as for any opener.
    """
    for _relink in range(MAX_POP_RELINKS + 1):
        try:
            opener = opened if opened is not None else (yield from _open(settings))
            opened = None  # a relink opens afresh
        except EstTlsError as exc:
            if not state.pinned:
                raise
            raise EstPopError(
                "the server negotiated TLS 1.3, where tls-unique does not exist, without "
                "offering tls-exporter linking, and refused TLS 1.2 when asked for it "
                f"({exc.message}); proof-of-possession linking (RFC 7030 §3.5) is impossible "
                "with this server",
                hint="enroll without proof-of-possession linking if the server does not require "
                "it, or have the server allow TLS 1.2",
                params=("pop",),
                url=exc.url,
            ) from exc
        challenge = _link(opener, state)
        if challenge is None and optional:
            state.notes.append(
                f"{_why_not_linkable(opener)}: the CSR is not linked to the TLS session (the "
                "server does not ask for it)"
            )
            return (yield from exchange(post_csr(settings, operation, build_csr_for(spec))))
        if challenge is None:
            version = opener.tls_version or "an unknown TLS version"
            if state.pinned or opener.tls_version == TLS12:
                raise EstPopError(
                    f"proof-of-possession needs tls-unique, which this TLS connection "
                    f"({version}) does not provide",
                    hint="the server must allow TLS 1.2 for proof-of-possession linking",
                    url=str(opener.url),
                )
            if not settings.pin_tls12_for_pop:
                raise EstPopError(
                    f"{_why_not_linkable(opener)}, and proof-of-possession linking "
                    "(RFC 7030 §3.5) needs one of them",
                    hint="allow retrying pinned to TLS 1.2 (pin_tls12_for_pop=True), or enroll "
                    "without proof-of-possession linking if the server does not require it",
                    params=("pin_tls12_for_pop", "pop"),
                    url=str(opener.url),
                )
            state.pinned = True
            state.notes.append(
                f"{_why_not_linkable(opener)}; reconnected with TLS 1.2 for proof-of-possession"
            )
            yield PinTls12(f"server negotiated {version}; tls-unique needs TLS 1.2")
            continue
        csr = build_csr_for(spec, challenge)
        request = _linkable(post_csr(settings, operation, csr))
        request.extensions[LINKED] = True  # never resent on another connection (issue 13)
        try:
            reply = yield from exchange(request, dedicated=True)
        except EstConnectionChanged:
            # 401 and the server closed the connection: the credentials go with the next
            # request (the challenge is known now), on a new connection with a new link.
            state.notes.append(
                "the server closed the connection after its authentication challenge; "
                "linked a new CSR to a new connection"
            )
            continue
        if _binding_of(reply) is not None and _binding_of(reply) == _binding_of(opener):
            state.pop_linked = True
            return reply
        if reply.status == 200:
            # The server issued anyway, so it did not insist on the link; say so and go on.
            state.warnings.append(
                "the POST did not travel on the connection the CSR was linked to; "
                "the server accepted it anyway"
            )
            return reply
        state.warnings.append("the connection changed between linking and POST; CSR rebuilt")
    raise EstPopError(
        f"the server closed the connection between linking the CSR and sending it "
        f"{MAX_POP_RELINKS + 1} times",
        hint="the server must keep the TLS connection open between requests (HTTP keep-alive)",
        url=str(settings.endpoint.url_for(operation)),
    )


def _submission(
    settings: FlowSettings,
    operation: str,
    request: x509.CertificateSigningRequest | CsrSpec,
    pop: PopMode,
    apply_attrs: bool = False,
    known_attrs: CsrAttrsResult | None = None,
) -> Flow[tuple[Reply, int, _Submission, x509.CertificateSigningRequest | None]]:
    """POST a CSR (polling on 202/503), linking it to the connection when PoP is wanted.

    With a :class:`CsrSpec`, ``/csrattrs`` is asked first when ``pop`` is None (link if the
    server lists challengePassword) or ``apply_attrs`` (adjust the spec to what it asks for);
    ``known_attrs``, the same server's answer fetched earlier by the caller, saves that request.
    """
    state = _Submission()
    optional_pop = False
    opened: Reply | None = None  # the /csrattrs answer's connection, for the first link
    if isinstance(request, x509.CertificateSigningRequest):
        if pop is True:
            raise ValueError(
                "proof-of-possession needs the client to build the CSR on the connection that "
                "carries it: pass a CsrSpec (key and names) instead of a finished CSR"
            )
        if apply_attrs:
            raise ValueError("CSR attributes can only be applied to a CsrSpec, not a finished CSR")
        csr: x509.CertificateSigningRequest | None = request
        use_pop = False
    else:
        csr = None
        use_pop = bool(pop)
        when_possible = pop == POP_WHEN_POSSIBLE
        if pop is None or when_possible or apply_attrs:
            if known_attrs is not None:
                attrs = known_attrs
            elif when_possible:
                attrs, opened = yield from _opening_csrattrs(settings)
            else:
                attrs = yield from csrattrs_flow(settings)
            if pop is None or when_possible:
                required = attrs.requires_pop
                use_pop = required or when_possible
                optional_pop = when_possible and not required
                if required:
                    state.notes.append(
                        "the server's /csrattrs asks for proof-of-possession linking"
                    )
            if apply_attrs:
                request, unmet = apply_csrattrs(request, attrs.attrs)
                state.warnings.extend(unmet)
                if request.hash_algorithm:
                    state.notes.append(f"signing the CSR with {request.hash_algorithm}")

    def attempt(_n: int) -> Flow[Reply]:
        nonlocal csr, opened
        if use_pop:
            assert isinstance(request, CsrSpec)
            first, opened = opened, None  # only the first attempt: a later one comes after a wait
            return (
                yield from _pop_attempt(settings, operation, request, state, optional_pop, first)
            )
        if csr is None:
            assert isinstance(request, CsrSpec)
            csr = build_csr_for(request)
        return (yield from exchange(post_csr(settings, operation, csr)))

    reply, attempts, wait_warnings = yield from polled(settings, attempt)
    state.warnings.extend(wait_warnings)
    require_ok(reply, operation, settings, (200,))
    return reply, attempts, state, csr


def _names(request: x509.CertificateSigningRequest | CsrSpec) -> tuple[str | None, tuple[str, ...]]:
    if isinstance(request, CsrSpec):
        return request.common_name, tuple(request.dns_names)
    info = describe_csr(request)
    return info.common_name, tuple(info.dns_names)


def enroll_flow(
    settings: FlowSettings,
    request: x509.CertificateSigningRequest | CsrSpec,
    *,
    operation: str = "simpleenroll",
    pop: PopMode = None,
    apply_attrs: bool = False,
    csrattrs: CsrAttrsResult | None = None,
) -> Flow[EnrollResult]:
    """``POST /simpleenroll`` or ``/simplereenroll`` (E2, E3), with optional PoP (E14).

    ``csrattrs``: this server's ``/csrattrs`` answer when the caller already has it (a node
    enrolling several certificates in one run asks once); otherwise it is asked when needed.
    """
    if operation not in ("simpleenroll", "simplereenroll"):
        raise ValueError(f"not an enrollment operation: {operation!r}")
    reply, attempts, state, _csr = yield from _submission(
        settings, operation, request, pop, apply_attrs, csrattrs
    )
    if isinstance(request, CsrSpec):
        private_key: PrivateKey | None = request.key
        public_key: PublicKeyTypes = request.key.public_key()
    else:
        private_key = None
        public_key = request.public_key()
    common_name, dns_names = _names(request)
    result = interpret_enroll(
        reply,
        public_key=public_key,
        private_key=private_key,
        requested_common_name=common_name,
        requested_dns_names=dns_names,
        now=settings.now(),
    )
    result.attempts = attempts
    result.pop_linked = state.pop_linked
    result.warnings[:0] = state.warnings
    result.notes.extend(state.notes)
    return result


def asymmetric_key_request(credentials: ClientCredentials) -> tuple[x509.ObjectIdentifier, bytes]:
    """The AsymmetricDecryptKeyIdentifier attribute (RFC 7030 §4.4.1.2) for our certificate.

    The value identifies the key the server should encrypt to: the subject key identifier of the
    client certificate (computed from its public key when the extension is absent).
    """
    # Server-side key generation only: its module (and CMS key agreement) loads when used.
    from estkit.protocol.serverkeygen import key_encryption_attribute

    return key_encryption_attribute("asymmetric", key_identifier(credentials.certificate))


def serverkeygen_flow(
    settings: FlowSettings,
    spec: CsrSpec,
    *,
    encrypt_key: bool = False,
    pop: PopMode = None,
    apply_attrs: bool = False,
) -> Flow[ServerKeygenResult]:
    """``POST /serverkeygen`` (E5): the server makes the key; we may ask it to encrypt it."""
    if encrypt_key:
        if settings.credentials is None:
            raise ValueError(
                "asking for an encrypted key needs a client certificate and key: the server "
                "encrypts to that certificate"
            )
        spec = dataclasses.replace(
            spec,
            extra_attributes=(*spec.extra_attributes, asymmetric_key_request(settings.credentials)),
        )
    reply, attempts, state, _csr = yield from _submission(
        settings, "serverkeygen", spec, pop, apply_attrs
    )
    result = interpret_serverkeygen(
        reply,
        credentials=settings.credentials,
        requested_common_name=spec.common_name,
        requested_dns_names=tuple(spec.dns_names),
        now=settings.now(),
    )
    if encrypt_key and not result.key_was_encrypted:
        result.warnings.append("asked for an encrypted key but the server sent it unencrypted")
    result.attempts = attempts
    result.warnings[:0] = state.warnings
    result.notes.extend(state.notes)
    return result
