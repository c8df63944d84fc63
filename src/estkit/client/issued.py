"""Checking what the server issued: the right key, valid now, the names asked for, its chain.

Why a module of its own: BCP-003-03 C9 says the client SHOULD validate the certificate it gets
(notBefore MUST be checked) before replacing anything; the rules are the same for /simpleenroll,
/simplereenroll and /serverkeygen, and pure, so they are tested without a network.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from estkit.protocol import (
    EstProtocolError,
    common_name,
    decrypt_private_key,
    dns_names,
    is_signed_by,
    parse_serverkeygen_response,
    public_keys_equal,
)

from .errors import EstProtocolResponseError
from .models import EnrollResult, ServerKeygenResult
from .responses import Reply, decode_certificates, decoding_error, media_type, quote_body
from .trust import ClientCredentials

# A freshly issued certificate may start slightly in the future when the server's clock is ahead
# of ours; within this margin we say nothing, beyond it we warn (C9: notBefore MUST be checked).
CLOCK_SKEW_TOLERANCE = timedelta(minutes=5)


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


def interpret_enroll(
    reply: Reply,
    *,
    public_key: PublicKeyTypes,
    private_key: PrivateKeyTypes | None,
    requested_common_name: str | None,
    requested_dns_names: tuple[str, ...],
    now: datetime,
) -> EnrollResult:
    """``/simpleenroll`` / ``/simplereenroll`` 200 → the issued certificate (E2, E3).

    ``public_key`` is the CSR's: the issued certificate must certify it.
    """
    warnings: list[str] = []
    certificates = decode_certificates(reply, "the issued certificate", warnings)
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
    warnings: list[str] = []
    media = media_type(reply)
    if media is None or media.essence != "multipart/mixed":
        raise EstProtocolResponseError(
            f"expected multipart/mixed from {reply.url.path} but got "
            f"{media.essence if media else 'no Content-Type'} with {quote_body(reply)}",
            content_type=reply.content_type,
            hint="the server does not implement /serverkeygen as RFC 7030 §4.4.2 describes",
            url=str(reply.url),
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
                hint="use a client certificate and key (--cert/--key) when asking for encryption",
                url=str(reply.url),
            )
        try:
            private_key = decrypt_private_key(
                parsed.key_der, credentials.certificate, credentials.key
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
    leaf, rest = _split_leaf(parsed.certificates, private_key.public_key())
    check_issued_certificate(
        leaf,
        expected_public_key=private_key.public_key(),
        requested_common_name=requested_common_name,
        requested_dns_names=requested_dns_names,
        now=now,
        warnings=warnings,
        url=str(reply.url),
    )
    chain, _ = order_chain(leaf, rest)
    return ServerKeygenResult(
        private_key=private_key,
        certificate=leaf,
        chain=chain,
        key_was_encrypted=parsed.encrypted,
        key_media_type=parsed.key_media_type,
        warnings=warnings,
    )
