"""BCP-003-01 TLS cases (requirement IDs T… and S2 of docs/requirements.md).

Every probe presents the manufacturer certificate, so a server that demands a client certificate
for every handshake is judged on its suites and versions, not on the missing certificate.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from estkit.conformance import chains
from estkit.conformance.cases._common import lenient
from estkit.conformance.model import Outcome, failed, not_applicable, passed, skipped, warned
from estkit.conformance.session import Session
from estkit.conformance.suites import (
    GROUP_DESCRIPTIONS,
    KNOWN_3DES_SUITES,
    TLS12_SUITES,
    TLS13_SUITES,
    ListedSuite,
    NonListedGroup,
)
from estkit.conformance.tlsprobe import (
    Handshake,
    accepted_among,
    handshake,
    plain_http_request,
    probe_tls12_suites,
    probe_tls13_suite,
)
from estkit.conformance.transport import VERIFIED_TLS
from estkit.protocol import common_name, dns_names

VERSION_NAMES = {
    ssl.TLSVersion.TLSv1: "TLS 1.0",
    ssl.TLSVersion.TLSv1_1: "TLS 1.1",
    ssl.TLSVersion.TLSv1_2: "TLS 1.2",
    ssl.TLSVersion.TLSv1_3: "TLS 1.3",
}

TLS_VERSION_BASIS = "RFC 7030 §3.3 requires TLS 1.1 or later, not TLS 1.2 in particular"
"""Why TLS 1.2 missing or TLS 1.1 accepted is a warning under the rfc7030 profile (BCP-003-01
T1 makes both failures)."""


def _version(session: Session, version: ssl.TLSVersion) -> Handshake:
    return session.version_probe(version)


def _unreachable(result: Handshake, requirement: str) -> Outcome:
    return failed(
        f"{requirement}: cannot reach the server: {result.detail}", probe=result.evidence()
    )


def _local_skip(result: Handshake, what: str) -> Outcome:
    return skipped(
        f"the local OpenSSL ({ssl.OPENSSL_VERSION}) cannot offer {what}: {result.detail}",
        probe=result.evidence(),
    )


def _unjudged(result: Handshake, offered: str, requirement: str) -> Outcome | None:
    """A handshake that says nothing about the server: skipped when the local side could not
    offer ``offered``, failed when the server could not be reached; None when it answered."""
    if result.outcome == "local":
        return _local_skip(result, offered)
    if result.outcome == "unreachable":
        return _unreachable(result, requirement)
    return None


def _supported(
    session: Session, version: ssl.TLSVersion, refused: Callable[[Handshake], Outcome]
) -> Outcome:
    """T1: a handshake offering only ``version`` passes when accepted; ``refused`` judges a
    refusal (a SHALL fails, a SHOULD warns)."""
    name = VERSION_NAMES[version]
    result = _version(session, version)
    if result.accepted:
        return passed(f"{name} handshake with {result.cipher}", probe=result.evidence())
    unjudged = _unjudged(result, name, "T1")
    if unjudged is not None:
        return unjudged
    return refused(result)


def tls12(session: Session) -> Outcome:
    def refused(result: Handshake) -> Outcome:
        message = f"T1, E11: TLS 1.2 SHALL be supported; the handshake was refused: {result.detail}"
        if lenient(session) and _version(session, ssl.TLSVersion.TLSv1_3).accepted:
            return warned(
                f"{message} (a warning under the rfc7030 profile: {TLS_VERSION_BASIS}; TLS 1.3 "
                "was accepted, but RFC 7030 §3.5 proof-of-possession linking needs TLS 1.2)",
                probe=result.evidence(),
            )
        return failed(message, probe=result.evidence())

    return _supported(session, ssl.TLSVersion.TLSv1_2, refused)


def tls13(session: Session) -> Outcome:
    return _supported(
        session,
        ssl.TLSVersion.TLSv1_3,
        lambda result: warned(
            f"T1: TLS 1.3 SHOULD be supported: {result.detail}", probe=result.evidence()
        ),
    )


def legacy_refused(version: ssl.TLSVersion) -> Callable[[Session], Outcome]:
    name = VERSION_NAMES[version]

    def run(session: Session) -> Outcome:
        result = _version(session, version)
        if result.accepted:
            message = (
                f"T1, E11: the server accepted {name} ({result.cipher}); TLS 1.0, 1.1 and SSL "
                "SHALL NOT be used"
            )
            if version is ssl.TLSVersion.TLSv1_1 and lenient(session):
                return warned(
                    f"{message} (a warning under the rfc7030 profile: {TLS_VERSION_BASIS}; "
                    "RFC 8996 deprecates it)",
                    probe=result.evidence(),
                )
            return failed(message, probe=result.evidence())
        unjudged = _unjudged(result, name, "T1")
        if unjudged is not None:
            return unjudged
        return passed(f"{name} refused: {result.detail}", probe=result.evidence())

    return run


@dataclass(frozen=True)
class _SuiteProbes:
    """How the listed-suite cases of one TLS version probe a suite and cite the requirement."""

    name: str
    requirement: str
    suites: tuple[ListedSuite, ...]
    probe: Callable[[Session, str], Handshake]
    offer: Callable[[str], str]
    """What the local side could not offer, for a skip message, given the suite's IANA name."""
    version: ssl.TLSVersion | None = None
    """The version to check first, when the server need not speak it (n/a without it)."""
    whole_probe_local: bool = False
    """A local failure means the probe itself cannot run (the openssl program), not that one
    suite is missing locally: the case is skipped rather than the suite noted."""


