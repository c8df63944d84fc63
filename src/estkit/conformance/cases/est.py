"""RFC 7030 / RFC 8951 cases (requirement IDs E… of docs/requirements.md)."""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estkit.conformance import chains
from estkit.conformance.cases._common import (
    baseline_or_skip,
    beyond_rfc7030,
    encoding_problems,
    judge_refusal,
    lenient,
    refusal_probe,
    refused_beside_control,
)
from estkit.conformance.model import (
    Outcome,
    Status,
    failed,
    not_applicable,
    passed,
    skipped,
    warned,
)
from estkit.conformance.session import (
    CLIENT_AUTH,
    NOT_OFFERED_STATUSES,
    Issuance,
    Session,
    describe_refusal,
    has_eku,
)
from estkit.conformance.transport import (
    TLS12_ONLY,
    TLS13_ONLY,
    BodySource,
    Exchange,
    TlsSettings,
)
from estkit.protocol import (
    ALLOWED_CURVES,
    CSRATTRS,
    MIN_RSA_BITS,
    MULTIPART_MIXED,
    PKCS7_CERTS_ONLY,
    PKCS7_MIME,
    TLS_EXPORTER_POP_OID,
    challenge_password_for,
    classify_ca_certificates,
    describe_public_key,
    encode_base64_body,
    exporter_challenge_password_for,
    generate_private_key,
    is_self_signed,
    key_matches_certificate,
    parse_retry_after,
    tls_unique_for,
)
from estkit.tlsbind import exporter_support, tls_exporter_for

OVERSIZED_REQUEST_BYTES = 1024 * 1024 + 1
"""Larger than any CSR could be by three orders of magnitude (a CSR is 0.5-2 KiB), and just above
aiohttp's and many proxies' 1 MiB default: a server that still reads it has no size limit (T5)."""

CaseFunction = Callable[[Session], Outcome]

# Why a finding is only a warning under the rfc7030 profile: the RFC sentence that leaves it open.
KEY_TYPE_BASIS = (
    "RFC 7030 §3.7 leaves the decision to issue to local CA policy and sets no constraints on "
    "it, so a CA need not certify every key type; issuing for RSA and ECDSA is BCP-003-03 S6"
)
LABEL_BASIS = (
    "RFC 7030 §3.2.2 only says a server MAY serve several CAs under an optional label segment; "
    "it prescribes no answer for a label it does not know"
)
CONTENT_TYPE_BASIS = (
    "RFC 7030 §4.2.1 tells the client to send application/pkcs10; it does not require the "
    "server to refuse other labels on a well-formed CSR"
)
METHOD_BASIS = "RFC 7030 names POST for /simpleenroll but prescribes no answer to other methods"
SIZE_BASIS = (
    "RFC 7030 sets no request size limit; refusing oversized requests with 413 is BCP-003-01 T5"
)
RESUBJECT_BASIS = (
    "RFC 7030 §4.2.2 'MUST be identical' binds the client's re-enrollment request; whether a "
    "CA issues a changed subject anyway is its policy (ChangeSubjectName exists for it)"
)
TLS_ANCHOR_BASIS = (
    "RFC 7030 §3.6.2 lets the client authenticate the server through an Implicit TA, so the "
    "server's TLS certificate need not chain to the /cacerts root (BCP-003-03 C5 wants it)"
)

UNKNOWN_LABEL = "estkit-conformance-no-such-label"
MALFORMED_BASE64 = b"MIIB!!this is*not@base64%%\n"


def _certificate_message(issuance: Issuance) -> str:
    assert issuance.certificate is not None
    key = describe_public_key(issuance.certificate.public_key())
    return f"issued {key.description} certificate {chains.name(issuance.certificate)}"


def _issuance_outcome(issuance: Issuance, requirement: str) -> Outcome:
    evidence = {"issuance": issuance.evidence()}
    if issuance.ok:
        return passed(_certificate_message(issuance), **evidence)
    if issuance.deferred:
        return warned(
            f"E8, S4: the server deferred the request for approval: {issuance.problem}", **evidence
        )
    return failed(f"{requirement}: {issuance.title} failed: {issuance.problem}", **evidence)


