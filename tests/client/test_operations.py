"""The operations are declared once (``ClientBase``) and run two ways; the PoP connection choice.

Real TLS is exercised by the other client tests (test_async_parity runs every operation through
both clients against the estkit server); these pin what the single declaration promises: each
client has every operation, blocking or as a coroutine, with the documented signature, and the
one-connection choice for linked requests follows each client's rule.
"""

from __future__ import annotations

import inspect

import httpx
import pytest

from estkit.client import AsyncEstClient, EstClient
from estkit.client._base import ClientBase, OperationConnection, operation
from estkit.client.flows import Send

OPERATIONS = ("cacerts", "csrattrs", "simpleenroll", "simplereenroll", "serverkeygen", "chain_for")


def test_every_operation_is_declared_once_and_offered_by_both_clients() -> None:
    declared = {name for name, value in vars(ClientBase).items() if isinstance(value, operation)}
    assert declared == set(OPERATIONS)
    for name in OPERATIONS:
        assert name not in vars(EstClient) and name not in vars(AsyncEstClient), name


@pytest.mark.parametrize("name", OPERATIONS)
async def test_an_operation_is_blocking_on_estclient_and_a_coroutine_on_asyncestclient(
    name: str,
) -> None:
    build = getattr(ClientBase, f"_{name}")
    with EstClient("https://127.0.0.1:9", use_system_trust=True) as client:
        blocking = getattr(client, name)
        assert not inspect.iscoroutinefunction(blocking)
        documented = inspect.signature(blocking)
    async with AsyncEstClient("https://127.0.0.1:9", use_system_trust=True) as aclient:
        awaited = getattr(aclient, name)
        assert inspect.iscoroutinefunction(awaited)
        assert inspect.signature(awaited) == documented
    # The parameters of the flow builder, without ``self``: what help() shows.
    assert list(documented.parameters) == list(inspect.signature(build).parameters)[1:]
    assert blocking.__doc__ == awaited.__doc__ == build.__doc__
    assert blocking.__name__ == awaited.__name__ == name


async def test_an_operation_checks_its_arguments_when_run_not_when_declared() -> None:
    # Re-enrollment needs the client certificate: the same refusal from both clients, the
    # async one when awaited (as a coroutine method always did).
    refusal = "authenticates with the certificate being renewed"
    with (
        EstClient("https://127.0.0.1:9", use_system_trust=True) as client,
        pytest.raises(ValueError, match=refusal),
    ):
        client.simplereenroll()
    async with AsyncEstClient("https://127.0.0.1:9", use_system_trust=True) as aclient:
        pending = aclient.simplereenroll()
        with pytest.raises(ValueError, match=refusal):
            await pending


def _send(dedicated: bool) -> Send:
    return Send(httpx.Request("POST", "https://est.example/x"), dedicated)


def test_the_blocking_client_links_on_its_own_connection_until_pinned() -> None:
    made: list[bool] = []

    def make(pinned: bool) -> str:
        made.append(pinned)
        return f"own-{len(made)}"

    connection = OperationConnection("shared", make, own_when_unpinned=False)
    assert connection.client_for(_send(dedicated=True)) == "shared"
    assert connection.client_for(_send(dedicated=False)) == "shared"
    assert made == []
    assert connection.pin() is None
    assert connection.client_for(_send(dedicated=True)) == "own-1"
    assert connection.client_for(_send(dedicated=True)) == "own-1"  # one per operation
    assert connection.client_for(_send(dedicated=False)) == "shared"
    assert made == [True]  # made pinned to TLS 1.2
    assert connection.pin() == "own-1"  # handed back to be closed
    assert connection.own is None


def test_the_async_client_links_on_a_connection_of_the_operation_from_the_start() -> None:
    made: list[bool] = []

    def make(pinned: bool) -> str:
        made.append(pinned)
        return f"own-{len(made)}"

    connection = OperationConnection("pool", make, own_when_unpinned=True)
    assert connection.client_for(_send(dedicated=False)) == "pool"
    assert connection.client_for(_send(dedicated=True)) == "own-1"
    assert made == [False]
    assert connection.pin() == "own-1"
    assert connection.client_for(_send(dedicated=True)) == "own-2"
    assert made == [False, True]
    assert connection.own == "own-2"