def _tls12_probe(session: Session, suite: str) -> Handshake:
    return session.memoised(
        f"tls12-suite-{suite}",
        lambda: probe_tls12_suites(
            session.factory, session.target, [suite], identity=session.target.manufacturer
        ),
    )


def _tls13_probe(session: Session, suite: str) -> Handshake:
    return session.memoised(
        f"tls13-suite-{suite}",
        lambda: probe_tls13_suite(session.target.openssl, session.target, suite),
    )


TLS12_PROBES = _SuiteProbes(
    name="TLS 1.2",
    requirement="T3",
    suites=TLS12_SUITES,
    probe=_tls12_probe,
    offer=lambda suite: suite,
)
# TLS 1.3 is a SHOULD (T1): without it its suites are n/a. Python's ssl cannot pick TLS 1.3
# suites, so each probe is an ``openssl s_client`` run.
TLS13_PROBES = _SuiteProbes(
    name="TLS 1.3",
    requirement="T2",
    suites=TLS13_SUITES,
    probe=_tls13_probe,
    offer=lambda suite: f"a TLS 1.3 handshake with only {suite}",
    version=ssl.TLSVersion.TLSv1_3,
    whole_probe_local=True,
)


def _version_unsupported(session: Session, probes: _SuiteProbes) -> Outcome | None:
    if probes.version is None or _version(session, probes.version).outcome != "refused":
        return None
    case = probes.name.replace("TLS ", "tls").replace(".", "")  # "TLS 1.3" -> the tls13 case
    return not_applicable(f"the server does not offer {probes.name} (see {case})")


def mandatory_suite(probes: _SuiteProbes) -> Callable[[Session], Outcome]:
    """The version's SHALL suite must be accepted."""

    def run(session: Session) -> Outcome:
        absent = _version_unsupported(session, probes)
        if absent:
            return absent
        suite = next(s for s in probes.suites if s.strength == "SHALL")
        result = probes.probe(session, suite.openssl_name)
        if result.accepted:
            return passed(f"{suite.iana_name} accepted", probe=result.evidence())
        unjudged = _unjudged(result, probes.offer(suite.iana_name), probes.requirement)
        if unjudged is not None:
            return unjudged
        under = f" under {probes.name}" if probes.version is not None else ""
        return failed(
            f"{probes.requirement}: {suite.iana_name} SHALL be supported{under}; refused: "
            f"{result.detail}",
            probe=result.evidence(),
        )

    return run


