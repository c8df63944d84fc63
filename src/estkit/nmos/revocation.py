"""Is a certificate revoked? CRL distribution points, and OCSP when an AIA responder is named (C16).

Why here and not in the client: revocation of the node's *own* certificates and of its root is a
BCP-003-03 node duty (C16: "a revoked certificate MUST be dropped at once and replaced"); the EST
protocol itself has no revocation query. Fetching is injected (``fetch``/``post``) so the
decision logic is plain code over ``cryptography`` objects and the CRL/OCSP signature is always
checked against the issuer we already trust: an unsigned "revoked" from anyone on the path must
not take a node off the network, and an unsigned "good" must not keep a revoked one on it.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from estkit.protocol.certs import issuer_public_key

# CRLs are small (tens of kB for a device CA); a bound keeps a hostile URL from filling memory.
MAX_CRL_BYTES = 4 * 1024 * 1024
OCSP_REQUEST_MEDIA_TYPE = "application/ocsp-request"
# An OCSP answer without nextUpdate would otherwise be "fresh" forever: anyone who recorded a
# "good" could replay it after a revocation. One day is the longest an RFC 5019 responder's
# pre-produced answers are normally kept.
MAX_OCSP_RESPONSE_AGE = timedelta(days=1)
# A CRL without nextUpdate: CRLs are commonly reissued weekly; older than that is not trusted.
MAX_CRL_AGE = timedelta(days=7)
# Clocks of node and responder differ a little; a thisUpdate further in the future than this is
# a forged or broken answer, not skew.
REVOCATION_CLOCK_SKEW = timedelta(minutes=5)
# RFC 8954: a nonce of 1..32 octets; 16 random octets cannot be guessed or replayed.
OCSP_NONCE_BYTES = 16

Fetch = Callable[[str], bytes]
Post = Callable[[str, bytes, str], bytes]


class Revocation(enum.Enum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class RevocationResult:
    status: Revocation
    detail: str
    source: str | None = None

    @property
    def revoked(self) -> bool:
        return self.status is Revocation.REVOKED


def crl_urls(cert: x509.Certificate) -> list[str]:
    """HTTP(S) URLs of the certificate's CRL distribution points."""
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    urls: list[str] = []
    for point in points:
        for name in point.full_name or []:
            if isinstance(name, x509.UniformResourceIdentifier) and name.value.lower().startswith(
                ("http://", "https://")
            ):
                urls.append(name.value)
    return urls


