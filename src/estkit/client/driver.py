"""Carrying out flows: the only place where requests are sent and waits are slept.

Why one module for both transports: :mod:`.flows` and :mod:`.submit` decide everything; what is
left is a loop that sends, sleeps and resumes. It is written once, with ``await``; the blocking
driver runs it with plain calls in place of the awaited steps. The EST clients and the bootstrap
functions all run their flows through it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

from ._transport import CHANNEL_BINDING, BodyCollector, tls_facts, translate_transport_error
from .deadline import async_overall_deadline, overall_deadline
from .errors import EstError
from .flows import Flow, PinTls12, Send, Wait
from .responses import Reply
from .retry import AsyncSleep, Sleep, WaitCallback

T = TypeVar("T")


def _no_pinning() -> None:
    raise AssertionError("this flow does not pin TLS versions")  # pragma: no cover


def drive(
    flow: Flow[T],
    send: Callable[[Send], Reply],
    sleep: Sleep,
    on_wait: WaitCallback | None,
    pin: Callable[[], None] = _no_pinning,
) -> T:
    """Run ``flow`` to its result, blocking: the one loop of :func:`drive_async`, whose awaits
    are plain calls here, so it runs to its end without an event loop (and without asyncio)."""

    async def send_now(action: Send) -> Reply:
        return send(action)

    async def sleep_now(seconds: float) -> None:
        sleep(seconds)

    async def pin_now() -> None:
        pin()

    loop = drive_async(flow, send_now, sleep_now, on_wait, pin_now)
    try:
        loop.send(None)
    except StopIteration as stop:
        result: T = stop.value  # the loop's return value (StopIteration is not generic)
        return result
    loop.close()  # pragma: no cover - nothing above awaits anything that suspends
    raise AssertionError("a blocking flow step suspended")  # pragma: no cover


async def drive_async(
    flow: Flow[T],
    send: Callable[[Send], Awaitable[Reply]],
    sleep: AsyncSleep,
    on_wait: WaitCallback | None,
    pin: Callable[[], Awaitable[None]] | None = None,
) -> T:
    """Run ``flow`` to its result with ``await``; :func:`drive` runs this same loop blocking."""
    try:
        action = next(flow)
        while True:
            if isinstance(action, Send):
                try:
                    reply = await send(action)
                except EstError as exc:
                    # The flow may know better what the failure means (a TLS 1.2 refusal while
                    # pinned for proof-of-possession); if it does not, it re-raises.
                    action = flow.throw(exc)
                    continue
                action = flow.send(reply)
            elif isinstance(action, Wait):
                if on_wait is not None:
                    on_wait(action.attempt, action.seconds, action.reason)
                await sleep(action.seconds)
                action = flow.send(None)
            elif isinstance(action, PinTls12):
                if pin is None:
                    _no_pinning()
                else:
                    await pin()
                action = flow.send(None)
            else:  # pragma: no cover - the Action union is closed
                raise AssertionError(f"unknown flow action {action!r}")
    except StopIteration as stop:
        result: T = stop.value  # the flow's return value (StopIteration is not generic)
        return result
    finally:
        flow.close()


def _wants_binding(request: httpx.Request) -> bool:
    return bool(request.extensions.get(CHANNEL_BINDING))


def send_request(
    http: httpx.Client, request: httpx.Request, auth: httpx.Auth | None, trust: str
) -> Reply:
    """One exchange, body bounded, TLS facts taken before the body can end the connection.

    The client's timeout is the deadline of the whole exchange, not of each read (see
    :mod:`.deadline`): a server trickling its body cannot hold the caller past it.
    """
    collector = BodyCollector(request)
    try:
        with overall_deadline(http):
            response = http.send(request, auth=auth, stream=True)
            try:
                facts = tls_facts(response, channel_binding=_wants_binding(request))
                for chunk in response.iter_bytes():
                    collector.add(chunk)
                return collector.reply(response, facts)
            finally:
                response.close()
    except httpx.HTTPError as exc:
        raise translate_transport_error(exc, request, trust) from exc


async def send_request_async(
    http: httpx.AsyncClient, request: httpx.Request, auth: httpx.Auth | None, trust: str
) -> Reply:
    """The ``await`` form of :func:`send_request`."""
    collector = BodyCollector(request)
    try:
        async with async_overall_deadline(http):
            response = await http.send(request, auth=auth, stream=True)
            try:
                facts = tls_facts(response, channel_binding=_wants_binding(request))
                async for chunk in response.aiter_bytes():
                    collector.add(chunk)
                return collector.reply(response, facts)
            finally:
                await response.aclose()
    except httpx.HTTPError as exc:
        raise translate_transport_error(exc, request, trust) from exc
