"""Small judgements several cases share: is this answer a refusal, is this body well encoded?"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from estkit.conformance.model import Outcome, Status, failed, passed, skipped, warned
from estkit.conformance.session import Issuance, Session
from estkit.conformance.transport import Exchange
from estkit.protocol import EstProtocolError, decode_body, parse_media_type

_HEADER_END = re.compile(rb"\r?\n\r?\n")


def baseline_or_skip(session: Session) -> Issuance | Outcome:
    """A refusal proves something only if the same client's correct request is accepted: that
    accepted enrollment, or the skip to return when there is none."""
    baseline = session.baseline()
    if baseline is None:
        problem = session.enroll("ecdsa").problem or session.enroll("rsa").problem
        return skipped(
            "cannot judge a refusal: a correct enrollment from the same client failed too "
            f"(see enroll-rsa / enroll-ecdsa: {problem})"
        )
    return baseline


def refused_beside_control(refusal: Outcome, accepted: str, /, **evidence: object) -> Outcome:
    """A refusal verdict (of :func:`judge_refusal`) next to its control: a passed refusal gets
    ``accepted`` (what the server took from the same client) added; any other verdict stands."""
    if refusal.status is not Status.PASS:
        return refusal
    return passed(f"{refusal.message}; {accepted}", **dict(refusal.evidence), **evidence)


# --- verdicts by profile (issue 13: fair verdicts) ---------------------------------------------
# Under the rfc7030 profile only what RFC 7030 / RFC 8951 require can fail; a finding that is a
# BCP-003-03/-01 rule, a SHOULD/MAY or CA policy is a warning there, citing why. The nmos profile
# keeps them as failures. docs/conformance-verdicts.md tabulates every case under both profiles.

RFC7030 = "rfc7030"

ERROR_CODES_BASIS = (
    "RFC 7030 §4.2.3 lets a server reject with an HTTP 4xx or 5xx; asking for a 4xx is "
    "BCP-003-01 T5"
)
"""Why a 5xx refusal is only a warning under the rfc7030 profile."""


def lenient(session: Session) -> bool:
    """Whether SHOULD/MAY/policy findings are warnings (the rfc7030 profile)."""
    return session.target.profile == RFC7030


def beyond_rfc7030(session: Session, message: str, basis: str, **evidence: object) -> Outcome:
    """A finding RFC 7030/8951 do not make a MUST: ``fail`` under nmos, ``warn`` under rfc7030
    with ``basis`` (the RFC sentence that leaves it open) appended."""
    if lenient(session):
        return warned(f"{message} (a warning under the rfc7030 profile: {basis})", **evidence)
    return failed(message, **evidence)


def judge_refusal(
    exchange: Exchange,
    *,
    requirement: str,
    what: str,
    preferred: frozenset[int] = frozenset(),
    session: Session | None = None,
    acceptance_basis: str | None = None,
) -> Outcome:
    """Pass on a 4xx (noting a non-preferred one), fail on 2xx, 5xx or no answer.

    With ``session`` under the rfc7030 profile a 5xx is a warning (RFC 7030 §4.2.3 allows it),
    and so is a 2xx when ``acceptance_basis`` says why RFC 7030 does not forbid accepting.
    """
    evidence: dict[str, object] = {}  # the exchange itself is in the "exchanges" evidence
    status = exchange.status
    soft = session is not None and lenient(session)
    if status is None:
        return failed(
            f"{requirement}: {what}: expected a 4xx refusal, got no HTTP answer ({exchange.error})",
            **evidence,
        )
    if 200 <= status < 300:
        message = f"{requirement}: {what} was accepted ({status}); it must be refused with a 4xx"
        if soft and acceptance_basis is not None:
            return warned(
                f"{message} (a warning under the rfc7030 profile: {acceptance_basis})",
                **evidence,
            )
        return failed(message, **evidence)
    if status >= 500:
        message = (
            f"{requirement}, T5: {what} caused a server error ({status}); an invalid request "
            "must be refused with a 4xx"
        )
        if soft:
            return warned(
                f"{message} (a warning under the rfc7030 profile: {ERROR_CODES_BASIS})",
                **evidence,
            )
        return failed(message, **evidence)
    if 400 <= status < 500:
        note = (
            ""
            if not preferred or status in preferred
            else (f" (the most precise answer would be {'/'.join(map(str, sorted(preferred)))})")
        )
        return passed(f"{what} refused with {status} {exchange.reason}{note}".strip(), **evidence)
    return failed(f"{requirement}: {what}: unexpected answer {status}", **evidence)


def refusal_probe(
    send: Callable[[Session, Issuance], Exchange],
    *,
    requirement: str,
    what: str,
    preferred: int | None = None,
    acceptance_basis: str | None = None,
) -> Callable[[Session], Outcome]:
    """A case that sends one request the server must refuse (``send``, given the accepted
    baseline enrollment of the same client) and judges the answer with :func:`judge_refusal`."""

    def run(session: Session) -> Outcome:
        baseline = baseline_or_skip(session)
        if isinstance(baseline, Outcome):
            return baseline
        return judge_refusal(
            send(session, baseline),
            requirement=requirement,
            what=what,
            preferred=frozenset() if preferred is None else frozenset({preferred}),
            session=session,
            acceptance_basis=acceptance_basis,
        )

    run.__doc__ = f"{what} must be refused with a 4xx ({requirement})"
    return run


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
        part_problems, noted = multipart_encoding_problems(exchange)
        return problems + part_problems, notes + noted
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


@dataclass(frozen=True)
class MultipartPart:
    number: int
    headers: dict[str, str]  # names lower-cased
    content: bytes


def split_multipart(body: bytes, boundary: str) -> list[MultipartPart]:
    """The body parts of a multipart body (RFC 2046 §5.1.1), headers kept; CRLF or LF.

    Why not :func:`estkit.protocol.parse_serverkeygen_response`: it is a tolerant *client*
    parser that ignores Content-Transfer-Encoding (as RFC 8951 says a receiver must) and so
    cannot tell a conformance check what the server actually sent in each part.
    """
    delimiter = re.escape(b"--" + boundary.encode("latin-1"))
    pattern = re.compile(rb"(?:^|\r?\n)" + delimiter + rb"(--)?[ \t]*(?:\r?\n|$)")
    matches = list(pattern.finditer(body))
    if not matches:
        raise ValueError(f"no '--{boundary}' delimiter in the body")
    parts: list[MultipartPart] = []
    for index, match in enumerate(matches):
        if match.group(1):  # the close delimiter
            return parts
        end = matches[index + 1].start() if index + 1 < len(matches) else len(body)
        raw = body[match.end() : end]
        split = _HEADER_END.search(raw)
        if raw.startswith((b"\r\n", b"\n")):
            header_bytes, content = b"", raw.split(b"\n", 1)[1]
        elif split is None:
            raise ValueError(f"part {len(parts) + 1} has no blank line after its headers")
        else:
            header_bytes, content = raw[: split.start()], raw[split.end() :]
        headers: dict[str, str] = {}
        for line in header_bytes.decode("latin-1").splitlines():
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        parts.append(MultipartPart(len(parts) + 1, headers, content))
    raise ValueError(f"no close delimiter '--{boundary}--'")


def multipart_encoding_problems(exchange: Exchange) -> tuple[list[str], list[str]]:
    """Each part of a ``multipart/mixed`` answer (E5) must be base64 of DER (E15); a part without
    ``Content-Transfer-Encoding: base64`` is only noted, since receivers must ignore that header
    (RFC 8951 §3) though older clients rely on it (RFC 7030 §4.4.2 sends it)."""
    where = f"{exchange.method} {exchange.path}"
    problems: list[str] = []
    notes: list[str] = []
    try:
        boundary = parse_media_type(exchange.content_type or "").param("boundary")
    except EstProtocolError:
        return problems, notes  # already reported as a media-type problem
    if not boundary:
        return [f"E5: {where} multipart Content-Type has no boundary parameter"], notes
    try:
        parts = split_multipart(bytes(exchange.body), boundary)
    except ValueError as exc:
        return [f"E5: {where} multipart body does not split into parts: {exc}"], notes
    if not parts:
        return [f"E5: {where} multipart body has no parts"], notes
    for part in parts:
        label = part.headers.get("content-type", "no Content-Type")
        which = f"{where} part {part.number} ({label})"
        transfer = part.headers.get("content-transfer-encoding")
        try:
            _der, form = decode_body(part.content)
        except EstProtocolError as exc:
            problems.append(f"E5, E15: {which} does not decode: {exc}")
            continue
        if form != "base64":
            header = f"Content-Transfer-Encoding: {transfer}" if transfer else "no header"
            problems.append(
                f"E5, E15: {which} is {form.upper()} ({header}), not base64 of DER as RFC 8951 "
                "requires"
            )
        elif transfer is None:
            notes.append(f"E5: {which} lacks Content-Transfer-Encoding: base64 (RFC 7030 §4.4.2)")
        elif transfer.lower() != "base64":
            notes.append(f"E5: {which} is base64 but says Content-Transfer-Encoding: {transfer}")
    return problems, notes
