"""Checks on a certificate the EST server issued, before the node installs it (C9).

Why the node checks what the client library already parsed: BCP-003-03 C9 makes the *node*
responsible for not installing a certificate that would break its TLS service: wrong names,
missing ``clientAuth``/``serverAuth`` (S7: the same certificate serves IS-04 registration as a
client and the node API as a server), a CA certificate, a chain that does not end at the root the
node trusts, or a certificate that is not valid yet on the node's clock.

The checks themselves are the client library's (:func:`estkit.client.issued.
validate_issued_certificate`), shared with ``estkit client``; this module only fixes the node's
policy (both TLS EKUs) and speaks the node's error type.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from estkit.client.errors import EstIssuedCertificateError
from estkit.client.issued import CLOCK_SKEW_TOLERANCE, MAX_CHAIN_DEPTH
from estkit.client.issued import build_chain as _build_chain
from estkit.client.issued import validate_issued_certificate as _validate
from estkit.nmos.errors import CertificateValidationError
from estkit.protocol.keys import PrivateKey

# S7: every node certificate serves as TLS server (node API) and client (registration).
NODE_EKUS = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)

__all__ = [
    "CLOCK_SKEW_TOLERANCE",
    "MAX_CHAIN_DEPTH",
    "NODE_EKUS",
    "build_chain",
    "validate_issued_certificate",
]


def build_chain(
    leaf: x509.Certificate,
    candidates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
) -> list[x509.Certificate]:
    """The path leaf -> ... -> a trusted root (root included); see the client's ``build_chain``."""
    try:
        return _build_chain(leaf, candidates, roots)
    except EstIssuedCertificateError as exc:
        raise CertificateValidationError(exc.message, hint=exc.hint) from None


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
    try:
        return _validate(
            leaf,
            public_key=key.public_key(),
            requested_common_name=hostnames[0],
            requested_dns_names=hostnames,
            anchors=roots,
            intermediates=intermediates,
            now=now,
            required_ekus=NODE_EKUS,
        )
    except EstIssuedCertificateError as exc:
        raise CertificateValidationError(exc.message, hint=exc.hint) from None
