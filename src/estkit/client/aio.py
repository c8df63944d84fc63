"""The asyncio EST client: runs the shared flows over ``httpx.AsyncClient``.

A line-by-line twin of :mod:`.sync`; only ``await`` differs, all decisions live in :mod:`.flows`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, TypeVar

import httpx
from cryptography import x509

from . import flows, submit
from ._base import ClientBase
from ._transport import ONE_CONNECTION, async_auth_retry_transport
from .driver import drive_async, send_request_async
from .issued import order_chain
from .models import CaCertsResult, CsrAttrsResult, CsrSpec, EnrollResult, ServerKeygenResult
from .responses import Reply
from .retry import AsyncSleep
from .submit import PopMode

T = TypeVar("T")


class AsyncEstClient(ClientBase):
    """The asyncio twin of :class:`~estkit.client.EstClient`, with the same arguments.

    Trust is explicit: pass ``trust=`` (PEM path(s), certificates or :class:`TrustAnchors`) or
    ``use_system_trust=True``. Client authentication by ``credentials=`` (TLS client certificate)
    and/or ``username=``/``password=`` (answered only to a 401 challenge). ``sleep`` and ``clock``
    are injectable so tests never wait for real. Safe to share between tasks.
    """

    def __init__(self, url: str, *, sleep: AsyncSleep = asyncio.sleep, **options: Any) -> None:
        super().__init__(url, **options)
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            transport=async_auth_retry_transport(self._ssl_context),
            **self._http_options(),
        )

    # --- lifecycle ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncEstClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- operations ---------------------------------------------------------------------------

    async def cacerts(self) -> CaCertsResult:
        """``GET /cacerts``: the CA certificates, classified (roots, rollover, intermediates)."""
        return await self._run(flows.cacerts_flow(self.settings))

    async def csrattrs(self) -> CsrAttrsResult:
        """``GET /csrattrs``: what the server wants in a CSR (empty when it has no wishes)."""
        return await self._run(flows.csrattrs_flow(self.settings))

    async def simpleenroll(
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
        return await self._run(
            self._enroll_flow(request, "simpleenroll", pop, apply_csrattrs, csrattrs)
        )

    async def simplereenroll(
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
        return await self._run(
            self._enroll_flow(chosen, "simplereenroll", pop, apply_csrattrs, csrattrs)
        )

    async def serverkeygen(
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
        return await self._run(
            submit.serverkeygen_flow(
                self.settings,
                chosen,
                encrypt_key=encrypt_key,
                pop=pop,
                apply_attrs=apply_csrattrs,
            )
        )

    async def chain_for(self, certificate: x509.Certificate) -> list[x509.Certificate]:
        """The issuer-first chain of ``certificate`` built from ``/cacerts``.

        For servers whose enrollment answer holds only the issued certificate (RFC 7030 allows
        that), so that a certificate file can carry the certificate followed by its chain.
        """
        result = await self.cacerts()
        chain, _unused = order_chain(certificate, result.certificates)
        return chain

    # --- running flows ------------------------------------------------------------------------

    async def _run(self, flow: flows.Flow[T]) -> T:
        dedicated: httpx.AsyncClient | None = None
        pinned = False

        async def send(action: flows.Send) -> Reply:
            nonlocal dedicated
            http = self._http
            if action.dedicated:
                if dedicated is None:
                    dedicated = httpx.AsyncClient(
                        transport=async_auth_retry_transport(self._context(pinned), ONE_CONNECTION),
                        **self._http_options(),
                    )
                http = dedicated
            return await self._send(http, action.request)

        async def pin() -> None:
            nonlocal dedicated, pinned
            if dedicated is not None:
                await dedicated.aclose()
                dedicated = None
            pinned = True

        try:
            return await drive_async(flow, send, self._sleep, self.on_wait, pin)
        finally:
            if dedicated is not None:
                await dedicated.aclose()

    async def _send(self, http: httpx.AsyncClient, request: httpx.Request) -> Reply:
        return await send_request_async(http, request, self._auth, self._trust_description)
