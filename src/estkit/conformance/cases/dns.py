"""BCP-003-03 discovery cases D1-D5: the server's ``_nmos-certs._tcp`` DNS-SD advertisement.

They run only when the target names a DNS domain to look in; the DNS server is asked directly
(unicast DNS-SD, RFC 6763), never through a cache we control, so what is judged is what a node
on that network would see.
"""

from __future__ import annotations

from collections.abc import Callable

from estkit.conformance.dnssd import Advert, DnsView, points_at
from estkit.conformance.model import Outcome, failed, not_applicable, passed, skipped, warned
from estkit.conformance.session import Session
from estkit.protocol import EstProtocolError, common_name, dns_names, validate_label

DEV_PRIORITY = 100
"""D3: ``pri`` 0-99 marks live servers; 100 and above is for development only."""


def _view(session: Session) -> DnsView | Outcome:
    """The browse of the target's domain, or the verdict when there is none to judge."""
    if session.target.dns_domain is None and not session.target.mdns:
        return not_applicable(
            "no DNS domain (nor mDNS) was given, so the server's DNS-SD advertisement is not "
            "checked"
        )
    view = session.dns_view()
    if view.error is not None:
        return failed(f"D1, D5: cannot browse {view.service}: {view.error}", dns=view.evidence())
    return view


def _ours(session: Session, view: DnsView) -> list[Advert]:
    """Adverts leading to the server under test; when none resolves, those on its port."""
    target = session.target
    leading = [a for a in view.adverts if points_at(a, target.host, target.port)]
    if leading:
        return leading
    return [a for a in view.adverts if a.srv_port == target.port and not a.addresses]


Findings = tuple[list[str], list[str], str]
"""What a check of the server's adverts found: problems (fail), notes (warn), and the sentence
saying what holds when there are neither."""


def _advert_case(
    check: Callable[[Session, list[Advert], dict[str, object]], Findings],
) -> Callable[[Session], Outcome]:
    """A case that checks the adverts leading to the server under test (``check`` may add to the
    evidence); skipped when there are none, which dns-advertised judges."""

    def run(session: Session) -> Outcome:
        view = _view(session)
        if isinstance(view, Outcome):
            return view
        ours = _ours(session, view)
        evidence: dict[str, object] = {"dns": view.evidence()}
        if not ours:
            return skipped(
                f"no advert under {view.service} leads to {session.target.authority} "
                "(see dns-advertised)",
                **evidence,
            )
        problems, notes, holds = check(session, ours, evidence)
        if problems:
            return failed("; ".join(problems), **evidence)
        if notes:
            return warned("; ".join(notes), **evidence)
        return passed(holds, **evidence)

    run.__doc__ = check.__doc__
    return run


def dns_advertised(session: Session) -> Outcome:
    view = _view(session)
    if isinstance(view, Outcome):
        return view
    evidence = {"dns": view.evidence()}
    if not view.instances:
        source = view.where if view.multicast else f"DNS server {view.where}"
        return failed(
            f"D1, D5: no PTR record for {view.service} at {source}: "
            "nodes cannot discover this server",
            **evidence,
        )
    target = session.target
    leading = [a for a in view.adverts if points_at(a, target.host, target.port)]
    if not leading:
        found = ", ".join(
            f"{a.instance} → {a.srv_target}:{a.srv_port}"
            if a.srv_target
            else f"{a.instance} (no SRV)"
            for a in view.adverts
        )
        return failed(
            f"D1, D2: {len(view.instances)} instance(s) under {view.service}, none leading to "
            f"{target.authority}: {found}",
            **evidence,
        )
    names = ", ".join(a.instance for a in leading)
    if view.multicast:
        return warned(
            f"D1: advertised over multicast DNS ({names} → {target.authority}), which SHOULD NOT "
            "be used: nodes trust an mDNS advert only when configured to; advertise by unicast "
            "DNS-SD",
            **evidence,
        )
    return passed(
        f"discoverable by unicast DNS-SD: {names} → {target.authority}",
        **evidence,
    )


