"""Judge a TLS client certificate: whose is it, is it valid, is it revoked (BCP-003-03 S3).

Why in the application and not the TLS handshake: see ``tls_verify_hook.py``. Here the verdict
comes with a reason a person can act on ("expired on …", "issued by an unknown CA …", "revoked
on …"), which the server returns as a 403 or shows to the operator in the approval queue.

Two verifiers are used on purpose. ``cryptography.x509.verification`` is tried first: it is the
maintained, well-reviewed path builder. Its policy is the Web PKI's (CA/Browser Forum), which
device PKIs do not always follow (P-521 keys, missing extensions), and it cannot express the S3
"MAY accept an expired manufacturer certificate" option. So when it refuses, a plain check here
(signature chain to a configured anchor, validity, CA flags, clientAuth EKU) decides and, when it
also refuses, supplies the human-readable reason.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from estkit.protocol.certs import (
    is_ca_certificate,
    is_self_signed,
    is_signed_by,
    issuer_public_key,
    sha256_fingerprint,
)

logger = logging.getLogger("estkit.server")

# Longest chain (leaf excluded) we follow; real device PKIs have one or two levels.
MAX_CHAIN_DEPTH = 8
# How long a positive chain verdict is reused for the same certificate (path validation is the
# costliest step of a request after the handshake); revocation is never cached.
VERDICT_CACHE_SECONDS = 60
MAX_CACHED_VERDICTS = 4096

TrustSource = Literal["none", "own", "manufacturer", "untrusted"]


@dataclass(frozen=True)
class ClientCertificateStatus:
    """The verdict on the client certificate of one TLS connection."""

    certificate: x509.Certificate | None
    source: TrustSource
    reason: str
    revoked: bool = False
    expired_accepted: bool = False
    issued_serial: str | None = None  # our serial (hex) when we issued it and it is in our store

    @property
    def trusted(self) -> bool:
        return self.source in ("own", "manufacturer")

    @property
    def subject(self) -> str | None:
        return _name_text(self.certificate, "subject") if self.certificate else None

    @property
    def issuer(self) -> str | None:
        return _name_text(self.certificate, "issuer") if self.certificate else None

    @property
    def fingerprint(self) -> str | None:
        return sha256_fingerprint(self.certificate) if self.certificate else None


def _name_text(certificate: x509.Certificate, which: Literal["subject", "issuer"]) -> str:
    try:
        name = certificate.subject if which == "subject" else certificate.issuer
        return name.rfc4514_string()
    except ValueError:
        return f"<unreadable {which}>"


# What parsing a hostile certificate's parts can raise (found by the property test in
# tests/server/test_issuance_properties.py): cryptography parses names and extensions lazily.
_PARSE_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def unreadable_reason(leaf: x509.Certificate) -> str | None:
    """Why the server cannot read every part of a client certificate, or None.

    Refused, not accepted, on purpose: a certificate whose subjectAltName holds a name type
    cryptography cannot represent (x400Address, ediPartyName), a duplicated extension or a
    malformed name or extension cannot be checked for what it claims (names, constraints, key
    usages), and every later step (name binding, the approval queue, key encryption) would see
    a certificate it cannot interpret. Failing closed with this reason is what a vendor can fix.
    """
    try:
        _ = leaf.subject.rfc4514_string(), leaf.issuer.rfc4514_string()
        unknown_critical = [
            extension.oid.dotted_string
            for extension in leaf.extensions
            if extension.critical and isinstance(extension.value, x509.UnrecognizedExtension)
        ]
        leaf.public_key()
    except x509.UnsupportedGeneralNameType as exc:
        return (
            f"the client certificate cannot be checked: a general name in it has a type this "
            f"server does not handle ({exc}); re-issue the device certificate with DNS, IP, "
            "URI, e-mail or otherName entries only"
        )
    except x509.DuplicateExtension as exc:
        return (
            f"the client certificate cannot be checked: it carries an extension twice ({exc}); "
            "RFC 5280 section 4.2 allows each extension once: re-issue it"
        )
    except _PARSE_ERRORS as exc:
        return (
            f"the client certificate cannot be checked: a name, extension or key in it is "
            f"malformed ({str(exc)[:200]}); re-issue it with a standard tool"
        )
    if unknown_critical:
        # RFC 5280 section 4.2: a critical extension the relying party does not recognise
        # means the certificate must be rejected.
        return (
            f"the client certificate carries the critical extension {unknown_critical[0]}, "
            "which this server does not recognise (RFC 5280 section 4.2 requires refusing it); "
            "re-issue it without that extension or mark it non-critical"
        )
    return None


@dataclass
class _CrlCache:
    path: Path
    stamp: tuple[int, int] | None = None
    revoked: dict[int, dt.datetime] = field(default_factory=dict)
    error: str | None = None


@dataclass
class TrustGroup:
    """Anchors and intermediates of one authority (our CA, or one manufacturer)."""

    name: str
    kind: Literal["own", "manufacturer"]
    roots: list[x509.Certificate]
    intermediates: list[x509.Certificate]
    accept_expired: bool = False
    crl: _CrlCache | None = None
    _store: verification.Store | None = None

    @classmethod
    def from_certificates(
        cls,
        name: str,
        kind: Literal["own", "manufacturer"],
        certificates: Sequence[x509.Certificate],
        *,
        accept_expired: bool = False,
        crl_path: Path | None = None,
    ) -> TrustGroup:
        roots = [cert for cert in certificates if is_self_signed(cert)]
        intermediates = [cert for cert in certificates if not is_self_signed(cert)]
        if not roots and certificates:
            # A configured non-self-signed CA is still an explicit anchor the operator chose.
            roots, intermediates = [certificates[0]], list(certificates[1:])
        return cls(
            name=name,
            kind=kind,
            roots=roots,
            intermediates=intermediates,
            accept_expired=accept_expired,
            crl=_CrlCache(crl_path) if crl_path else None,
        )

    @property
    def store(self) -> verification.Store:
        if self._store is None:
            self._store = verification.Store(self.roots)
        return self._store

    @property
    def all_certificates(self) -> list[x509.Certificate]:
        return [*self.roots, *self.intermediates]


def _utc(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _library_verify(group: TrustGroup, leaf: x509.Certificate, now: dt.datetime) -> str | None:
    """None when ``cryptography``'s verifier accepts ``leaf`` under ``group``, else its message."""
    try:
        verifier = (
            verification.PolicyBuilder()
            .store(group.store)
            .time(now)
            .max_chain_depth(MAX_CHAIN_DEPTH)
            .extension_policies(
                ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                # Device certificates need not follow the Web PKI's leaf rules (SAN, AKI …);
                # the EKU is checked by hand below.
                ee_policy=verification.ExtensionPolicy.permit_all(),
            )
            .build_client_verifier()
        )
        verifier.verify(leaf, group.intermediates)
    except (verification.VerificationError, ValueError, UnsupportedAlgorithm) as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class _ManualResult:
    ok: bool
    reason: str
    name_matched: bool  # the issuer name was found in this group (a more specific reason)
    only_leaf_expired: bool = False


