"""The CA page: what /cacerts serves, fingerprints, rollover state, the CRL, the operators CA."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from estkit.console.html import Html, join, tag
from estkit.console.views.common import cell, fmt_date, fmt_time, mono, notice_box, pill, table
from estkit.protocol.certs import colon_hex
from estkit.protocol.keys import describe_public_key


def _cn_or_subject(name: x509.Name) -> str:
    cns = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else name.rfc4514_string()


def ca_content(overview: Any, now: dt.datetime, operators_ca: x509.Certificate | None) -> Html:
    rows = []
    for index, cert in enumerate(overview.certificates):
        key = describe_public_key(cert.public_key())
        expired = cert.not_valid_after_utc <= now
        rows.append(
            tag(
                "tr",
                cell("Role", pill(overview.roles[index], "info")),
                cell(
                    "Subject",
                    tag("strong", _cn_or_subject(cert.subject)),
                    tag("div", cert.subject.rfc4514_string(), class_="sub")
                    if len(cert.subject) > 1
                    else Html(""),
                ),
                cell("Issuer", _cn_or_subject(cert.issuer)),
                cell("Key", key.description),
                cell(
                    "Valid",
                    fmt_date(cert.not_valid_before_utc),
                    " → ",
                    fmt_date(cert.not_valid_after_utc),
                    " ",
                    pill("expired", "bad") if expired else Html(""),
                ),
                cell(
                    "SHA-256 fingerprint",
                    mono(colon_hex(cert.fingerprint(hashes.SHA256())), "mono fp"),
                ),
                cell(
                    "",
                    tag(
                        "a",
                        "PEM",
                        href=f"/ca/certificates/{index}.pem",
                        class_="btn small",
                        download=True,
                    ),
                ),
            )
        )
    certs_table = table(
        ("Role", "Subject", "Issuer", "Key", "Valid", "SHA-256 fingerprint", ""),
        rows,
        empty="The CA serves no certificate.",
    )
    if overview.in_rollover:
        rollover_state = pill("rollover in progress", "warn")
        rollover_hint = (
            f"CA generation {overview.generation}. Old and new roots are both served, with the "
            "link certificates, so clients that trust either root can follow the change "
            "(RFC 4210 §4.4, RFC 7030 §4.1.3)."
        )
    else:
        rollover_state = pill("no rollover", "ok")
        rollover_hint = (
            f"One root is served (CA generation {overview.generation}). A root key rollover is "
            "started from the command line."
        )
    rollover = tag(
        "section",
        tag("h2", "Root key rollover ", rollover_state),
        tag("p", rollover_hint, class_="hint"),
        tag("ul", *(tag("li", line) for line in overview.rollover_lines), class_="plain")
        if overview.rollover_lines
        else Html(""),
        class_="card",
    )
    if overview.crl is not None:
        crl = overview.crl
        try:
            number = str(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
        except x509.ExtensionNotFound:
            number = "—"
        crl_body = tag(
            "dl",
            tag("dt", "Issuer"),
            tag("dd", crl.issuer.rfc4514_string()),
            tag("dt", "This update"),
            tag("dd", fmt_time(crl.last_update_utc)),
            tag("dt", "Next update"),
            tag("dd", fmt_time(crl.next_update_utc)),
            tag("dt", "CRL number"),
            tag("dd", mono(number)),
            tag("dt", "Revoked entries"),
            tag("dd", tag("strong", str(len(crl)), id="crl-count")),
            class_="kv wide",
        )
        crl_actions = tag(
            "p",
            tag("a", "Download CRL (PEM)", href="/ca/crl.pem", class_="btn small", download=True),
            " ",
            tag("a", "DER", href="/ca/crl.der", class_="btn small", download=True),
            " EST clients fetch it from the server at ",
            mono("/crl"),
            ".",
        )
    else:
        crl_body = notice_box(f"The CRL cannot be built: {overview.crl_error}", "bad")
        crl_actions = Html("")
    operators = Html("")
    if operators_ca is not None:
        operators = tag(
            "section",
            tag("h2", "Console operators CA"),
            tag(
                "p",
                "Operator certificates for this console are issued by a separate CA, so device "
                "certificates can never sign in here. Issue one with ",
                mono("estkit server admin-cert DIR NAME"),
                ".",
                class_="hint",
            ),
            tag(
                "dl",
                tag("dt", "Subject"),
                tag("dd", operators_ca.subject.rfc4514_string()),
                tag("dt", "SHA-256"),
                tag("dd", mono(colon_hex(operators_ca.fingerprint(hashes.SHA256())), "mono fp")),
                class_="kv wide",
            ),
            class_="card",
        )
    return join(
        [
            tag(
                "section",
                tag(
                    "h2",
                    "CA certificates ",
                    tag("span", str(len(overview.certificates)), class_="count"),
                ),
                tag(
                    "p",
                    "What ",
                    mono("/cacerts"),
                    " serves. Compare fingerprints out of band before trusting a root. ",
                    tag("a", "Download all (PEM)", href="/ca/cacerts.pem", download=True),
                    class_="hint",
                ),
                certs_table,
                class_="card",
            ),
            rollover,
            tag(
                "section",
                tag("h2", "Certificate revocation list"),
                crl_body,
                crl_actions,
                class_="card",
            ),
            operators,
        ]
    )
