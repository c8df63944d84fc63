"""Revocation status cases (issue 17 item 5): when the server's certificates name an OCSP
responder (AIA) and a CRL distribution point, do both answer correctly, "good" for a certificate
just issued and "revoked" once it is revoked, with answers a device can believe?

Why the device's own judgement: a node acts on revocation (C16) only through these answers, so a
case passes only on an answer a device would believe: signed by the issuer or by a responder it
delegated to, about this very certificate, fresh, our nonce if one is echoed (the judge is
:mod:`estkit.protocol.revocation`, which :mod:`estkit.client.status` uses too; the suite itself
never imports the client, so its fetching is its own).
Revoking needs the operator (EST has no revocation request): the cases that need a revoked
certificate use the target's ``revoke`` hook and are skipped, saying so, without one. RFC 7030
says nothing about certificate status, so under the rfc7030 profile a wrong answer only warns.
"""

from __future__ import annotations

import contextlib
import secrets
import ssl
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estkit.conformance.cases._common import beyond_rfc7030
from estkit.conformance.model import Outcome, Status, not_applicable, passed, skipped
from estkit.conformance.session import Issuance, Session
from estkit.conformance.target import RevokeError, Target
from estkit.protocol import is_signed_by
from estkit.protocol import revocation as answers

REVOCATION_VISIBLE_SECONDS = 10.0
"""How long after the operator's revocation the responder and the CRL may still say "good".
estkit's server answers "revoked" at once; a CA that re-signs on a schedule gets ten seconds, a
bound a test run can afford (a longer delay fails, with the time in the message)."""

POLL_SECONDS = 0.5
"""Pause between two asks while waiting for a revocation to show."""

STATUS_BASIS = (
    "RFC 7030 does not cover certificate status; OCSP (RFC 6960) and CRLs (RFC 5280) do, and a "
    "node acting on revocation (C16) needs the answers its certificates point at to be right"
)

Urls = Callable[[x509.Certificate], list[str]]


class StatusAsker:
    """Asks the OCSP responders and CRLs a certificate names, as a device would (a fresh nonce,
    bounded answers, one overall deadline per fetch), and judges the answers with
    :mod:`estkit.protocol.revocation`. A URL on the target's port is asked at the target's
    address (the server under test may not be in DNS yet) while TLS still verifies the name the
    URL gives; any other URL is asked where it points."""

    def __init__(self, session: Session, issuer: x509.Certificate) -> None:
        self.target: Target = session.target
        self.issuer = issuer
        anchors = [issuer, *self.target.trust_anchors, *session.cacerts().certificates]
        tls = ssl.create_default_context()
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in anchors)
        tls.load_verify_locations(cadata=pem.decode("ascii"))
        tls.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the issuing CA alone anchors too
        self.http = httpx.Client(verify=tls, timeout=self.target.timeout, trust_env=False)

    def close(self) -> None:
        self.http.close()

    def ocsp(
        self, certificate: x509.Certificate, url: str, now: datetime
    ) -> answers.CertificateStatus:
        nonce = secrets.token_bytes(answers.NONCE_BYTES)
        request = answers.build_request(certificate, self.issuer, nonce)
        body, problem = self._fetch(url, answers.MAX_OCSP_RESPONSE_BYTES, request)
        if problem is not None:
            return _unreachable(certificate, "ocsp", url, f"OCSP {url}: {problem}")
        return answers.interpret_ocsp_response(
            certificate, self.issuer, body, nonce=nonce, now=now, source=url
        )

    def crl(
        self, certificate: x509.Certificate, url: str, now: datetime
    ) -> answers.CertificateStatus:
        body, problem = self._fetch(url, answers.MAX_CRL_BYTES)
        if problem is not None:
            return _unreachable(certificate, "crl", url, f"CRL {url}: {problem}")
        return answers.interpret_crl(certificate, self.issuer, body, now=now, source=url)

    def _fetch(
        self, url: str, limit: int, ocsp_request: bytes | None = None
    ) -> tuple[bytes, str | None]:
        """(body, None) for a 200 answer within ``limit`` bytes and the deadline, else
        (b"", what went wrong)."""
        where, headers, extensions = self._route(url)
        if ocsp_request is not None:
            headers["Content-Type"] = answers.OCSP_REQUEST_MEDIA_TYPE
        method = "GET" if ocsp_request is None else "POST"
        request = self.http.build_request(method, where, content=ocsp_request, headers=headers)
        request.extensions.update(extensions)
        deadline = time.monotonic() + self.target.timeout
        try:
            with contextlib.closing(self.http.send(request, stream=True)) as reply:
                if reply.status_code != 200:
                    return b"", f"HTTP {reply.status_code} {reply.reason_phrase}"
                data = bytearray()
                for piece in reply.iter_bytes():
                    data += piece
                    if len(data) > limit or time.monotonic() > deadline:
                        return b"", f"more than {limit} bytes or {self.target.timeout:g} s"
                return bytes(data), None
        except httpx.HTTPError as exc:
            return b"", str(exc) or type(exc).__name__

    def _route(self, url: str) -> tuple[str, dict[str, str], dict[str, Any]]:
        parts = urlsplit(url)
        default_port = 443 if parts.scheme == "https" else 80
        if parts.hostname is None or (parts.port or default_port) != self.target.port:
            return url, {}, {}
        moved = urlunsplit(parts._replace(netloc=self.target.authority))
        extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
        return moved, {"Host": parts.netloc}, extensions