def enroll(kind: str) -> CaseFunction:
    def run(session: Session) -> Outcome:
        issuance = session.enroll(kind)
        outcome = _issuance_outcome(issuance, "E2, S3, S6")
        if outcome.status is not Status.FAIL or not lenient(session):
            return outcome
        other = session.enroll("ecdsa" if kind == "rsa" else "rsa")
        if other.ok:
            return warned(
                f"{outcome.message}; the {other.kind.upper()} enrollment was issued (a warning "
                f"under the rfc7030 profile: {KEY_TYPE_BASIS})",
                **dict(outcome.evidence),
            )
        return outcome

    run.__doc__ = f"/simpleenroll of an {kind.upper()} CSR with the manufacturer certificate"
    return run


def reenroll(kind: str) -> CaseFunction:
    def run(session: Session) -> Outcome:
        base = session.enroll(kind)
        if not base.ok:
            return skipped(
                f"no {kind.upper()} certificate was issued to re-enroll with "
                f"(see enroll-{kind}: {base.problem})"
            )
        renewal = session.reenroll(kind)
        if renewal.ok:
            return passed(_certificate_message(renewal), issuance=renewal.evidence())
        assert base.certificate is not None
        if not has_eku(base.certificate, CLIENT_AUTH) and not renewal.deferred:
            return skipped(
                "blocked: the issued certificate lacks the clientAuth EKU, so it cannot "
                "authenticate a TLS client (S7; see eku-server-client); "
                f"re-enrollment failed: {renewal.problem}",
                issuance=renewal.evidence(),
            )
        return _issuance_outcome(renewal, "E3, C13")

    return run


def cacerts_root(session: Session) -> Outcome:
    fetched = session.cacerts()
    evidence: dict[str, object] = {}
    if not fetched.certificates:
        return failed(f"E1: {fetched.problem or 'no certificates in /cacerts'}")
    certs = fetched.certificates
    cset = classify_ca_certificates(certs)
    evidence["cacerts"] = cset.describe()
    if cset.current_root is None:
        return failed("E1: /cacerts holds no self-signed root CA certificate", **evidence)
    given = [c for c in session.target.trust_anchors if is_self_signed(c)] or list(
        session.target.trust_anchors
    )
    matched = [c for c in given if chains.contains(certs, c)]
    evidence["cacert_given"] = [chains.summary(c) for c in given]
    if not matched:
        return beyond_rfc7030(
            session,
            "E1, C5: no trust anchor given to the suite is among the certificates /cacerts "
            "returned "
            f"(compared as certificates): /cacerts root is {chains.name(cset.current_root)} "
            f"{chains.summary(cset.current_root)['fingerprint']}",
            TLS_ANCHOR_BASIS,
            **evidence,
        )
    leaf = fetched.exchange.peer_certificate
    if leaf is None:
        return failed("S2: the server presented no TLS certificate", **evidence)
    chain, problem = chains.chain_to_root(leaf, certs)
    evidence["server_chain"] = [chains.name(c) for c in chain]
    if problem:
        return beyond_rfc7030(
            session,
            "E1, C5: the server's own TLS certificate does not chain to a root returned by "
            f"/cacerts, so a client trusting /cacerts cannot verify it: {problem}",
            TLS_ANCHOR_BASIS,
            **evidence,
        )
    note = ""
    if not chains.contains(matched, cset.current_root):
        note = (
            f"; the root given to the suite is older than the current root "
            f"{chains.name(cset.current_root)}"
            " (root rollover in progress)"
        )
    return passed(
        f"/cacerts returns the current root {chains.name(cset.current_root)}, the root given to "
        "the suite, "
        f"and the server's TLS chain anchors in it{note}",
        **evidence,
    )