def _validity_problem(cert: x509.Certificate, now: dt.datetime, what: str) -> str | None:
    if now < cert.not_valid_before_utc:
        return f"{what} is not valid before {_utc(cert.not_valid_before_utc)}"
    if now > cert.not_valid_after_utc:
        return f"{what} expired on {_utc(cert.not_valid_after_utc)}"
    return None


def _leaf_usage_problem(leaf: x509.Certificate) -> str | None:
    if is_ca_certificate(leaf):
        return "the client certificate is a CA certificate, not a device certificate"
    try:
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    allowed = {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
    if not allowed.intersection(usages):
        return "the client certificate's extended key usage does not include clientAuth"
    return None


def _manual_verify(group: TrustGroup, leaf: x509.Certificate, now: dt.datetime) -> _ManualResult:
    """Build one chain by name and signature and check dates and CA flags, saying what failed."""
    candidates = group.all_certificates
    usage = _leaf_usage_problem(leaf)
    leaf_time = _validity_problem(leaf, now, "the client certificate")
    current = leaf
    depth = 0
    while True:
        issuers = [cert for cert in candidates if cert.subject == current.issuer]
        if not issuers:
            return _ManualResult(
                False,
                f"issuer {current.issuer.rfc4514_string()!r} is not {group.name}",
                name_matched=depth > 0,
            )
        issuer = next((cert for cert in issuers if is_signed_by(current, cert)), None)
        if issuer is None:
            what = "the client certificate" if depth == 0 else "an intermediate CA certificate"
            return _ManualResult(
                False,
                f"{what} names {current.issuer.rfc4514_string()!r} as issuer but its signature "
                f"does not verify with that CA's key (forged or from another CA of that name)",
                name_matched=True,
            )
        if issuer in group.roots:
            break
        if not is_ca_certificate(issuer):
            return _ManualResult(
                False, f"{issuer.subject.rfc4514_string()!r} is not a CA", name_matched=True
            )
        problem = _validity_problem(issuer, now, f"the CA {issuer.subject.rfc4514_string()!r}")
        if problem:
            return _ManualResult(False, problem, name_matched=True)
        current = issuer
        depth += 1
        if depth > MAX_CHAIN_DEPTH:
            return _ManualResult(False, "the certificate chain is too long", name_matched=True)
    if usage:
        return _ManualResult(False, usage, name_matched=True)
    if leaf_time:
        return _ManualResult(
            False, leaf_time, name_matched=True, only_leaf_expired="expired" in leaf_time
        )
    return _ManualResult(True, f"issued by {group.name}", name_matched=True)


def _load_crl(cache: _CrlCache, group: TrustGroup, now: dt.datetime) -> None:
    """(Re)load a manufacturer CRL when its file changed; remember an error to fail closed."""
    try:
        info = os.stat(cache.path)
    except OSError as exc:
        cache.stamp, cache.revoked = None, {}
        cache.error = f"the CRL file {cache.path} cannot be read ({exc.strerror})"
        return
    stamp = (info.st_mtime_ns, info.st_size)
    if stamp == cache.stamp:
        return
    cache.stamp, cache.revoked, cache.error = stamp, {}, None
    data = cache.path.read_bytes()
    try:
        crl = (
            x509.load_pem_x509_crl(data)
            if data.lstrip().startswith(b"-----BEGIN")
            else x509.load_der_x509_crl(data)
        )
    except ValueError as exc:
        cache.error = f"the CRL file {cache.path} is not a valid CRL ({exc})"
        return
    signer = next(
        (
            cert
            for cert in group.all_certificates
            if cert.subject == crl.issuer and crl.is_signature_valid(issuer_public_key(cert))
        ),
        None,
    )
    if signer is None:
        cache.error = f"the CRL file {cache.path} is not signed by {group.name}"
        return
    if crl.next_update_utc is not None and crl.next_update_utc < now:
        logger.warning("CRL %s is past its nextUpdate (%s)", cache.path, crl.next_update_utc)
    cache.revoked = {entry.serial_number: entry.revocation_date_utc for entry in crl}


class ClientTrust:
    """Verifies client certificates against our CA and the configured manufacturer CAs.

    ``own_revocation(serial_hex)`` returns ``(known, revoked_at)`` from our certificate store, so
    the check always sees the latest revocations, also those made by another worker process.
    """

    def __init__(
        self,
        groups: Sequence[TrustGroup],
        own_revocation: Callable[[str], tuple[bool, dt.datetime | None]],
    ) -> None:
        self.groups = list(groups)
        self._own_revocation = own_revocation
        # Chain verdicts of recently seen certificates. Only the signature-chain part is cached
        # (it cannot change while the anchors stay the same: a new ClientTrust is built when
        # they do); dates and revocation are checked on every request.
        self._verified: OrderedDict[bytes, tuple[TrustGroup, dt.datetime]] = OrderedDict()

    def _cached_group(self, key: bytes, now: dt.datetime) -> TrustGroup | None:
        entry = self._verified.get(key)
        if entry is None:
            return None
        group, expires = entry
        if now >= expires:
            del self._verified[key]
            return None
        return group

    def _remember(
        self, key: bytes, group: TrustGroup, leaf: x509.Certificate, now: dt.datetime
    ) -> None:
        # Never beyond the certificate's own validity, so an expiring certificate is re-judged.
        expires = min(now + dt.timedelta(seconds=VERDICT_CACHE_SECONDS), leaf.not_valid_after_utc)
        self._verified[key] = (group, expires)
        while len(self._verified) > MAX_CACHED_VERDICTS:
            self._verified.popitem(last=False)

    def check(self, leaf: x509.Certificate | None, now: dt.datetime) -> ClientCertificateStatus:
        if leaf is None:
            return ClientCertificateStatus(None, "none", "no client certificate was presented")
        key = leaf.fingerprint(hashes.SHA256())
        cached = self._cached_group(key, now)
        if cached is not None and now >= leaf.not_valid_before_utc:
            # The same DER was readable when it was verified (the key is its SHA-256).
            return self._accepted(cached, leaf, now, expired_accepted=False)
        unreadable = unreadable_reason(leaf)
        if unreadable is not None:
            return ClientCertificateStatus(leaf, "untrusted", unreadable)
        for group in self.groups:
            if _library_verify(group, leaf, now) is None and _leaf_usage_problem(leaf) is None:
                self._remember(key, group, leaf, now)
                return self._accepted(group, leaf, now, expired_accepted=False)
        results = [(group, _manual_verify(group, leaf, now)) for group in self.groups]
        for group, result in results:
            if result.ok:
                logger.debug("client certificate accepted by the plain check (%s)", group.name)
                self._remember(key, group, leaf, now)
                return self._accepted(group, leaf, now, expired_accepted=False)
            if result.only_leaf_expired and group.accept_expired and group.kind == "manufacturer":
                return self._accepted(group, leaf, now, expired_accepted=True)
        specific = [result for _, result in results if result.name_matched]
        if specific:
            reason = specific[0].reason
        else:
            names = " or ".join(group.name for group in self.groups) or "any trusted CA"
            reason = (
                f"the client certificate is issued by {leaf.issuer.rfc4514_string()!r}, "
                f"which is not {names}"
            )
        return ClientCertificateStatus(leaf, "untrusted", reason)

    def _accepted(
        self,
        group: TrustGroup,
        leaf: x509.Certificate,
        now: dt.datetime,
        *,
        expired_accepted: bool,
    ) -> ClientCertificateStatus:
        serial_hex = format(leaf.serial_number, "x")
        if group.kind == "own":
            known, revoked_at = self._own_revocation(serial_hex)
            if revoked_at is not None:
                return ClientCertificateStatus(
                    leaf,
                    "untrusted",
                    f"the client certificate (serial {serial_hex}) was revoked on "
                    f"{_utc(revoked_at)}",
                    revoked=True,
                )
            return ClientCertificateStatus(
                leaf,
                "own",
                f"issued by {group.name}",
                issued_serial=serial_hex if known else None,
            )
        if group.crl is not None:
            _load_crl(group.crl, group, now)
            if group.crl.error:
                return ClientCertificateStatus(
                    leaf, "untrusted", f"{group.crl.error}; refusing to trust it without one"
                )
            revoked_at = group.crl.revoked.get(leaf.serial_number)
            if revoked_at is not None:
                return ClientCertificateStatus(
                    leaf,
                    "untrusted",
                    f"the client certificate (serial {serial_hex}) is revoked by {group.name} "
                    f"since {_utc(revoked_at)} (CRL {group.crl.path.name})",
                    revoked=True,
                )
        note = " (expired, accepted by configuration)" if expired_accepted else ""
        return ClientCertificateStatus(
            leaf, "manufacturer", f"issued by {group.name}{note}", expired_accepted=expired_accepted
        )
