"""The asyncio EST client: runs the shared flows over ``httpx.AsyncClient``.

The twin of :mod:`.sync`: the operations are written once in :class:`~._base.ClientBase` and
all decisions live in :mod:`.flows`; only the I/O calls differ (``await``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from . import flows
from ._base import ClientBase, OperationConnection
from ._transport import ONE_CONNECTION, async_auth_retry_transport
from .driver import drive_async, send_request_async
from .responses import Reply
from .retry import AsyncSleep

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

    # --- running flows ------------------------------------------------------------------------

    def _operation(self, build: Callable[..., flows.Flow[Any]]) -> Callable[..., Any]:
        async def run(*args: Any, **kwargs: Any) -> Any:
            return await self._run(build(self, *args, **kwargs))

        return run

    async def _run(self, flow: flows.Flow[T]) -> T:
        # The client's pool holds many connections (tasks share it), so every proof-of-possession
        # operation gets a one-connection client of its own for its linked requests.
        connection = OperationConnection(self._http, self._one_connection, own_when_unpinned=True)

        async def send(action: flows.Send) -> Reply:
            return await self._send(connection.client_for(action), action.request)

        async def pin() -> None:
            previous = connection.pin()
            if previous is not None:
                await previous.aclose()

        try:
            return await drive_async(flow, send, self._sleep, self.on_wait, pin)
        finally:
            if connection.own is not None:
                await connection.own.aclose()

    def _one_connection(self, pinned: bool) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=async_auth_retry_transport(self._context(pinned), ONE_CONNECTION),
            **self._http_options(),
        )

    async def _send(self, http: httpx.AsyncClient, request: httpx.Request) -> Reply:
        return await send_request_async(http, request, self._auth, self._trust_description)