def listed_suites(probes: _SuiteProbes) -> Callable[[Session], Outcome]:
    """The version's recommended suites should be accepted (a warning when not)."""

    def run(session: Session) -> Outcome:
        absent_version = _version_unsupported(session, probes)
        if absent_version:
            return absent_version
        absent: list[str] = []
        unavailable: list[str] = []
        evidence: dict[str, object] = {}
        for suite in probes.suites:
            if suite.strength == "SHALL":
                continue
            result = probes.probe(session, suite.openssl_name)
            evidence[suite.iana_name] = result.evidence()
            if result.outcome == "unreachable" or probes.whole_probe_local:
                unjudged = _unjudged(result, probes.offer(suite.iana_name), probes.requirement)
                if unjudged is not None:
                    return unjudged
            if result.outcome == "local":
                unavailable.append(suite.iana_name)
            elif not result.accepted:
                absent.append(suite.iana_name)
        skipped_note = (
            f"; not offered by the local OpenSSL: {', '.join(unavailable)}" if unavailable else ""
        )
        if absent:
            return warned(
                f"{probes.requirement}: {len(absent)} recommended {probes.name} suite(s) not "
                f"supported: {', '.join(absent)}{skipped_note}",
                probes=evidence,
            )
        return passed(
            f"all recommended {probes.name} suites supported{skipped_note}", probes=evidence
        )

    return run


tls12_mandatory_suite = mandatory_suite(TLS12_PROBES)
tls12_listed_suites = listed_suites(TLS12_PROBES)
tls13_mandatory_suite = mandatory_suite(TLS13_PROBES)
tls13_listed_suites = listed_suites(TLS13_PROBES)


def non_listed_refused(group: NonListedGroup) -> Callable[[Session], Outcome]:
    description = GROUP_DESCRIPTIONS[group]

    def run(session: Session) -> Outcome:
        catalogue = session.catalogue()
        suites = catalogue.groups.get(group, [])
        evidence: dict[str, object] = {"offered": suites, **catalogue.evidence()}
        if group != "other":
            evidence.pop("not_offerable", None)
        if not suites:
            examples = f" (e.g. {', '.join(KNOWN_3DES_SUITES)})" if group == "3des" else ""
            return skipped(
                f"the local OpenSSL ({ssl.OPENSSL_VERSION}) cannot offer any of the {description}"
                f"{examples}: it was built without them, so this probe was not run",
                **evidence,
            )
        accepted, attempts = accepted_among(
            session.factory, session.target, suites, identity=session.target.manufacturer
        )
        evidence["handshakes"] = [attempt.evidence() for attempt in attempts]
        if attempts and attempts[-1].outcome == "unreachable":
            return _unreachable(attempts[-1], "T3")
        if accepted:
            return failed(
                f"T3: the server accepted {description}, which BCP-003-01 does not list: "
                + ", ".join(accepted),
                **evidence,
            )
        not_offerable = ""
        if group == "other" and catalogue.not_offerable:
            not_offerable = (
                f"; {len(catalogue.not_offerable)} PSK/SRP suite(s) could not be offered "
                "(they need a pre-shared key or SRP password)"
            )
        return passed(f"all {len(suites)} offered {description} refused{not_offerable}", **evidence)

    return run


def _key_kind(cert: x509.Certificate | None) -> str | None:
    if cert is None:
        return None
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ecdsa"
    return type(key).__name__