def cacerts_chain(session: Session) -> Outcome:
    fetched = session.cacerts()
    if not fetched.certificates:
        return failed(f"E1: {fetched.problem or 'no certificates in /cacerts'}")
    certs = fetched.certificates
    problems: list[str] = []
    for cert in certs:
        if not is_self_signed(cert):
            _chain, problem = chains.chain_to_root(cert, certs)
            if problem:
                problems.append(f"{chains.name(cert)}: {problem}")
    issued = [session.enroll("rsa"), session.enroll("ecdsa")]
    checked: list[str] = []
    for issuance in issued:
        if issuance.certificate is None:
            continue
        chain, problem = chains.chain_to_root(issuance.certificate, certs)
        checked.append(" → ".join(chains.name(c) for c in chain))
        if problem:
            problems.append(f"certificate from {issuance.title}: {problem}")
    evidence = {"cacerts": [chains.name(c) for c in certs], "issued_chains": checked}
    if problems:
        return failed(
            "E1: /cacerts does not hold every certificate needed to build the chains: "
            + "; ".join(problems),
            **evidence,
        )
    scope = "issued certificates" if checked else "its own certificates (nothing was issued)"
    return passed(f"/cacerts completes the chains of {scope} up to a root", **evidence)


def response_encoding(session: Session) -> Outcome:
    checks: list[tuple[str, str, Exchange]] = []
    fetched = session.cacerts()
    if fetched.exchange.status == 200:
        checks.append(("cacerts", PKCS7_MIME, fetched.exchange))
    attrs = session.csrattrs()
    if attrs.exchange.status == 200:
        checks.append(("csrattrs", CSRATTRS, attrs.exchange))
    for issuance in (session.enroll("rsa"), session.enroll("ecdsa"), session.reenroll("ecdsa")):
        if issuance.exchange is not None and issuance.exchange.status == 200:
            checks.append((issuance.title, PKCS7_CERTS_ONLY, issuance.exchange))
    keygen = session.serverkeygen()
    if keygen.exchange is not None and keygen.exchange.status == 200:
        checks.append(("serverkeygen", MULTIPART_MIXED, keygen.exchange))
    if not checks:
        return failed("E1: no successful response to check (even /cacerts failed)")
    problems: list[str] = []
    notes: list[str] = []
    evidence: dict[str, object] = {}
    for title, expected, exchange in checks:
        found, noted = encoding_problems(exchange, expected, requirement="E1/E2/E4/E5")
        problems += found
        notes += noted
        evidence[title] = exchange.content_type
    if problems:
        return failed("; ".join(problems), checked=evidence, notes=notes)
    if notes:
        return warned("; ".join(notes), checked=evidence)
    return passed(
        f"{len(checks)} responses have the right media type and a base64 body", checked=evidence
    )


def csrattrs(session: Session) -> Outcome:
    fetched = session.csrattrs()
    exchange = fetched.exchange
    evidence: dict[str, object] = {"response": exchange.evidence()}
    if exchange.status in (204, 404):
        return passed(f"no CSR attributes ({exchange.status}, allowed by E4)", **evidence)
    if exchange.status != 200:
        return failed(f"E4: /csrattrs must answer 200, 204 or 404: {describe_refusal(exchange)}")
    problems, notes = encoding_problems(exchange, CSRATTRS, requirement="E4")
    if fetched.problem or problems:
        return failed(
            "E4: " + "; ".join([*problems, fetched.problem or ""]).strip("; "), **evidence
        )
    assert fetched.attrs is not None
    evidence["attributes"] = fetched.attrs.describe()
    if fetched.warnings or notes:
        return warned(
            "E4: /csrattrs parsed with remarks: " + "; ".join([*fetched.warnings, *notes]),
            **evidence,
        )
    return passed("CsrAttrs parse: " + "; ".join(fetched.attrs.describe()), **evidence)


