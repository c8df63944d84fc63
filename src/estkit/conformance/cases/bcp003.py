"""BCP-003-03 EST server cases (IDs S… and C… of docs/requirements.md)."""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509

from estkit.conformance import chains
from estkit.conformance.cases._common import (
    ERROR_CODES_BASIS,
    baseline_or_skip,
    beyond_rfc7030,
)
from estkit.conformance.model import Outcome, failed, passed, skipped, warned
from estkit.conformance.session import (
    CLIENT_AUTH,
    NOT_OFFERED_STATUSES,
    SERVER_AUTH,
    Session,
    describe_refusal,
    has_eku,
)
from estkit.conformance.transport import Exchange
from estkit.protocol import common_name, describe_csr, dns_names, public_keys_equal

CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future a notBefore may be before clients with a slightly slow clock choke."""

MAX_SANE_VALIDITY = timedelta(days=825)
"""Longest leaf validity web PKI ever allowed (CA/B Forum until 2020); longer draws a warning."""


AUTHORIZATION_BASIS = (
    "RFC 7030 §3.7: the decision to issue a certificate to a client is always controlled by "
    "local CA policy; BCP-003-03 S3 makes client-certificate authentication a MUST"
)
"""Why issuing to an unauthenticated or rogue client is a warning under the rfc7030 profile."""

ISSUED_NAMES_BASIS = (
    "RFC 7030 §3.7 leaves issuing to local CA policy and sets no constraints on it (the CA may "
    "change or drop the names the CSR asked for, and sets the validity); BCP-003-03 C9 is what "
    "wants them to match"
)
"""Why names and validity that differ from the CSR are a warning under the rfc7030 profile."""

EKU_NAMES = {SERVER_AUTH: "serverAuth", CLIENT_AUTH: "clientAuth"}


def _eku_names(cert: x509.Certificate) -> list[str] | None:
    usages = chains.extended_key_usages(cert)
    if usages is None:
        return None
    return [EKU_NAMES.get(oid, oid.dotted_string) for oid in usages]


def tls_refusal(exchange: Exchange) -> str | None:
    """How the TLS layer refused the request, or None if it did not."""
    if exchange.status is not None:
        return None
    if exchange.error_kind == "tls":
        return f"refused at the TLS layer ({exchange.error})"
    if exchange.error_kind == "http" and exchange.tls_version == "TLSv1.3":
        return (
            "the connection was closed without an HTTP answer right after the TLS 1.3 handshake "
            "(how a TLS 1.3 server refuses a client certificate)"
        )
    return None


def no_http_auth_challenge(session: Session) -> Outcome:
    probes = [
        session.enroll_probe(
            session.csr_body(session.spare_key("ecdsa"), "no-auth")[1],
            anonymous=True,
        ),
        session.request("GET", session.path("cacerts"), answer_challenge=False),
    ]
    challenges = [ex for ex in (*probes, *session.challenges) if ex.header("www-authenticate")]
    evidence: dict[str, object] = {}  # the probes are in the "exchanges" evidence
    if not challenges and all(ex.status is None for ex in probes):
        return skipped(f"no HTTP answer to inspect: {probes[0].describe()}", **evidence)
    if challenges:
        first = challenges[0]
        return failed(
            f"S5: the server requested HTTP authentication ({first.describe()}, "
            f"WWW-Authenticate: {' | '.join(first.headers_named('www-authenticate'))}); "
            "an NMOS EST server must "
            "authenticate clients by TLS certificate only",
            challenges=[ex.evidence() for ex in challenges],
            **evidence,
        )
    return passed("no 401 / WWW-Authenticate challenge seen", **evidence)


def _unauthorised_verdict(
    session: Session, exchange: Exchange, *, issued: str, who: str, **evidence: object
) -> Outcome:
    """S3: a client that did not authenticate properly (``who``) must get no certificate.

    ``issued`` is the finding when it got one anyway; a TLS refusal, a 4xx or a deferral for
    manual approval (S4) pass.
    """
    if exchange.status == 200:
        return beyond_rfc7030(session, issued, AUTHORIZATION_BASIS, **evidence)
    if exchange.status == 202:
        return passed(f"{who}: deferred for manual approval (S4) rather than issued", **evidence)
    if refusal := tls_refusal(exchange):
        return passed(f"{who}: {refusal}", **evidence)
    if exchange.status is not None and 400 <= exchange.status < 500:
        return passed(f"{who}: refused with {exchange.status} {exchange.reason}", **evidence)
    message = f"S3, T5: expected a refusal (4xx) of {who}: {describe_refusal(exchange)}"
    if exchange.status is not None and exchange.status >= 500:
        return beyond_rfc7030(session, message, ERROR_CODES_BASIS, **evidence)
    return failed(message, **evidence)


def no_cert_without_client_auth(session: Session) -> Outcome:
    baseline = baseline_or_skip(session)
    if isinstance(baseline, Outcome):
        return baseline
    exchange = session.enroll_probe(
        session.csr_source(session.spare_key("ecdsa"), "anonymous"),
        anonymous=True,
        settings=session.refusal_settings(),
    )
    # The exchange itself is in the "exchanges" evidence.
    return _unauthorised_verdict(
        session,
        exchange,
        issued="S3: the server issued a certificate to a client that presented no client "
        "certificate (and no other credentials)",
        who="a client without client authentication",
    )


def rogue_client_refused(session: Session) -> Outcome:
    baseline = baseline_or_skip(session)
    if isinstance(baseline, Outcome):
        return baseline
    rogue, generated = session.rogue()
    exchange = session.enroll_probe(
        session.csr_source(session.spare_key("ecdsa"), "rogue"),
        client=rogue,
        settings=session.refusal_settings(),
    )
    origin = "generated (same names, new keys)" if generated else "given as the rogue certificate"
    return _unauthorised_verdict(
        session,
        exchange,
        issued="S3: the server issued a certificate to a client presenting a rogue manufacturer "
        f"certificate ({origin}); it must verify the client certificate's signature "
        "against its trusted manufacturer CAs",
        who="the rogue certificate",
        rogue=[chains.summary(c) for c in rogue.chain],
        rogue_origin=origin,
    )


def eku_server_client(session: Session) -> Outcome:
    issued = session.issued()
    if not issued:
        return skipped("no certificate was issued (see enroll-rsa / enroll-ecdsa)")
    problems: list[str] = []
    for title, cert in issued:
        missing = [
            label
            for label, oid in (("serverAuth", SERVER_AUTH), ("clientAuth", CLIENT_AUTH))
            if not has_eku(cert, oid)
        ]
        if missing:
            problems.append(f"{title} lacks {' and '.join(missing)}")
    evidence = {"certificates": {title: _eku_names(cert) for title, cert in issued}}
    if problems:
        return failed(
            "S7: issued certificates must carry EKU serverAuth and clientAuth: "
            + "; ".join(problems),
            **evidence,
        )
    return passed(f"{len(issued)} issued certificate(s) carry serverAuth + clientAuth", **evidence)


def rsa_and_ecdsa(session: Session) -> Outcome:
    rsa, ecdsa = session.enroll("rsa"), session.enroll("ecdsa")
    evidence = {"rsa": rsa.evidence(), "ecdsa": ecdsa.evidence()}
    missing = [i.title + f": {i.problem}" for i in (rsa, ecdsa) if not i.ok and not i.deferred]
    deferred = [i.title for i in (rsa, ecdsa) if i.deferred]
    if deferred and not missing:
        return skipped(f"cannot tell: {', '.join(deferred)} deferred for approval (S4)", **evidence)
    if missing:
        return failed(
            "S6: the server must issue certificates for both RSA and ECDSA keys; not issued: "
            + "; ".join(missing),
            **evidence,
        )
    return passed("certificates issued for both an RSA and an ECDSA key", **evidence)


def _match_problems(
    title: str, cert: x509.Certificate, csr: x509.CertificateSigningRequest, now: datetime
) -> tuple[list[str], list[str]]:
    """(problems, notes) of one issued certificate against the CSR it answered."""
    problems: list[str] = []
    notes: list[str] = []
    info = describe_csr(csr)
    if not public_keys_equal(cert.public_key(), csr.public_key()):
        problems.append(f"E2: {title}: the certificate's key is not the CSR's")
    cert_cn, cert_dns = common_name(cert), dns_names(cert)
    if info.common_name and cert_cn != info.common_name:
        problems.append(f"C9: {title}: CN {cert_cn!r} differs from the CSR's {info.common_name!r}")
    missing = [name for name in info.dns_names if name not in cert_dns]
    if missing:
        problems.append(f"C9: {title}: SAN lacks the requested {', '.join(missing)}")
    if cert_cn and cert_cn not in cert_dns:
        notes.append(f"T4: {title}: SAN does not contain the CN {cert_cn}")
    if cert.version is not x509.Version.v3:
        problems.append(f"T4: {title}: certificate is {cert.version.name}, not X.509 v3")
    if cert.not_valid_before_utc > now + CLOCK_SKEW:
        problems.append(f"C9: {title}: notBefore {cert.not_valid_before_utc} is in the future")
    if cert.not_valid_after_utc <= now:
        problems.append(f"C9: {title}: already expired ({cert.not_valid_after_utc})")
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    if lifetime > MAX_SANE_VALIDITY:
        notes.append(f"C9: {title}: validity of {lifetime.days} days is unusually long")
    return problems, notes


def issued_matches_csr(session: Session) -> Outcome:
    operations = (
        session.enroll("rsa"),
        session.enroll("ecdsa"),
        session.reenroll("rsa"),
        session.reenroll("ecdsa"),
    )
    checked = [
        (op.title, op.certificate, op.csr)
        for op in operations
        if op.certificate is not None and op.csr is not None
    ]
    if not checked:
        return skipped("no certificate was issued (see enroll-rsa / enroll-ecdsa)")
    problems: list[str] = []
    notes: list[str] = []
    for title, cert, csr in checked:
        found, noted = _match_problems(title, cert, csr, session.now())
        problems += found
        notes += noted
    evidence = {"certificates": {title: chains.summary(cert) for title, cert, _csr in checked}}
    hard = [problem for problem in problems if problem.startswith("E2:")]
    if hard:  # a certificate for another key answers no CSR: RFC 7030 §4.2.3 under any profile
        return failed("; ".join(problems), **evidence)
    if problems:
        return beyond_rfc7030(session, "; ".join(problems), ISSUED_NAMES_BASIS, **evidence)
    if notes:
        return warned("; ".join(notes), **evidence)
    return passed(
        f"{len(checked)} certificate(s) match their CSR's key, CN and SAN with a sane validity",
        **evidence,
    )


def serverkeygen_offered(session: Session) -> Outcome:
    issuance = session.serverkeygen()
    exchange = issuance.exchange
    evidence = {"issuance": issuance.evidence()}
    if exchange is None:
        return failed(f"S1: /serverkeygen was not reached: {issuance.problem}", **evidence)
    if exchange.status in NOT_OFFERED_STATUSES:
        return warned(f"S1: /serverkeygen SHOULD be offered; got {exchange.status}", **evidence)
    if exchange.status == 200:
        return passed("/serverkeygen is offered", **evidence)
    if issuance.deferred:
        return passed("/serverkeygen is offered (the request was deferred)", **evidence)
    return failed(
        f"S1, S8: /serverkeygen refused the manufacturer-authenticated request: "
        f"{describe_refusal(exchange)}",
        **evidence,
    )
