"""The blocking EST client: runs the shared flows over ``httpx.Client``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, TypeVar

import httpx
from cryptography import x509

from . import flows, submit
from ._base import ClientBase
from ._transport import ONE_CONNECTION, auth_retry_transport
from .driver import drive, send_request
from .issued import order_chain
from .models import CaCertsResult, CsrAttrsResult, CsrSpec, EnrollResult, ServerKeygenResult
from .responses import Reply
from .retry import Sleep
from .submit import PopMode

T = TypeVar("T")


class EstClient(ClientBase):
    """An EST client (RFC 7030 + RFC 8951) for one server URL and optional label.

    Trust is explicit: pass ``trust=`` (PEM path(s), certificates or :class:`TrustAnchors`) or
    ``use_system_trust=True``. Client authentication by ``credentials=`` (TLS client certificate)
    and/or ``username=``/``password=`` (answered only to a 401 challenge). ``sleep`` and ``clock``
    are injectable so tests never wait for real. Not thread-safe: use one client per thread.
    """

    def __init__(self, url: str, *, sleep: Sleep = time.sleep, **options: Any) -> None:
        super().__init__(url, **options)
        self._sleep = sleep
        # One connection, kept alive: the client sends one request at a time (it is not
        # thread-safe), so every operation on it, a proof-of-possession enrollment's linked
        # requests included, shares one TLS connection while the server keeps it open, and a
        # node enrolling several certificates does one handshake, not one per request (issue 23).
        self._http = httpx.Client(
            transport=auth_retry_transport(self._ssl_context, ONE_CONNECTION),
            **self._http_options(),
        )

    # --- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EstClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- operations ---------------------------------------------------------------------------

    def cacerts(self) -> CaCertsResult:
        """``GET /cacerts``: the CA certificates, classified (roots, rollover, intermediates)."""
        return self._run(flows.cacerts_flow(self.settings))

    def csrattrs(self) -> CsrAttrsResult:
        """``GET /csrattrs``: what the server wants in a CSR (empty when it has no wishes)."""
        return self._run(flows.csrattrs_flow(self.settings))

    def simpleenroll(
        self,
        request: x509.CertificateSigningRequest | CsrSpec,
        *,
        pop: PopMode = None,
        apply_csrattrs: bool = False,
        csrattrs: CsrAttrsResult | None = None,
    ) -> EnrollResult:
        """``POST /simpleenroll`` with a finished CSR or a :class:`CsrSpec` to build one from.

        ``pop``: True links the CSR to the TLS connection (RFC 7030 §3.5); None does so when the
        server's ``/csrattrs`` asks for it (spec only); False never does. ``apply_csrattrs``
        adjusts the spec to what ``/csrattrs`` asks for and reports what it cannot fulfil.
        ``csrattrs``: this server's ``/csrattrs`` answer, when already fetched (not asked again).
        """
        return self._run(self._enroll_flow(request, "simpleenroll", pop, apply_csrattrs, csrattrs))

    def simplereenroll(
        self,
        request: x509.CertificateSigningRequest | CsrSpec | None = None,
        *,
        pop: PopMode = None,
        reuse_key: bool = False,
        apply_csrattrs: bool = False,
        csrattrs: CsrAttrsResult | None = None,
    ) -> EnrollResult:
        """``POST /simplereenroll``, authenticated with the certificate being renewed.

        Without ``request`` the subject and SANs are copied from the client certificate and a new
        key of the same type is made (unless ``reuse_key``).
        """
        chosen = self._reenroll_request(request, reuse_key)
        return self._run(self._enroll_flow(chosen, "simplereenroll", pop, apply_csrattrs, csrattrs))

    def serverkeygen(
        self,
        spec: CsrSpec | None = None,
        *,
        common_name: str | None = None,
        dns_names: Sequence[str] = (),
        serial_number: str | None = None,
        encrypt_key: bool = False,
        pop: PopMode = None,
        apply_csrattrs: bool = False,
    ) -> ServerKeygenResult:
        """``POST /serverkeygen``: the server makes the key pair and returns key + certificate.

        ``encrypt_key`` asks for the key encrypted to the client certificate (RSA, or EC P-256,
        P-384 and P-521 by key agreement).
        """
        chosen = self._serverkeygen_spec(spec, common_name, dns_names, serial_number)
        return self._run(
            submit.serverkeygen_flow(
                self.settings,
                chosen,
                encrypt_key=encrypt_key,
                pop=pop,
                apply_attrs=apply_csrattrs,
            )
        )

    def chain_for(self, certificate: x509.Certificate) -> list[x509.Certificate]:
        """The issuer-first chain of ``certificate`` built from ``/cacerts``.

        For servers whose enrollment answer holds only the issued certificate (RFC 7030 allows
        that), so that a certificate file can carry the certificate followed by its chain.
        """
        result = self.cacerts()
        chain, _unused = order_chain(certificate, result.certificates)
        return chain

    # --- running flows ------------------------------------------------------------------------

    def _run(self, flow: flows.Flow[T]) -> T:
        # Proof-of-possession requests need one connection for the operation: the client's own
        # (it holds only one), or, once the flow asks for TLS 1.2, a one-connection client made
        # for this operation pinned to TLS 1.2 (see :mod:`.submit`). The flow checks that the
        # linked request really travelled on the connection it was linked to.
        dedicated: httpx.Client | None = None
        pinned = False

        def send(action: flows.Send) -> Reply:
            nonlocal dedicated
            http = self._http
            if action.dedicated and pinned:
                if dedicated is None:
                    dedicated = httpx.Client(
                        transport=auth_retry_transport(self._context(pinned), ONE_CONNECTION),
                        **self._http_options(),
                    )
                http = dedicated
            return self._send(http, action.request)

        def pin() -> None:
            nonlocal dedicated, pinned
            if dedicated is not None:
                dedicated.close()
                dedicated = None
            pinned = True

        try:
            return drive(flow, send, self._sleep, self.on_wait, pin)
        finally:
            if dedicated is not None:
                dedicated.close()

    def _send(self, http: httpx.Client, request: httpx.Request) -> Reply:
        return send_request(http, request, self._auth, self._trust_description)