def serverkeygen_key(session: Session) -> Outcome:
    issuance = session.serverkeygen()
    exchange = issuance.exchange
    evidence: dict[str, object] = {"issuance": issuance.evidence()}
    if exchange is not None and exchange.status in NOT_OFFERED_STATUSES:
        return not_applicable(f"/serverkeygen is not offered ({exchange.status})", **evidence)
    if issuance.deferred:
        return skipped(f"deferred for approval (S4), no key to check: {issuance.problem}")
    result = issuance.keygen
    if result is None:
        return failed(f"E5, S8: /serverkeygen failed: {issuance.problem}", **evidence)
    if result.encrypted:
        return failed(
            "E5, S8: the private key came back encrypted though the request did not ask for "
            "encryption (no DecryptKeyIdentifier attribute)",
            **evidence,
        )
    if result.private_key is None or issuance.certificate is None:
        return failed(f"E5: {issuance.problem}", **evidence)
    key = describe_public_key(issuance.certificate.public_key())
    evidence["key"] = key.description
    if not key_matches_certificate(result.private_key, issuance.certificate):
        return failed("E5: the returned private key does not match the certificate", **evidence)
    weak = (key.family == "rsa" and key.size < MIN_RSA_BITS) or (
        key.family == "ec" and key.curve not in ALLOWED_CURVES
    )
    remarks = list(result.warnings)
    if weak:
        remarks.append(f"S8: generated key {key.description} is weaker than recommended")
    if remarks:
        return warned("; ".join(remarks), **evidence)
    return passed(f"returned {key.description} private key matches the certificate", **evidence)


def unknown_label(session: Session) -> Outcome:
    label = f"{UNKNOWN_LABEL}-{session.token}"
    exchange = session.request("GET", session.path("cacerts", label=label))
    evidence: dict[str, object] = {}  # the exchange itself is in the "exchanges" evidence
    if exchange.status == 404:
        return passed("unknown label answered 404", **evidence)
    if exchange.status is not None and 400 <= exchange.status < 500:
        return warned(f"E7: unknown label answered {exchange.status}, expected 404", **evidence)
    return beyond_rfc7030(
        session,
        f"E7: unknown label must answer 404: {describe_refusal(exchange)}",
        LABEL_BASIS,
        **evidence,
    )


wrong_method = refusal_probe(
    lambda session, _baseline: session.request(
        "GET", session.path("simpleenroll"), identity=session.target.manufacturer
    ),
    requirement="E2, E10",
    what="GET on /simpleenroll",
    preferred=405,
    acceptance_basis=METHOD_BASIS,
)

wrong_content_type = refusal_probe(
    lambda session, baseline: session.enroll_probe(
        session.csr_source(session.spare_key(baseline.kind), "refused"),
        content_type="text/plain",
        settings=session.enroll_settings(),
    ),
    requirement="E2, E16",
    what="a CSR sent as text/plain instead of application/pkcs10",
    preferred=415,
    acceptance_basis=CONTENT_TYPE_BASIS,
)

malformed_base64 = refusal_probe(
    lambda session, _baseline: session.enroll_probe(MALFORMED_BASE64),
    requirement="E15, T5",
    what="a body that is not base64",
    preferred=400,
)


def corrupt_signature(csr: x509.CertificateSigningRequest) -> bytes:
    """The CSR's DER with the last byte of its signature flipped (the structure stays valid)."""
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    corrupted = x509.load_der_x509_csr(bytes(der))
    if corrupted.is_signature_valid:  # pragma: no cover - guards the probe itself
        raise AssertionError("flipping a signature byte left the signature valid")
    return bytes(der)


bad_csr_signature = refusal_probe(
    lambda session, baseline: session.enroll_probe(
        session.csr_source(
            session.spare_key(baseline.kind),
            "bad-signature",
            encode=lambda csr: encode_base64_body(corrupt_signature(csr)),
        ),
        settings=session.enroll_settings(),
    ),
    requirement="E2",
    what="a CSR whose signature does not verify",
    preferred=400,
)


