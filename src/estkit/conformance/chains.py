"""Certificate comparisons and chain walks the cases use as evidence.

Why a walk of our own instead of ``cryptography.x509.verification``: the verifier needs a policy
(server name, client EKU) while these checks ask a narrower question — "is every link to a root in
this set present and correctly signed?" — for certificates whose names or EKUs may be exactly what
a later case judges. Signature checks are done by ``cryptography``
(``verify_directly_issued_by``); only the walk is ours.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from estkit.protocol import MAX_CERTS_IN_PKCS7, is_self_signed, sha256_fingerprint


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def contains(pool: Iterable[x509.Certificate], cert: x509.Certificate) -> bool:
    """Membership compared as certificates (DER), never as text."""
    wanted = der(cert)
    return any(der(candidate) == wanted for candidate in pool)


def issuers_of(cert: x509.Certificate, pool: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """Certificates of ``pool`` whose key really signed ``cert`` (names alone prove nothing),
    self-signed ones first: during a root rollover one key has several certificates (OldWithOld,
    OldWithNew), and the root is the one that ends the walk."""
    found = []
    for candidate in pool:
        if candidate.subject != cert.issuer or der(candidate) == der(cert):
            continue
        try:
            cert.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        found.append(candidate)
    return sorted(found, key=lambda candidate: not is_self_signed(candidate))


def chain_to_root(
    leaf: x509.Certificate, pool: Sequence[x509.Certificate]
) -> tuple[list[x509.Certificate], str | None]:
    """Walk from ``leaf`` through ``pool`` to a self-signed certificate of ``pool``.

    Returns the chain (leaf first) and ``None``, or the longest partial chain and what is
    missing. Every issuer candidate is tried (a depth-first search), so rollover cross
    certificates that share a root's name and key cannot send the walk round in a loop.
    """
    best: tuple[list[x509.Certificate], str] = ([leaf], "")

    def walk(chain: list[x509.Certificate]) -> list[x509.Certificate] | None:
        nonlocal best
        current = chain[-1]
        if is_self_signed(current):
            if contains(pool, current):
                return chain
            problem = f"the chain ends at {name(current)}, which is not in the set"
        elif len(chain) > MAX_CERTS_IN_PKCS7:
            problem = f"no root within {MAX_CERTS_IN_PKCS7} links"
        else:
            candidates = issuers_of(current, pool)
            fresh = [c for c in candidates if not contains(chain, c)]
            for issuer in fresh:
                done = walk([*chain, issuer])
                if done is not None:
                    return done
            if not candidates:
                problem = (
                    f"no certificate for the issuer {current.issuer.rfc4514_string()} of "
                    f"{name(current)} (none present whose key verifies its signature)"
                )
            elif not fresh:
                problem = f"the chain loops at {name(candidates[0])}"
            else:
                return None  # every branch failed; a deeper one recorded why
        if len(chain) >= len(best[0]) or not best[1]:
            best = (chain, problem)
        return None

    complete = walk([leaf])
    if complete is not None:
        return complete, None
    return best


def name(cert: x509.Certificate) -> str:
    """The subject as people read it (RFC 4514)."""
    return cert.subject.rfc4514_string() or "<empty subject>"


def summary(cert: x509.Certificate) -> dict[str, Any]:
    """Subject, issuer, validity and fingerprint: evidence that identifies a certificate."""
    return {
        "subject": name(cert),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "fingerprint": sha256_fingerprint(cert),
    }


def extended_key_usages(cert: x509.Certificate) -> list[x509.ObjectIdentifier] | None:
    """The EKU OIDs, or None when the extension is absent."""
    try:
        return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return None


def subject_alt_names(
    cert: x509.Certificate | x509.CertificateSigningRequest,
) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def time_problem(cert: x509.Certificate, now: datetime | None = None) -> str | None:
    """Why ``cert`` is not valid at ``now``, or None."""
    now = now or datetime.now(UTC)
    if cert.not_valid_before_utc > now:
        return f"{name(cert)} is not valid before {cert.not_valid_before_utc.isoformat()}"
    if cert.not_valid_after_utc <= now:
        return f"{name(cert)} expired at {cert.not_valid_after_utc.isoformat()}"
    return None
