"""The blocking EST client: runs the shared flows over ``httpx.Client``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from . import flows
from ._base import ClientBase, OperationConnection
from ._transport import ONE_CONNECTION, auth_retry_transport
from .driver import drive, send_request
from .responses import Reply
from .retry import Sleep

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

    # --- running flows ------------------------------------------------------------------------

    def _operation(self, build: Callable[..., flows.Flow[Any]]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            return self._run(build(self, *args, **kwargs))

        return run

    def _run(self, flow: flows.Flow[T]) -> T:
        # The client's own connection serves proof-of-possession requests until the flow pins
        # TLS 1.2 (it holds one connection only).
        connection = OperationConnection(self._http, self._one_connection, own_when_unpinned=False)

        def pin() -> None:
            previous = connection.pin()
            if previous is not None:
                previous.close()

        try:
            return drive(
                flow,
                lambda action: self._send(connection.client_for(action), action.request),
                self._sleep,
                self.on_wait,
                pin,
            )
        finally:
            if connection.own is not None:
                connection.own.close()

    def _one_connection(self, pinned: bool) -> httpx.Client:
        return httpx.Client(
            transport=auth_retry_transport(self._context(pinned), ONE_CONNECTION),
            **self._http_options(),
        )

    def _send(self, http: httpx.Client, request: httpx.Request) -> Reply:
        return send_request(http, request, self._auth, self._trust_description)