@_advert_case
def dns_srv_target(session: Session, ours: list[Advert], evidence: dict[str, object]) -> Findings:
    """D2, S2: each SRV target resolves (an A record) and the TLS certificate names it."""
    problems: list[str] = []
    notes: list[str] = []
    certificate = session.cacerts().exchange.peer_certificate
    names: set[str] = set()
    if certificate is not None:
        names = {name.lower() for name in dns_names(certificate)}
        cn = common_name(certificate)
        if cn:
            names.add(cn.lower())
        evidence["certificate_names"] = sorted(names)
    for advert in ours:
        target = advert.srv_target or ""
        ipv4 = [a for a in advert.addresses if ":" not in a]
        if not advert.addresses:
            problems.append(f"D2: SRV target {target} of {advert.instance} has no A record")
        elif not ipv4:
            notes.append(f"D2: SRV target {target} has only AAAA records; D2 asks for an A record")
        if certificate is None:
            problems.append("S2: the server presented no TLS certificate to compare with")
        elif target.lower() not in names:
            problems.append(
                f"D2, S2: the TLS certificate does not name the SRV target {target} (it names "
                f"{', '.join(sorted(names)) or 'nothing'}): a node connecting to the advertised "
                "host cannot verify the server"
            )
    targets = ", ".join(sorted({a.srv_target or "" for a in ours}))
    return problems, notes, f"SRV target {targets} resolves and is named by the TLS certificate"


@_advert_case
def dns_txt_pri(session: Session, ours: list[Advert], evidence: dict[str, object]) -> Findings:
    """D3: each advert's TXT has an integer pri; a development priority is noted."""
    problems: list[str] = []
    notes: list[str] = []
    for advert in ours:
        if advert.txt is None:
            problems.append(f"D3: {advert.instance} has no TXT record (pri is required)")
            continue
        value = advert.txt.get("pri")
        if value is None:
            problems.append(f"D3: TXT of {advert.instance} has no pri")
        elif not value.strip().isdigit():
            problems.append(f"D3: TXT pri={value!r} of {advert.instance} is not an integer")
        elif int(value) >= DEV_PRIORITY:
            notes.append(
                f"D3: pri={int(value)} of {advert.instance} marks a development server "
                "(production nodes ignore it)"
            )
    values = ", ".join(f"{a.instance}: pri={(a.txt or {}).get('pri')}" for a in ours)
    return problems, notes, f"TXT pri present and an integer ({values})"


@_advert_case
def dns_api_selector(session: Session, ours: list[Advert], evidence: dict[str, object]) -> Findings:
    """D4: each advert's api_selector is the label the server is tested with."""
    label = session.target.label
    problems: list[str] = []
    for advert in ours:
        selector = (advert.txt or {}).get("api_selector")
        if selector is None:
            if label is not None:
                problems.append(
                    f"D4: {advert.instance} has no api_selector, so nodes use no label, but the "
                    f"server is tested with label {label!r}"
                )
            continue
        try:
            validate_label(selector)
        except EstProtocolError as exc:
            problems.append(f"D4: api_selector {selector!r} is not a usable label: {exc}")
            continue
        if selector != label:
            tested = repr(label) if label else "no label"
            problems.append(
                f"D4: {advert.instance} has api_selector={selector!r}, so nodes use that label, "
                f"but the server is tested with {tested}"
            )
    shown = repr(label) if label else "no label (no api_selector)"
    return problems, [], f"the advert leads nodes to the tested label: {shown}"


def enroll_manufacturer_only(session: Session) -> Outcome:
    """C8: a node enrolls with /simpleenroll presenting its manufacturer certificate only."""
    issuance = session.memoised(
        "enroll-manufacturer-only",
        lambda: session.issue("ecdsa", role="c8", answer_challenge=False),
    )
    evidence = {"issuance": issuance.evidence()}
    if issuance.ok:
        return passed(
            "issued to a client presenting only its manufacturer certificate (no HTTP "
            "credentials), as a BCP-003-03 node enrolls",
            **evidence,
        )
    if issuance.deferred:
        return passed(f"deferred for manual approval (S4): {issuance.problem}", **evidence)
    exchange = issuance.exchange
    if exchange is not None and exchange.status == 401:
        return failed(
            "C8, S5: the server wants HTTP authentication from a node presenting a valid "
            f"manufacturer certificate: {issuance.problem}",
            **evidence,
        )
    return failed(
        f"C8: enrollment with the manufacturer certificate alone failed: {issuance.problem}",
        **evidence,
    )