def oversized_body(session: Session) -> Outcome:
    baseline = baseline_or_skip(session)
    if isinstance(baseline, Outcome):
        return baseline
    line = b"A" * 76 + b"\n"
    body = line * (OVERSIZED_REQUEST_BYTES // len(line) + 1)
    exchange = session.enroll_probe(body)
    evidence: dict[str, object] = {}  # the exchange itself is in the "exchanges" evidence
    if exchange.status == 413:
        return passed(f"{len(body)}-byte body refused with 413", **evidence)
    if exchange.status is not None and 400 <= exchange.status < 500 and lenient(session):
        return passed(
            f"{len(body)}-byte body refused with {exchange.status} {exchange.reason} "
            "(413 would be the precise answer)",
            **evidence,
        )
    if exchange.status is None:
        return beyond_rfc7030(
            session,
            f"T5: a {len(body)}-byte body must be refused with 413; the server gave no HTTP "
            f"answer ({exchange.error})",
            SIZE_BASIS,
            **evidence,
        )
    return beyond_rfc7030(
        session,
        f"T5: a {len(body)}-byte body must be refused with 413, got {exchange.status} "
        f"{exchange.reason}",
        SIZE_BASIS,
        **evidence,
    )


def reenroll_changed_subject(session: Session) -> Outcome:
    baseline = baseline_or_skip(session)
    if isinstance(baseline, Outcome):
        return baseline
    # A certificate of our own, so the order of refusal and control cannot matter to others.
    fresh = session.issue(baseline.kind, role=f"resubject-{baseline.kind}")
    if not fresh.ok:
        return skipped(f"could not obtain a certificate to re-enroll with: {fresh.problem}")
    changed = session.renew(fresh, change_subject=True)
    assert changed.exchange is not None or changed.problem
    if changed.exchange is None:
        return skipped(f"could not send the re-enrollment: {changed.problem}")
    control = session.renew(fresh)
    evidence = {"changed": changed.evidence(), "control": control.evidence()}
    if changed.ok:
        return beyond_rfc7030(
            session,
            "E3: re-enrollment with a changed subject and SAN was accepted; the CSR's Subject "
            "and SubjectAltName must equal the certificate being renewed",
            RESUBJECT_BASIS,
            **evidence,
        )
    outcome = judge_refusal(
        changed.exchange,
        requirement="E3",
        what="re-enrollment with a changed subject",
        session=session,
    )
    if outcome.status is not Status.PASS:
        return outcome
    if not control.ok:
        return skipped(
            "the changed subject was refused, but so was the same certificate's re-enrollment "
            f"with an unchanged subject ({control.problem}), so the refusal proves nothing",
            **evidence,
        )
    return passed(
        f"changed subject refused ({changed.exchange.status}); unchanged subject accepted",
        **evidence,
    )


def _linking_not_offered(
    session: Session, *, offered: bool, unknown: str, absent: str
) -> Outcome | None:
    """Why a PoP-linking case cannot judge: skip when /csrattrs got no answer (``unknown``:
    whether the server links cannot be told), n/a when the server does not ask for that linking
    (``absent`` says which); None when it does."""
    attrs = session.csrattrs()
    if attrs.exchange.status is None:
        return skipped(f"cannot tell whether the server {unknown}: {attrs.exchange.describe()}")
    if not offered:
        return not_applicable(absent, response=attrs.exchange.evidence())
    return None


def pop_wrong_challenge(session: Session) -> Outcome:
    unjudged = _linking_not_offered(
        session,
        offered=session.requires_pop,
        unknown="requires PoP linking",
        absent="the server does not ask for proof-of-possession linking (no challengePassword "
        "in /csrattrs)",
    )
    if unjudged is not None:
        return unjudged
    baseline = baseline_or_skip(session)
    if isinstance(baseline, Outcome):
        return baseline

    def wrong_challenge(sock: ssl.SSLSocket) -> str:
        binding = tls_unique_for(sock)
        return challenge_password_for(secrets.token_bytes(len(binding) if binding else 12))

    return _mislinked_csr_refused(
        session,
        session.csr_source(
            session.spare_key(baseline.kind), "pop-wrong", challenge=wrong_challenge
        ),
        TLS12_ONLY,
        what="a CSR whose challengePassword is not this session's tls-unique",
        accepted=f"the linked CSR of {baseline.title} was accepted",
        evidence={"control": baseline.evidence()},
    )


def _mislinked_csr_refused(
    session: Session,
    body: BodySource,
    settings: TlsSettings,
    *,
    what: str,
    accepted: str,
    evidence: dict[str, object] | None = None,
) -> Outcome:
    """E14: a CSR whose challengePassword does not link it to its own TLS connection must be
    refused; a refusal passes next to ``accepted``, the linked CSR the server took."""
    refusal = judge_refusal(
        session.enroll_probe(body, settings=settings), requirement="E14", what=what, session=session
    )
    return refused_beside_control(refusal, accepted, **(evidence or {}))


def pop_tls13_exporter(session: Session) -> Outcome:
    """E14 under TLS 1.3 (estkit extension, docs/tls13-pop.md): a server that offers
    tls-exporter linking takes a CSR linked to its connection's tls-exporter and refuses one
    carrying the tls-exporter of another connection (a replay)."""
    unjudged = _linking_not_offered(
        session,
        offered=session.offers_tls_exporter,
        unknown="offers tls-exporter linking",
        absent="the server does not offer proof-of-possession linking under TLS 1.3 (no "
        f"estkit tls-exporter OID {TLS_EXPORTER_POP_OID} in /csrattrs): an extension RFC "
        "7030 does not define; its clients link with tls-unique under TLS 1.2 "
        "(pop-wrong-challenge)",
    )
    if unjudged is not None:
        return unjudged
    support = exporter_support()
    if not support.available:
        return skipped(f"this Python cannot read tls-exporter values: {support.reason}")
    baseline = baseline_or_skip(session)
    if isinstance(baseline, Outcome):
        return baseline
    linked_to: dict[str, bytes] = {}

    def linked_challenge(sock: ssl.SSLSocket) -> str | None:
        exporter = tls_exporter_for(sock)
        if exporter is None:
            return None
        linked_to["exporter"] = exporter
        return exporter_challenge_password_for(exporter)

    linked = session.enroll_probe(
        session.csr_source(generate_private_key("p256"), "pop-tls13", challenge=linked_challenge),
        settings=TLS13_ONLY,
    )
    if linked.status is None:
        return skipped(
            f"no TLS 1.3 enrollment possible, so tls-exporter linking cannot be judged: "
            f"{linked.describe()}"
        )
    if "exporter" not in linked_to:
        return skipped("this Python could not read the tls-exporter value of the connection")
    if linked.status not in (200, 202):
        return failed(
            "E14: the server offers tls-exporter linking under TLS 1.3 but refused a CSR linked "
            f"to this very connection's tls-exporter: {describe_refusal(linked)}",
            control=baseline.evidence(),
        )
    replayed = exporter_challenge_password_for(linked_to["exporter"])
    return _mislinked_csr_refused(
        session,
        session.csr_source(
            session.spare_key("ecdsa"), "pop-tls13-replay", challenge=lambda _sock: replayed
        ),
        TLS13_ONLY,
        what="a CSR carrying the tls-exporter value of another TLS 1.3 connection (a replay)",
        accepted=f"the CSR linked to its own TLS 1.3 connection was accepted ({linked.status})",
    )


def retry_after(session: Session) -> Outcome:
    tried = session.enroll("ecdsa")  # makes sure at least one enrollment was tried
    if not session.deferrals:
        if tried.ok:
            return not_applicable("the server issued at once: no 202 answer to check")
        return not_applicable(f"no 202 answer seen ({tried.title}: {tried.problem})")
    problems: list[str] = []
    notes: list[str] = []
    for exchange in session.deferrals:
        value = exchange.header("retry-after")
        if parse_retry_after(value, session.now()) is None:
            found = f"{exchange.describe()} with Retry-After {value!r}"
            # 202 must say when to come back (E8, S4); for 503 it is only good manners.
            (problems if exchange.status == 202 else notes).append(found)
    evidence = {"deferrals": [ex.evidence() for ex in session.deferrals]}
    if problems:
        return failed(
            "E8, S4: a 202 answer must carry a Retry-After (delta-seconds or HTTP-date): "
            + "; ".join(problems),
            **evidence,
        )
    if notes:
        return warned("E8: 503 without a usable Retry-After: " + "; ".join(notes), **evidence)
    after = f"; {tried.title} was issued after waiting" if tried.ok else ""
    return passed(
        f"{len(session.deferrals)} deferred answer(s), each with a valid Retry-After{after}",
        **evidence,
    )