def server_certificate_types(session: Session) -> Outcome:
    probes = session.server_certificates()
    found = {
        kind: result
        for kind, result in probes.items()
        if result.accepted and _key_kind(result.peer_certificate) == kind
    }
    evidence = {kind: result.evidence() for kind, result in probes.items()}
    if len(found) == 2:
        return passed("the server presents both an RSA and an ECDSA certificate", **evidence)
    if found:
        only = next(iter(found)).upper()
        return warned(
            f"T5: servers SHOULD have RSA and ECDSA certificates at once; only {only} seen",
            **evidence,
        )
    return failed("T5, S2: no TLS 1.2 server certificate could be obtained", **evidence)


def _name_problems(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    problems: list[str] = []
    notes: list[str] = []
    who = chains.name(cert)
    cn = common_name(cert)
    names = dns_names(cert)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        san, ips = None, []
    for name in [*names, *([cn] if cn else [])]:
        if "*" in name:
            problems.append(f"{who}: wildcard name {name}")
    if ips:
        problems.append(f"{who}: IP address(es) in SAN: {', '.join(ips)}")
    if cn:
        try:
            ipaddress.ip_address(cn)
        except ValueError:
            pass
        else:
            problems.append(f"{who}: IP address as CN")
    if cert.version != x509.Version.v3:
        problems.append(f"{who}: not an X.509 v3 certificate")
    if san is None:
        notes.append(f"{who}: no SubjectAltName (SHOULD be present)")
    elif cn and cn not in names:
        notes.append(f"{who}: SAN does not contain the CN {cn}")
    return problems, notes


def server_certificate_names(session: Session) -> Outcome:
    certs: list[x509.Certificate] = []
    for result in session.server_certificates().values():
        if result.peer_certificate is not None and not chains.contains(
            certs, result.peer_certificate
        ):
            certs.append(result.peer_certificate)
    default = session.cacerts().exchange.peer_certificate
    if default is not None and not chains.contains(certs, default):
        certs.append(default)
    if not certs:
        return failed("S2: the server presented no certificate to inspect")
    problems: list[str] = []
    notes: list[str] = []
    for cert in certs:
        found, noted = _name_problems(cert)
        problems += found
        notes += noted
    evidence = {"certificates": [chains.summary(c) for c in certs]}
    if problems:
        return failed("T4: " + "; ".join(problems), **evidence)
    if notes:
        return warned("T4: " + "; ".join(notes), **evidence)
    return passed(f"{len(certs)} server certificate(s) without wildcard or IP names", **evidence)


def server_certificate_valid(session: Session) -> Outcome:
    result = handshake(session.factory, session.target, VERIFIED_TLS)
    evidence = {"probe": result.evidence()}
    if result.outcome == "unreachable":
        return _unreachable(result, "S2")
    if not result.accepted:
        return failed(
            "S2: the server's certificate does not verify against the trust anchors given to the "
            "suite"
            f"{'' if session.target.host_is_ip else ' for the name ' + session.target.host}: "
            f"{result.detail}",
            **evidence,
        )
    cert = result.peer_certificate
    assert cert is not None
    evidence["certificate"] = chains.summary(cert)
    problem = chains.time_problem(cert, session.now())
    if problem:
        return failed(f"S2: {problem}", **evidence)
    scope = "" if session.target.host_is_ip else f" for {session.target.host}"
    return passed(
        f"server certificate verifies against the trust anchors given to the suite{scope}",
        **evidence,
    )


def no_plain_http(session: Session) -> Outcome:
    answer = plain_http_request(session.target, session.path("cacerts"))
    evidence = {"answer_start": answer.data[:80].decode("latin-1"), "error": answer.error}
    status = answer.http_status
    if answer.error is not None and not answer.data:
        return skipped(f"could not send a plain HTTP request: {answer.error}", **evidence)
    if status is not None and status < 400:
        return failed(
            f"T5: the port answers plain, unencrypted HTTP ({status}); only HTTPS is allowed",
            **evidence,
        )
    if status is not None:
        return passed(f"plain HTTP refused with {status}", **evidence)
    return passed("plain HTTP gets no HTTP answer (TLS only)", **evidence)
