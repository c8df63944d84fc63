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


class _Factory:
    """Stands for a client's one-connection factory: names what it makes, records ``pinned``."""

    def __init__(self) -> None:
        self.made: list[bool] = []

    def __call__(self, pinned: bool) -> str:
        self.made.append(pinned)
        return f"own-{len(self.made)}"


def _send(dedicated: bool) -> Send:
    return Send(httpx.Request("POST", "https://est.example/x"), dedicated)


# Steps of one operation and what each returns: a linked (Send.dedicated) or a plain request
# gets the client it is sent on; "pin" (TLS 1.2 from now on) hands back the client to close.
# The blocking client holds one connection, used for linked requests until the flow pins TLS
# 1.2; the async client's pool holds many, so linked requests get the operation's own at once.
_BLOCKING_RULE = [
    ("linked", "shared"),
    ("plain", "shared"),
    ("pin", None),
    ("linked", "own-1"),
    ("linked", "own-1"),  # one per operation
    ("plain", "shared"),
    ("pin", "own-1"),
]
_ASYNC_RULE = [("plain", "shared"), ("linked", "own-1"), ("pin", "own-1"), ("linked", "own-2")]


@pytest.mark.parametrize(
    ("own_when_unpinned", "steps", "made_pinned"),
    [(False, _BLOCKING_RULE, [True]), (True, _ASYNC_RULE, [False, True])],
    ids=["blocking", "async"],
)
def test_linked_requests_go_on_one_connection_of_the_operation(
    own_when_unpinned: bool, steps: list[tuple[str, str | None]], made_pinned: list[bool]
) -> None:
    make = _Factory()
    connection = OperationConnection("shared", make, own_when_unpinned=own_when_unpinned)
    for step, expected in steps:
        got = connection.pin() if step == "pin" else connection.client_for(_send(step == "linked"))
        assert got == expected, (step, expected)
    assert make.made == made_pinned  # each made once, pinned to TLS 1.2 when made after "pin"