Ask = Callable[[StatusAsker, x509.Certificate, str, datetime], answers.CertificateStatus]


def _unreachable(
    certificate: x509.Certificate, method: Any, url: str, problem: str
) -> answers.CertificateStatus:
    serial = format(certificate.serial_number, "x")
    return answers.CertificateStatus("unknown", serial, method, url, problems=(problem,))


@contextlib.contextmanager
def _asker(session: Session, issuer: x509.Certificate) -> Iterator[StatusAsker]:
    asker = StatusAsker(session, issuer)
    try:
        yield asker
    finally:
        asker.close()


def _issuer(session: Session, issuance: Issuance) -> x509.Certificate | None:
    certificate = issuance.certificate
    assert certificate is not None
    pool = [*issuance.certificates, *session.cacerts().certificates]
    return next((c for c in pool if c != certificate and is_signed_by(certificate, c)), None)


def _fresh(session: Session, urls: Urls) -> tuple[x509.Certificate, x509.Certificate] | Outcome:
    """The certificate of the suite's plain enrollment and its issuer, or why there is none (or
    n/a when it names no URL of the kind ``urls`` reads)."""
    baseline = session.baseline()
    if baseline is None or baseline.certificate is None:
        return skipped("nothing was issued to ask about (see enroll-ecdsa / enroll-rsa)")
    if not urls(baseline.certificate):
        return not_applicable(_NO_URL)
    issuer = _issuer(session, baseline)
    if issuer is None:
        return skipped(
            "the issuer of the enrolled certificate is neither in the reply nor in /cacerts: "
            "its status answers cannot be checked"
        )
    return baseline.certificate, issuer


def _any_url(certificate: x509.Certificate) -> list[str]:
    return [*answers.ocsp_urls(certificate), *answers.crl_urls(certificate)]


_NO_URL = (
    "informational: the issued certificate names no OCSP responder (AIA) and no CRL "
    "distribution point, so a device cannot learn that it was revoked (C16); the OCSP and CRL "
    "cases do not apply"
)


def revocation_pointers(session: Session) -> Outcome:
    """Informational: where the issued certificate says its status can be asked."""
    baseline = session.baseline()
    if baseline is None or baseline.certificate is None:
        return skipped("nothing was issued to look at (see enroll-ecdsa / enroll-rsa)")
    ocsp, crl = answers.ocsp_urls(baseline.certificate), answers.crl_urls(baseline.certificate)
    evidence = {"ocsp": ocsp, "crl": crl}
    if not ocsp and not crl:
        return not_applicable(_NO_URL, **evidence)
    named = [f"OCSP {', '.join(ocsp)}" if ocsp else "no OCSP responder (AIA)"]
    named.append(f"CRL {', '.join(crl)}" if crl else "no CRL distribution point")
    return passed(f"the issued certificate names {' and '.join(named)}", **evidence)


def _judge_fresh(session: Session, method: str, urls: Urls, ask: Ask) -> Outcome:
    fresh = _fresh(session, _any_url)
    if isinstance(fresh, Outcome):
        return fresh
    certificate, issuer = fresh
    where = urls(certificate)
    if not where:
        return not_applicable(f"the issued certificate names no {method} URL")
    with _asker(session, issuer) as asker:
        results = [ask(asker, certificate, url, session.now()) for url in where]
    evidence = {"answers": [result.to_json() for result in results]}
    wrong = [_wrong_for_fresh(method, url, r) for url, r in zip(where, results, strict=True)]
    problems = [problem for problem in wrong if problem is not None]
    if problems:
        return beyond_rfc7030(session, "C16: " + "; ".join(problems), STATUS_BASIS, **evidence)
    return passed(
        f"{method} says good for the certificate just issued (serial {results[0].serial}), in "
        f"an answer signed by its issuer ({', '.join(where)})",
        **evidence,
    )


