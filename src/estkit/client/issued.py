"""Checking what the server issued: the right key, valid now, the names asked for, its chain.

Why a module of its own: BCP-003-03 C9 says the client SHOULD validate the certificate it gets
(notBefore MUST be checked) before replacing anything; the rules are the same for /simpleenroll,
/simplereenroll and /serverkeygen, and pure, so they are tested without a network.

Two levels: :func:`check_issued_certificate` runs while an answer is interpreted (a certificate
for another key, or already expired, is not an answer at all); :func:`validate_issued_certificate`
is THE check before anything is written, shared by ``estkit client`` and the NMOS node: chain to
the trust anchors, validity window, names, ``CA:FALSE``, key usage and EKU fit for TLS.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from estkit.protocol import (
    EstProtocolError,
    PrivateKey,
    common_name,
    dns_names,
    is_ca_certificate,
    is_signed_by,
    public_keys_equal,
    supported_private_key,
)

from .errors import EstIssuedCertificateError, EstProtocolResponseError
from .models import EnrollResult, ServerKeygenResult
from .responses import (
    Reply,
    decode_certificates,
    decoding_error,
    media_type,
    unexpected_media_error,
)
from .trust import ClientCredentials

# A freshly issued certificate may start slightly in the future when the server's clock is ahead
# of ours (the estkit CA backdates notBefore by 5 minutes for the same reason); beyond this
# margin the certificate is refused (C9: notBefore MUST be checked).
CLOCK_SKEW_TOLERANCE = timedelta(minutes=5)
# Chains longer than this are not PKI designs but loops or garbage (root, one or two issuing CAs,
# rollover cross-certificates): stop walking.
MAX_CHAIN_DEPTH = 8
TLS_EKUS = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
}
_PROFILE_HINT = (
    "nothing was written; the server's issuing profile (or the server itself) is wrong: tell "
    "its operator"
)


def order_chain(
    leaf: x509.Certificate, others: list[x509.Certificate]
) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """Issuer-first chain from ``leaf`` through ``others`` (by signature), and what is left over."""
    chain: list[x509.Certificate] = []
    remaining = list(others)
    current = leaf
    while remaining:
        issuer = next((cert for cert in remaining if is_signed_by(current, cert)), None)
        if issuer is None or issuer == current:
            break
        chain.append(issuer)
        remaining.remove(issuer)
        current = issuer
    return chain, remaining


def check_issued_certificate(
    certificate: x509.Certificate,
    *,
    expected_public_key: PublicKeyTypes | None,
    requested_common_name: str | None,
    requested_dns_names: tuple[str, ...],
    now: datetime,
    warnings: list[str],
    url: str,
) -> None:
    """BCP-003-03 C9: the certificate must be for our key and valid now; names are compared.

    A key mismatch or an expired certificate is an error (using it would fail anyway); a name
    the server changed, or a notBefore ahead of our clock, is a warning.
    """
    if expected_public_key is not None and not public_keys_equal(
        certificate.public_key(), expected_public_key
    ):
        raise EstProtocolResponseError(
            "the server returned a certificate for a different public key than the one requested",
            hint="do not use it; report this to the server's operator",
            url=url,
        )
    if certificate.not_valid_after_utc <= now:
        raise EstProtocolResponseError(
            f"the server returned a certificate that expired at "
            f"{certificate.not_valid_after_utc.isoformat()}",
            hint="check the server's clock and profile validity, and this machine's clock",
            url=url,
        )
    if certificate.not_valid_before_utc > now + CLOCK_SKEW_TOLERANCE:
        warnings.append(
            f"the certificate is not valid before {certificate.not_valid_before_utc.isoformat()}; "
            "this machine's clock or the server's may be wrong"
        )
    issued_cn = common_name(certificate)
    if requested_common_name is not None and issued_cn != requested_common_name:
        warnings.append(
            f"the server changed the common name: asked {requested_common_name!r}, got "
            f"{issued_cn!r}"
        )
    issued_names = set(dns_names(certificate))
    missing = [name for name in requested_dns_names if name not in issued_names]
    if missing:
        warnings.append(f"the certificate lacks requested DNS name(s): {', '.join(missing)}")


def _split_leaf(
    certificates: list[x509.Certificate], public: PublicKeyTypes | None
) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """The certificate for our public key (else the first) and the rest."""
    leaf: x509.Certificate | None = None
    if public is not None:
        leaf = next(
            (cert for cert in certificates if public_keys_equal(cert.public_key(), public)), None
        )
    if leaf is None:
        leaf = certificates[0]
    rest = [cert for cert in certificates if cert is not leaf]
    return leaf, rest


def _checked_leaf(
    reply: Reply,
    certificates: list[x509.Certificate],
    public_key: PublicKeyTypes,
    requested_common_name: str | None,
    requested_dns_names: tuple[str, ...],
    now: datetime,
    warnings: list[str],
) -> tuple[x509.Certificate, list[x509.Certificate], list[x509.Certificate]]:
    """The issued certificate for ``public_key`` among ``certificates``, checked (see
    :func:`check_issued_certificate`), its issuer-first chain and the certificates left over."""
    leaf, rest = _split_leaf(certificates, public_key)
    check_issued_certificate(
        leaf,
        expected_public_key=public_key,
        requested_common_name=requested_common_name,
        requested_dns_names=requested_dns_names,
        now=now,
        warnings=warnings,
        url=str(reply.url),
    )
    chain, leftover = order_chain(leaf, rest)
    return leaf, chain, leftover


def interpret_enroll(
    reply: Reply,
    *,
    public_key: PublicKeyTypes,
    private_key: PrivateKey | None,
    requested_common_name: str | None,
    requested_dns_names: tuple[str, ...],
    now: datetime,
) -> EnrollResult:
    """``/simpleenroll`` / ``/simplereenroll`` 200 → the issued certificate (E2, E3).

    ``public_key`` is the CSR's: the issued certificate must certify it.
    """
    warnings: list[str] = []
    certificates = decode_certificates(reply, "the issued certificate", warnings)
    leaf, chain, leftover = _checked_leaf(
        reply, certificates, public_key, requested_common_name, requested_dns_names, now, warnings
    )
    if leftover:
        warnings.append(f"ignored {len(leftover)} certificate(s) unrelated to the issued one")
    return EnrollResult(leaf, chain, private_key, warnings)


def interpret_serverkeygen(
    reply: Reply,
    *,
    credentials: ClientCredentials | None,
    requested_common_name: str | None,
    requested_dns_names: tuple[str, ...],
    now: datetime,
) -> ServerKeygenResult:
    """``/serverkeygen`` 200 multipart → key (decrypted if we asked) and certificate (E5)."""
    # Its parser (and CMS key agreement) loads with the first /serverkeygen answer (issue 23).
    from estkit.protocol.serverkeygen import decrypt_private_key, parse_serverkeygen_response

    warnings: list[str] = []
    media = media_type(reply)
    if media is None or media.essence != "multipart/mixed":
        raise unexpected_media_error(
            reply,
            "multipart/mixed",
            hint="the server does not implement /serverkeygen as RFC 7030 §4.4.2 describes",
        )
    try:
        parsed = parse_serverkeygen_response(reply.body, reply.content_type or "")
    except (EstProtocolError, ValueError) as exc:
        raise decoding_error(reply, "the server-generated key response", exc) from None
    warnings.extend(parsed.warnings)
    private_key = parsed.private_key
    if parsed.encrypted:
        if credentials is None:
            raise EstProtocolResponseError(
                "the server encrypted the generated key but this client has no key to decrypt it",
                hint="use a client certificate and key when asking for encryption",
                params=("credentials",),
                url=str(reply.url),
            )
        try:
            private_key = decrypt_private_key(
                parsed.key_der, credentials.certificate, supported_private_key(credentials.key)
            )
        except (EstProtocolError, ValueError) as exc:
            raise decoding_error(reply, "the encrypted server-generated key", exc) from None
    if private_key is None:
        raise EstProtocolResponseError(
            f"the server-generated key from {reply.url.path} could not be read",
            hint="report this to the server's maintainer",
            url=str(reply.url),
        )
    if not parsed.certificates:
        raise EstProtocolResponseError(
            f"the /serverkeygen answer from {reply.url.path} holds no certificate",
            hint="report this to the server's maintainer",
            url=str(reply.url),
        )
    leaf, chain, _ = _checked_leaf(
        reply,
        parsed.certificates,
        private_key.public_key(),
        requested_common_name,
        requested_dns_names,
        now,
        warnings,
    )
    return ServerKeygenResult(
        private_key=private_key,
        certificate=leaf,
        chain=chain,
        key_was_encrypted=parsed.encrypted,
        key_media_type=parsed.key_media_type,
        warnings=warnings,
    )


# --- the check before anything is written ------------------------------------------------------


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def build_chain(
    leaf: x509.Certificate,
    candidates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
) -> list[x509.Certificate]:
    """The path leaf -> ... -> a trust anchor (anchor included), by signature, not by name.

    Every certificate between the leaf and the anchor must be a CA (``CA:TRUE``) and valid.
    Raises :class:`EstIssuedCertificateError` when no anchor is reached.
    """
    path = [leaf]
    current = leaf
    pool = [cert for cert in candidates if cert != leaf]
    for _ in range(MAX_CHAIN_DEPTH):
        for anchor in anchors:
            if is_signed_by(current, anchor):
                if current != anchor:
                    path.append(anchor)
                return path
        issuer = next(
            (cert for cert in pool if is_ca_certificate(cert) and is_signed_by(current, cert)), None
        )
        if issuer is None:
            break
        pool.remove(issuer)
        path.append(issuer)
        current = issuer
    trusted = ", ".join(anchor.subject.rfc4514_string() for anchor in anchors) or "none"
    raise EstIssuedCertificateError(
        f"the certificate for {leaf.subject.rfc4514_string()} does not chain to the trusted "
        f"root ({trusted}); it names {leaf.issuer.rfc4514_string()} as issuer",
        hint="nothing was written: the server issued from a CA that is not trusted (a look-alike "
        "issuer is refused). Fetch /cacerts again over a verified connection, or check the "
        "server's CA configuration",
    )


def _check_tls_usage(
    leaf: x509.Certificate, subject: str, required_ekus: Sequence[ObjectIdentifier]
) -> None:
    try:
        basic = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        basic = None
    if basic is not None and basic.ca:
        raise EstIssuedCertificateError(
            f"the server issued a CA certificate (CA:TRUE) for {subject}; an end-entity "
            "certificate (CA:FALSE) was requested",
            hint=_PROFILE_HINT,
        )
    try:
        usage: x509.KeyUsage | None = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None:
        if usage.key_cert_sign or usage.crl_sign:
            raise EstIssuedCertificateError(
                f"the certificate {subject} may sign certificates or CRLs (keyUsage "
                "keyCertSign/cRLSign): not an end-entity TLS certificate",
                hint=_PROFILE_HINT,
            )
        is_rsa = isinstance(leaf.public_key(), rsa.RSAPublicKey)
        if not (usage.digital_signature or (is_rsa and usage.key_encipherment)):
            raise EstIssuedCertificateError(
                f"the certificate {subject} has a keyUsage without digitalSignature: its key "
                "cannot authenticate a TLS handshake",
                hint=_PROFILE_HINT,
            )
    try:
        ekus = set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        ekus = set()
    if not ekus & set(TLS_EKUS):
        raise EstIssuedCertificateError(
            f"the certificate {subject} has no TLS extended key usage (serverAuth or clientAuth)",
            hint=_PROFILE_HINT,
        )
    lacking = [TLS_EKUS.get(oid, oid.dotted_string) for oid in required_ekus if oid not in ekus]
    if lacking:
        raise EstIssuedCertificateError(
            f"the certificate {subject} lacks extended key usage {' and '.join(lacking)}",
            hint=_PROFILE_HINT,
        )


def validate_issued_certificate(
    leaf: x509.Certificate,
    *,
    public_key: PublicKeyTypes,
    requested_common_name: str | None,
    requested_dns_names: Sequence[str],
    anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    now: datetime,
    required_ekus: Sequence[ObjectIdentifier] = (),
) -> list[x509.Certificate]:
    """Is ``leaf`` fit to install? Returns its chain (issuer first, anchors excluded).

    Refuses, with :class:`EstIssuedCertificateError` naming the first failed check: a
    certificate for another key than ``public_key`` (the CSR's); one not valid now (notBefore
    more than :data:`CLOCK_SKEW_TOLERANCE` ahead, or expired); a common name or DNS name that
    was asked for and is missing; ``CA:TRUE`` or a CA key usage; no TLS EKU, or one of
    ``required_ekus`` missing; no chain through ``intermediates`` to one of ``anchors`` (the
    caller's trust anchors, or roots of a /cacerts fetched over a verified connection).
    """
    subject = leaf.subject.rfc4514_string()
    if not public_keys_equal(leaf.public_key(), public_key):
        raise EstIssuedCertificateError(
            f"the certificate {subject} does not certify the key of the request",
            hint="nothing was written; report this to the server's operator",
        )
    if leaf.not_valid_before_utc > now + CLOCK_SKEW_TOLERANCE:
        raise EstIssuedCertificateError(
            f"the certificate {subject} is not valid before {_when(leaf.not_valid_before_utc)},"
            f" later than this machine's clock ({_when(now)})",
            hint="nothing was written; check the clocks of this machine and of the EST server "
            "(NTP/PTP)",
        )
    if leaf.not_valid_after_utc <= now:
        raise EstIssuedCertificateError(
            f"the certificate {subject} expired at {_when(leaf.not_valid_after_utc)}",
            hint="nothing was written; check this machine's clock and the server's profile",
        )
    issued_cn = common_name(leaf)
    if requested_common_name is not None and (
        issued_cn is None or issued_cn.lower() != requested_common_name.lower()
    ):
        raise EstIssuedCertificateError(
            f"the certificate's common name is {issued_cn!r}; {requested_common_name!r} was "
            "requested",
            hint=_PROFILE_HINT,
        )
    issued_names = {name.lower() for name in dns_names(leaf)}
    missing = [name for name in requested_dns_names if name.lower() not in issued_names]
    if missing:
        raise EstIssuedCertificateError(
            f"the certificate's subjectAltName lacks {', '.join(missing)} "
            f"(has {sorted(issued_names)})",
            hint=_PROFILE_HINT,
        )
    _check_tls_usage(leaf, subject, required_ekus)
    path = build_chain(leaf, intermediates, anchors)
    for ca in path[1:]:
        if ca.not_valid_after_utc <= now or ca.not_valid_before_utc > now + CLOCK_SKEW_TOLERANCE:
            raise EstIssuedCertificateError(
                f"CA certificate {ca.subject.rfc4514_string()} in the chain is not valid now",
                hint="nothing was written; fetch /cacerts again: the CA may have rolled over",
            )
    anchor_set = set(anchors)
    return [cert for cert in path[1:] if cert not in anchor_set]