def ocsp_urls(cert: x509.Certificate) -> list[str]:
    """HTTP(S) URLs of OCSP responders named in the certificate's AIA extension."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return [
        desc.access_location.value
        for desc in aia
        if desc.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(desc.access_location, x509.UniformResourceIdentifier)
        and desc.access_location.value.lower().startswith(("http://", "https://"))
    ]


def check_crl(
    cert: x509.Certificate, issuer: x509.Certificate, crl_data: bytes, now: datetime, source: str
) -> RevocationResult:
    """Look ``cert`` up in a CRL (DER or PEM) whose signature must verify with ``issuer``."""
    try:
        crl = (
            x509.load_pem_x509_crl(crl_data)
            if crl_data.lstrip().startswith(b"-----BEGIN")
            else x509.load_der_x509_crl(crl_data)
        )
    except ValueError as exc:
        return RevocationResult(Revocation.UNKNOWN, f"unreadable CRL from {source}: {exc}", source)
    if crl.issuer != issuer.subject:
        return RevocationResult(
            Revocation.UNKNOWN,
            f"CRL from {source} is issued by {crl.issuer.rfc4514_string()}, "
            f"not by {issuer.subject.rfc4514_string()}",
            source,
        )
    try:
        signed = crl.is_signature_valid(issuer_public_key(issuer))
    except (TypeError, UnsupportedAlgorithm):
        signed = False
    if not signed:
        return RevocationResult(
            Revocation.UNKNOWN, f"CRL from {source} has a bad signature: ignored", source
        )
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    if entry is not None:
        return RevocationResult(
            Revocation.REVOKED,
            f"serial {cert.serial_number:x} revoked at {entry.revocation_date_utc.isoformat()} "
            f"(CRL {source})",
            source,
        )
    stale = _staleness(crl.last_update_utc, crl.next_update_utc, now, MAX_CRL_AGE)
    if stale is not None:
        return RevocationResult(Revocation.UNKNOWN, f"CRL from {source} {stale}", source)
    return RevocationResult(Revocation.GOOD, f"not on the CRL from {source}", source)


def _staleness(
    this_update: datetime, next_update: datetime | None, now: datetime, max_age: timedelta
) -> str | None:
    """Why an answer issued at ``this_update`` cannot be relied on at ``now``, or None."""
    if this_update > now + REVOCATION_CLOCK_SKEW:
        return f"claims to be issued in the future (thisUpdate {this_update.isoformat()})"
    if next_update is not None:
        if next_update < now:
            return f"is stale (nextUpdate {next_update.isoformat()})"
        return None
    if now - this_update > max_age:
        return (
            f"has no nextUpdate and is older than {max_age.total_seconds() / 3600:g} h "
            f"(thisUpdate {this_update.isoformat()})"
        )
    return None


def new_ocsp_nonce() -> bytes:
    return os.urandom(OCSP_NONCE_BYTES)


def build_ocsp_request(
    cert: x509.Certificate, issuer: x509.Certificate, nonce: bytes | None = None
) -> bytes:
    """DER OCSP request for one certificate, with a nonce extension when ``nonce`` is given.

    SHA-1 here only names the certificate (CertID hash, RFC 6960 §4.1.1); RFC 5019 responders
    accept nothing else. No signature is made with it (C7's SHA-1 ban is about signatures).
    """
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(Encoding.DER)


def check_ocsp_response(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    data: bytes,
    now: datetime,
    source: str,
    *,
    nonce: bytes | None = None,
) -> RevocationResult:
    """Interpret an OCSP response; its signature must come from the issuer or its delegate.

    Freshness: thisUpdate not in the future, nextUpdate not passed, and without nextUpdate no
    older than :data:`MAX_OCSP_RESPONSE_AGE`. ``nonce`` (the one sent): a responder that echoes
    a nonce must echo this one; one that supports none (pre-produced answers) is judged by the
    freshness rules alone.
    """
    try:
        response = ocsp.load_der_ocsp_response(data)
    except ValueError as exc:
        return RevocationResult(
            Revocation.UNKNOWN, f"unreadable OCSP answer from {source}: {exc}", source
        )
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return RevocationResult(
            Revocation.UNKNOWN,
            f"OCSP responder {source} answered {response.response_status.name}",
            source,
        )
    if response.serial_number != cert.serial_number:
        return RevocationResult(
            Revocation.UNKNOWN, f"OCSP answer from {source} is about another certificate", source
        )
    signer = _ocsp_signer(response, issuer)
    if signer is None or not _signature_valid(
        signer, response.signature, response.tbs_response_bytes, response.signature_hash_algorithm
    ):
        return RevocationResult(
            Revocation.UNKNOWN, f"OCSP answer from {source} is not signed by the issuer", source
        )
    if nonce is not None:
        try:
            echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            echoed = None
        if echoed is not None and echoed != nonce:
            return RevocationResult(
                Revocation.UNKNOWN,
                f"OCSP answer from {source} carries another request's nonce (a replay)",
                source,
            )
    stale = _staleness(
        response.this_update_utc, response.next_update_utc, now, MAX_OCSP_RESPONSE_AGE
    )
    if stale is not None:
        return RevocationResult(Revocation.UNKNOWN, f"OCSP answer from {source} {stale}", source)
    if response.certificate_status == ocsp.OCSPCertStatus.REVOKED:
        when = response.revocation_time_utc
        return RevocationResult(
            Revocation.REVOKED,
            f"serial {cert.serial_number:x} revoked"
            + (f" at {when.isoformat()}" if when else "")
            + f" (OCSP {source})",
            source,
        )
    if response.certificate_status == ocsp.OCSPCertStatus.GOOD:
        return RevocationResult(Revocation.GOOD, f"OCSP {source}: good", source)
    return RevocationResult(Revocation.UNKNOWN, f"OCSP {source}: status unknown", source)


def _ocsp_signer(response: ocsp.OCSPResponse, issuer: x509.Certificate) -> x509.Certificate | None:
    """The issuer itself, or a delegated responder certificate it signed with id-kp-OCSPSigning."""
    if response.responder_name == issuer.subject:
        return issuer
    if response.responder_key_hash is not None:
        own_hash = x509.SubjectKeyIdentifier.from_public_key(issuer.public_key()).digest
        if response.responder_key_hash == own_hash:
            return issuer
    for candidate in response.certificates:
        try:
            candidate.verify_directly_issued_by(issuer)
            ekus = candidate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING in ekus:
            return candidate
    return None


def _signature_valid(
    signer: x509.Certificate,
    signature: bytes,
    data: bytes,
    hash_algorithm: hashes.HashAlgorithm | None,
) -> bool:
    key = signer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey) and hash_algorithm is not None:
            key.verify(signature, data, padding.PKCS1v15(), hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and hash_algorithm is not None:
            key.verify(signature, data, ec.ECDSA(hash_algorithm))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def check_revocation(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    now: datetime,
    fetch: Fetch,
    post: Post | None = None,
) -> RevocationResult:
    """CRL distribution points first, then OCSP responders; first definite answer wins.

    A certificate naming neither gives UNKNOWN ("nothing to check"), which the agent treats as
    "keep using it": only a signed REVOKED answer takes a certificate out of service.
    """
    problems: list[str] = []
    for url in crl_urls(cert):
        try:
            data = fetch(url)
        except Exception as exc:  # any fetch failure: try the next source, report all
            problems.append(f"CRL {url}: {exc}")
            continue
        result = check_crl(cert, issuer, data, now, url)
        if result.status is not Revocation.UNKNOWN:
            return result
        problems.append(result.detail)
    if post is not None:
        for url in ocsp_urls(cert):
            nonce = new_ocsp_nonce()
            try:
                data = post(url, build_ocsp_request(cert, issuer, nonce), OCSP_REQUEST_MEDIA_TYPE)
            except Exception as exc:
                problems.append(f"OCSP {url}: {exc}")
                continue
            result = check_ocsp_response(cert, issuer, data, now, url, nonce=nonce)
            if result.status is not Revocation.UNKNOWN:
                return result
            problems.append(result.detail)
    if not problems:
        return RevocationResult(Revocation.UNKNOWN, "no CRL distribution point or OCSP responder")
    return RevocationResult(Revocation.UNKNOWN, "; ".join(problems))