def _wrong_for_fresh(method: str, url: str, result: answers.CertificateStatus) -> str | None:
    if result.status == "good":
        return None
    if result.status == "revoked":
        return f"{method} {url} says the certificate issued moments ago is revoked"
    return f"no believable {method} answer for a certificate just issued: " + "; ".join(
        result.problems
    )


def ocsp_good(session: Session) -> Outcome:
    """Each OCSP responder the certificate names says "good" for it, believably."""
    return _judge_fresh(session, "OCSP", answers.ocsp_urls, StatusAsker.ocsp)


def crl_good(session: Session) -> Outcome:
    """Each CRL the certificate names is signed by its issuer, fresh, and does not list it."""
    return _judge_fresh(session, "CRL", answers.crl_urls, StatusAsker.crl)


# -- after a revocation (needs the operator) ----------------------------------------------------


def _revoked(session: Session) -> tuple[x509.Certificate, x509.Certificate, float] | Outcome:
    """A certificate enrolled for this purpose and revoked through the target's hook (once per
    run): (certificate, issuer, monotonic time of the revocation), or why there is none."""

    def revoke_one() -> tuple[x509.Certificate, x509.Certificate, float] | Outcome:
        fresh = _fresh(session, _any_url)
        if isinstance(fresh, Outcome) and fresh.status is not Status.SKIP:
            return fresh  # n/a: nothing to ask
        revoke = session.target.revoke
        if revoke is None:
            return skipped(
                "revoking a certificate is an operator step (EST has no revocation request) and "
                "no way to revoke at this server was given: the answers after a revocation "
                "were not checked"
            )
        issuance = session.issue("ecdsa", role="revoked")
        if issuance.certificate is None:
            return skipped(f"no certificate to revoke: {issuance.title} failed: {issuance.problem}")
        issuer = _issuer(session, issuance)
        if issuer is None:
            return skipped("the issuer of the certificate to revoke is not known")
        if not answers.ocsp_urls(issuance.certificate) and not answers.crl_urls(
            issuance.certificate
        ):
            return not_applicable("the issued certificate names no OCSP responder and no CRL")
        try:
            revoke(issuance.certificate)
        except RevokeError as exc:
            return skipped(f"the certificate could not be revoked: {exc}")
        return issuance.certificate, issuer, time.monotonic()

    return session.memoised("revoked-certificate", revoke_one)


def _judge_revoked(session: Session, method: str, urls: Urls, ask: Ask) -> Outcome:
    revoked = _revoked(session)
    if isinstance(revoked, Outcome):
        return revoked
    certificate, issuer, revoked_at = revoked
    where = urls(certificate)
    if not where:
        return not_applicable(f"the issued certificate names no {method} URL")
    problems: list[str] = []
    answers: list[dict[str, Any]] = []
    with _asker(session, issuer) as asker:
        for url in where:
            result = ask(asker, certificate, url, session.now())
            while result.status == "good" and _elapsed(revoked_at) < REVOCATION_VISIBLE_SECONDS:
                time.sleep(POLL_SECONDS)
                result = ask(asker, certificate, url, session.now())
            answers.append(result.to_json())
            if result.status == "good":
                problems.append(
                    f"{method} {url} still says good {_elapsed(revoked_at):.0f} s after the "
                    f"certificate (serial {result.serial}) was revoked"
                )
            elif result.status == "unknown":
                why = "; ".join(result.problems)
                problems.append(f"no believable {method} answer for a revoked certificate: {why}")
    if problems:
        message = "C16: " + "; ".join(problems)
        return beyond_rfc7030(session, message, STATUS_BASIS, answers=answers)
    return passed(
        f"{method} says revoked (reason {answers[0]['reason']}) within "
        f"{_elapsed(revoked_at):.1f} s of the revocation, in an answer signed by the issuer",
        answers=answers,
    )


def _elapsed(since: float) -> float:
    return time.monotonic() - since


def ocsp_revoked(session: Session) -> Outcome:
    """Each OCSP responder says "revoked", believably, once the operator revoked a certificate."""
    return _judge_revoked(session, "OCSP", answers.ocsp_urls, StatusAsker.ocsp)


def crl_revoked(session: Session) -> Outcome:
    """Each CRL lists a certificate the operator revoked, soon after."""
    return _judge_revoked(session, "CRL", answers.crl_urls, StatusAsker.crl)
