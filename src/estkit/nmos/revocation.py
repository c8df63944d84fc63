"""The node's revocation check (C16): :func:`estkit.client.status.check_status` over the node's
connector.

Why so little here: BCP-003-03 C16 asks the node to check its root and its own certificates and
to drop a revoked one at once. *How* a status is asked and believed (OCSP named by the AIA first,
with a nonce; the CRL distribution point as fallback; only answers signed by the issuer or a
responder it delegated to; freshness bounds) is the client library's, one home for the device,
``estkit client status`` and the conformance suite. This module only carries those fetches
through the node's :class:`~estkit.nmos.connector.EstConnector` (the node's trust anchors,
cancellable when the agent stops, an overall deadline, a simulated network in tests) and says
what a certificate that names nowhere to ask means to a node: nothing to check, keep using it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from cryptography import x509

from estkit.client.status import CertificateStatus, StatusError, check_status

if TYPE_CHECKING:
    from estkit.nmos.connector import EstConnector


class ConnectorFetcher:
    """:class:`estkit.client.status.StatusFetcher` over the node's connector and trust anchors."""

    def __init__(self, connector: EstConnector, trust: Sequence[x509.Certificate]) -> None:
        self.connector = connector
        self.trust = list(trust)

    def get(self, url: str, limit: int) -> bytes:
        return self.connector.fetch(url, self.trust, limit=limit)

    def post(self, url: str, body: bytes, content_type: str, limit: int) -> bytes:
        return self.connector.post(url, body, content_type, self.trust, limit=limit)


def certificate_status(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    connector: EstConnector,
    trust: Sequence[x509.Certificate],
    now: datetime,
) -> CertificateStatus:
    """The status of ``cert`` (OCSP first, CRL as fallback) at the node's ``now``. A certificate
    that names no responder, or an ``issuer`` that did not sign it, gives ``unknown`` with the
    reason: only a believable ``revoked`` takes a certificate out of service."""
    try:
        return check_status(cert, issuer, now=now, fetcher=ConnectorFetcher(connector, trust))
    except StatusError as exc:
        serial = format(cert.serial_number, "x")
        return CertificateStatus("unknown", serial, checked_at=now, problems=(str(exc),))


__all__ = ["ConnectorFetcher", "certificate_status"]
