"""An EstConnector answering from a real estkit CertificateAuthority at the node's simulated time.

Why: the renewal agent must be exercised over months and years of simulated time. A real server
issues at the wall clock, so its certificates would not fit a simulated calendar. This connector
keeps every part real except the network: the CSR is built by the client library's own code,
signed by the real CA code with ``now=`` the manual clock, and CRLs are the CA's real CRLs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509

from estkit.ca.authority import CaError, CertificateAuthority
from estkit.ca.crl import RevokedEntry
from estkit.ca.profiles import Profile
from estkit.client.errors import (
    EstAuthError,
    EstConnectionError,
    EstHttpError,
    EstRetryLaterError,
    EstTlsError,
)
from estkit.client.flows import build_csr_for
from estkit.client.models import CsrSpec, EnrollResult
from estkit.client.trust import ClientCredentials
from estkit.nmos.clock import ManualClock
from estkit.nmos.discovery import ServerAdvert
from estkit.protocol.certs import is_signed_by

NINETY_DAYS = 90 * 86400
CRL_URL = "http://ca.nmos.test/crl"


@dataclass
class Call:
    at: datetime
    operation: str
    server: str
    presented: str | None = None


@dataclass
class CaBackedConnector:
    authority: CertificateAuthority
    clock: ManualClock
    profile: Profile = field(default_factory=lambda: Profile(validity_seconds=NINETY_DAYS))
    down: bool = False
    pending: bool = False
    refuse_renewal: bool = False
    crl_url: str | None = None
    calls: list[Call] = field(default_factory=list)
    revoked: list[RevokedEntry] = field(default_factory=list)

    @classmethod
    def create(cls, directory: Path, clock: ManualClock, **kwargs: object) -> CaBackedConnector:
        authority = CertificateAuthority.create(directory, key_type="p256", now=clock.now())
        return cls(authority, clock, **kwargs)  # type: ignore[arg-type]

    def _record(self, operation: str, server: ServerAdvert, presented: str | None = None) -> None:
        self.calls.append(Call(self.clock.now(), operation, server.describe(), presented))
        if self.down:
            raise EstConnectionError(f"cannot connect to {server.host}:{server.port}: refused")

    def _verify_tls(self, server: ServerAdvert, trust: Sequence[x509.Certificate]) -> None:
        """What a real verified connection does: the server's TLS certificate comes from this
        CA, so only a node trusting one of this CA's roots gets past the handshake."""
        if not any(anchor in self.authority.cacerts for anchor in trust):
            raise EstTlsError(
                f"could not verify the TLS certificate of {server.host}:{server.port}: "
                "certificate verify failed (unable to get local issuer certificate)",
                url=server.base_url,
            )

    def cacerts(
        self, server: ServerAdvert, trust: Sequence[x509.Certificate]
    ) -> list[x509.Certificate]:
        self._record("cacerts", server)
        self._verify_tls(server, trust)
        return list(self.authority.cacerts)

    def cacerts_with_explicit_trust(self, server: ServerAdvert) -> list[x509.Certificate]:
        self._record("cacerts-explicit", server)
        return list(self.authority.cacerts)

    def enroll(
        self,
        server: ServerAdvert,
        spec: CsrSpec,
        *,
        trust: Sequence[x509.Certificate],
        credentials: ClientCredentials | None,
        renewal: bool,
    ) -> EnrollResult:
        operation = "simplereenroll" if renewal else "simpleenroll"
        presented = credentials.certificate.subject.rfc4514_string() if credentials else None
        self._record(operation, server, presented)
        self._verify_tls(server, trust)
        if self.pending:
            raise EstRetryLaterError(
                "pending", status=202, retry_after=30.0, attempts=1, url=server.base_url
            )
        if renewal:
            if self.refuse_renewal:
                raise EstAuthError("renewal refused", status=403, url=server.base_url)
            assert credentials is not None, "C13: renewal must present the certificate"
            issuers = [self.authority.issuer_certificate, *self.authority.previous_issuers]
            assert any(is_signed_by(credentials.certificate, i) for i in issuers)
        csr = build_csr_for(spec)
        try:
            cert = self.authority.issue(
                csr, self.profile, now=self.clock.now(), crl_url=self.crl_url
            )
        except CaError as exc:  # what a real server answers when its CA cannot issue
            raise EstHttpError(str(exc), status=500, url=server.base_url) from exc
        return EnrollResult(cert, [self.authority.issuer_certificate], spec.key)

    def fetch(self, url: str, trust: Sequence[x509.Certificate], *, limit: int = 0) -> bytes:
        if self.down:
            raise EstConnectionError(f"cannot fetch {url}")
        return self.authority.build_crl(self.revoked, now=self.clock.now())

    def post(
        self,
        url: str,
        body: bytes,
        content_type: str,
        trust: Sequence[x509.Certificate],
        *,
        limit: int = 0,
    ) -> bytes:
        raise EstConnectionError("no OCSP responder in this fake")
