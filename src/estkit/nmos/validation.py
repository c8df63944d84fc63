"""Checks on a certificate the EST server issued, before the node installs it (C9).

Why the node checks what the client library already parsed: BCP-003-03 C9 makes the *node*
responsible for not installing a certificate that would break its TLS service: wrong names,
missing ``clientAuth``/``serverAuth`` (S7: the same certificate serves IS-04 registration as a
client and the node API as a server), a chain that does not end at the root the node trusts, or a
certificate that is not valid yet on the node's clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from estkit.nmos.errors import CertificateValidationError
from estkit.protocol.certs import is_signed_by
from estkit.protocol.keys import PrivateKey, key_matches_certificate

# Chains longer than this are not PKI designs but loops or garbage (root, one or two issuing CAs,
# rollover cross-certificates): stop walking.
MAX_CHAIN_DEPTH = 8
# Node and CA clocks differ a little; the estkit CA backdates notBefore by 5 minutes for the same
# reason. Beyond this the certificate really is "not yet valid" (C9: notBefore MUST be checked).
CLOCK_SKEW_TOLERANCE = timedelta(minutes=5)

_HINT = "check the EST server's issuing profile (label) and the names given with --hostname"


def build_chain(
    leaf: x509.Certificate,
    candidates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
) -> list[x509.Certificate]:
    """The path leaf -> ... -> a trusted root (root included), by signature, not just by name.

    Raises :class:`CertificateValidationError` when no root in ``roots`` is reached.
    """
    path = [leaf]
    current = leaf
    pool = [cert for cert in candidates if cert != leaf]
    for _ in range(MAX_CHAIN_DEPTH):
        for root in roots:
            if is_signed_by(current, root):
                if current != root:
                    path.append(root)
                return path
        issuer = next((cert for cert in pool if is_signed_by(current, cert)), None)
        if issuer is None:
            break
        pool.remove(issuer)
        path.append(issuer)
        current = issuer
    raise CertificateValidationError(
        f"the certificate for {leaf.subject.rfc4514_string()} does not chain to the trusted root"
        f" ({', '.join(root.subject.rfc4514_string() for root in roots) or 'none installed'})",
        hint="the server issued from a CA the node does not trust: fetch /cacerts again or "
        "check the server's CA configuration",
    )


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def validate_issued_certificate(
    leaf: x509.Certificate,
    key: PrivateKey,
    *,
    hostnames: Sequence[str],
    roots: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    now: datetime,
) -> list[x509.Certificate]:
    """Run C9's checks; return the chain to install after the leaf (issuer first, root excluded).

    Raises :class:`CertificateValidationError` naming the first failed check.
    """
    subject = leaf.subject.rfc4514_string()
    if not key_matches_certificate(key, leaf):
        raise CertificateValidationError(
            f"the certificate {subject} does not certify the key the node generated", hint=_HINT
        )
    if leaf.not_valid_before_utc - CLOCK_SKEW_TOLERANCE > now:
        raise CertificateValidationError(
            f"the certificate {subject} is not valid before {_when(leaf.not_valid_before_utc)},"
            f" later than the node's clock ({_when(now)})",
            hint="check the clocks of the node and of the EST server (NTP/PTP)",
        )
    if leaf.not_valid_after_utc <= now:
        raise CertificateValidationError(
            f"the certificate {subject} expired at {_when(leaf.not_valid_after_utc)}",
            hint="check the node's clock and the validity the server's profile grants",
        )
    cn_attrs = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(cn_attrs[0].value) if cn_attrs else None
    if common_name is None or common_name.lower() != hostnames[0].lower():
        raise CertificateValidationError(
            f"the certificate's common name is {common_name!r}; the node asked for "
            f"{hostnames[0]!r}",
            hint=_HINT,
        )
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = {name.lower() for name in san.get_values_for_type(x509.DNSName)}
    except x509.ExtensionNotFound:
        names = set()
    missing = [name for name in hostnames if name.lower() not in names]
    if missing:
        raise CertificateValidationError(
            f"the certificate's subjectAltName lacks {', '.join(missing)} (has {sorted(names)})",
            hint=_HINT,
        )
    try:
        ekus = set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        ekus = set()
    needed = {
        ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
        ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    }
    lacking = [label for oid, label in needed.items() if oid not in ekus]
    if lacking:
        raise CertificateValidationError(
            f"the certificate {subject} lacks extended key usage {' and '.join(lacking)}"
            " (BCP-003-03 S7 requires serverAuth and clientAuth)",
            hint="ask the EST server's operator to fix the issuing profile",
        )
    path = build_chain(leaf, intermediates, roots)
    for ca in path[1:]:
        if ca.not_valid_after_utc <= now:
            raise CertificateValidationError(
                f"CA certificate {ca.subject.rfc4514_string()} in the chain has expired",
                hint="fetch /cacerts again; the server's CA may have rolled over",
            )
    root_set = set(roots)
    return [cert for cert in path[1:] if cert not in root_set]
