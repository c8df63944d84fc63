"""The server's own TLS certificates across a CA root key update (RFC 4210 §4.4, issue 15 item 3).

Why: after ``estkit server rollover`` a device that was given only the new root (NewWithNew) must
be able to connect, and a device that still holds only the old root (OldWithOld) must keep
working through the overlap. A TLS server certificate issued under the old root satisfies only
the second. So at a rollover the server's certificates are issued again under the new issuing CA
(same keys, same names), and the chain they are presented with ends in NewWithOld:

    leaf → issuing CA (new) → NewWithOld (new root's key, signed by the old root)

A client trusting the new root stops at the issuing CA (its issuer is the new root, found by name
and key identifier); a client trusting the old root continues through NewWithOld to the old root.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from estkit.ca.authority import CertificateAuthority
from estkit.fileio import load_credential_pair, replace_credential_pair
from estkit.protocol.certs import certificates_to_pem, is_self_signed, is_signed_by
from estkit.protocol.keys import private_key_to_pem, supported_private_key
from estkit.server.config import CertificatePair, ServerConfig
from estkit.server.datadir import TLS_CERTIFICATE_VALIDITY_SECONDS
from estkit.server.public_url import pointer_extensions_for


@dataclass(frozen=True)
class RenewedTlsCertificate:
    """One server certificate issued again under the current CA generation."""

    pair: CertificatePair
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]


def tls_chain(authority: CertificateAuthority) -> list[x509.Certificate]:
    """What the server presents after its leaf: the issuing CA, and during a rollover the
    NewWithOld certificate that links the new root to the old one. No self-signed root: a client
    must already hold the root it trusts (RFC 8446 §4.4.2 lets the root be omitted)."""
    chain = [cert for cert in authority.chain if not is_self_signed(cert)]
    rollover = authority.rollover_certificates
    if rollover is not None:
        chain.append(rollover["new_with_old"])
    return chain


def _host_names(certificate: x509.Certificate) -> list[str]:
    """The names the certificate is for, its subject CN first (it becomes the new CN)."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [*san.get_values_for_type(x509.DNSName)]
        names += [str(address) for address in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names = []
    common = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if common:
        first = str(common[0].value)
        names = [first, *(name for name in names if name != first)]
    return names


def _issued_by_us(certificate: x509.Certificate, authority: CertificateAuthority) -> bool:
    return any(
        is_signed_by(certificate, issuer) for issuer in authority.issuers_by_generation.values()
    )


def renew_tls_certificates(
    config: ServerConfig,
    authority: CertificateAuthority | None = None,
    *,
    now: datetime | None = None,
) -> list[RenewedTlsCertificate]:
    """Issue the server's TLS certificates again under the current CA generation (same key,
    same names) and write each chain with :func:`tls_chain` atomically next to its key.

    Certificates this CA did not issue (an operator's own, from a public CA) are left alone.
    A running server presents the new files from its next handshake on.
    """
    authority = authority or CertificateAuthority.load(config.ca_directory)
    chain = tls_chain(authority)
    renewed = []
    for pair in config.tls_certificates:
        certificates, key = load_credential_pair(pair.certificate, pair.key)
        if not _issued_by_us(certificates[0], authority):
            continue
        key = supported_private_key(key)  # the CA certifies RSA and EC keys only
        certificate = authority.issue_tls_server_certificate(
            key,
            _host_names(certificates[0]),
            validity_seconds=TLS_CERTIFICATE_VALIDITY_SECONDS,
            now=now,
            # AIA/CDP as in issued leaves (issue 17 item 2): a renewal used to drop them.
            extensions=pointer_extensions_for(
                config, None, authority.generation, None, config.revocation_port or None
            ),
        )
        replace_credential_pair(
            pair.certificate,
            certificates_to_pem([certificate, *chain]),
            pair.key,
            private_key_to_pem(key),
        )
        renewed.append(RenewedTlsCertificate(pair, certificate, tuple(chain)))
    return renewed


__all__ = [
    "RenewedTlsCertificate",
    "renew_tls_certificates",
    "tls_chain",
]
