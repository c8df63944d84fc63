"""Small judgements several cases share: is this answer a refusal, is this body well encoded?"""

from __future__ import annotations

from estkit.conformance.model import Outcome, failed, passed, skipped
from estkit.conformance.session import Issuance, Session
from estkit.conformance.transport import Exchange
from estkit.protocol import EstProtocolError, decode_body, parse_media_type


def baseline_or_skip(session: Session) -> tuple[Issuance | None, Outcome | None]:
    """A refusal proves something only if the same client's correct request is accepted."""
    baseline = session.baseline()
    if baseline is None:
        problem = session.enroll("ecdsa").problem or session.enroll("rsa").problem
        return None, skipped(
            "cannot judge a refusal: a correct enrollment from the same client failed too "
            f"(see enroll-rsa / enroll-ecdsa: {problem})"
        )
    return baseline, None


def judge_refusal(
    exchange: Exchange,
    *,
    requirement: str,
    what: str,
    preferred: frozenset[int] = frozenset(),
) -> Outcome:
    """Pass on a 4xx (noting a non-preferred one), fail on 2xx, 5xx or no answer."""
    evidence: dict[str, object] = {}  # the exchange itself is in the "exchanges" evidence
    status = exchange.status
    if status is None:
        return failed(
            f"{requirement}: {what}: expected a 4xx refusal, got no HTTP answer ({exchange.error})",
            **evidence,
        )
    if 200 <= status < 300:
        return failed(
            f"{requirement}: {what} was accepted ({status}); it must be refused with a 4xx",
            **evidence,
        )
    if status >= 500:
        return failed(
            f"{requirement}, T5: {what} caused a server error ({status}); an invalid request "
            "must be refused with a 4xx",
            **evidence,
        )
    if 400 <= status < 500:
        note = (
            ""
            if not preferred or status in preferred
            else (f" (the most precise answer would be {'/'.join(map(str, sorted(preferred)))})")
        )
        return passed(f"{what} refused with {status} {exchange.reason}{note}".strip(), **evidence)
    return failed(f"{requirement}: {what}: unexpected answer {status}", **evidence)


def encoding_problems(
    exchange: Exchange, expected: str, *, requirement: str
) -> tuple[list[str], list[str]]:
    """Media type (E16: type/subtype and parameters) and base64 body (E15) of a 200 answer.

    Returns (problems, notes): problems fail the case, notes only warn.
    """
    problems: list[str] = []
    notes: list[str] = []
    where = f"{exchange.method} {exchange.path}"
    wanted = parse_media_type(expected)
    content_type = exchange.content_type
    if not content_type:
        problems.append(f"{requirement}, E16: {where} has no Content-Type (expected {expected})")
    else:
        try:
            got = parse_media_type(content_type)
        except EstProtocolError as exc:
            problems.append(f"E16: {where} Content-Type {content_type!r} does not parse: {exc}")
        else:
            if got.essence != wanted.essence:
                problems.append(
                    f"{requirement}, E16: {where} is {got.essence}, expected {wanted.essence}"
                )
            for name, value in wanted.params:
                found = got.param(name)
                if found is None:
                    notes.append(f"E16: {where} Content-Type lacks {name}={value}")
                elif found.lower() != value.lower():
                    problems.append(f"E16: {where} has {name}={found}, expected {name}={value}")
    if wanted.essence.startswith("multipart/"):
        return problems, notes
    try:
        _der, form = decode_body(exchange.body)
    except EstProtocolError as exc:
        problems.append(f"E15: {where} body does not decode: {exc}")
    else:
        if form != "base64":
            problems.append(
                f"E15: {where} body is {form.upper()}, not base64 of DER as RFC 8951 requires"
            )
    return problems, notes
