"""KeyPrefetch (issue 23): keys made ahead in a thread are handed out once, in order, by type."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import estkit.nmos.prefetch
from estkit.nmos.prefetch import KeyPrefetch, workflow_key_types
from estkit.protocol.keys import generate_private_key


def test_keys_are_handed_out_once_by_type_and_extra_ones_made_on_the_spot() -> None:
    keys = KeyPrefetch(["rsa2048", "p256"])
    first_ec = keys.take("p256")
    first_rsa = keys.take("rsa2048")
    assert isinstance(first_ec, ec.EllipticCurvePrivateKey)
    assert isinstance(first_rsa, rsa.RSAPrivateKey) and first_rsa.key_size == 2048
    assert keys.pending == 0
    again = keys.take("p256")  # not announced: made now, and a different key
    assert again.private_numbers() != first_ec.private_numbers()
    keys.close()


def test_the_thread_makes_keys_while_the_caller_does_something_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Made in the background: the constructor returns before the key exists."""
    release = threading.Event()
    started = threading.Event()

    def slow(key_type: str) -> Any:
        started.set()
        assert release.wait(10)
        return generate_private_key(key_type)

    monkeypatch.setattr(estkit.nmos.prefetch, "generate_private_key", slow)
    keys = KeyPrefetch(["p256"])
    assert started.wait(10)  # running in the thread, while this test goes on
    release.set()
    assert isinstance(keys.take("p256"), ec.EllipticCurvePrivateKey)


def test_a_failure_reaches_the_caller_that_takes_that_key() -> None:
    keys = KeyPrefetch(["rsa-nonsense"])
    with pytest.raises(ValueError, match="unknown key type 'rsa-nonsense'"):
        keys.take("rsa-nonsense")


def test_close_drops_the_keys_not_taken_and_stops_making_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[str] = []
    gate, busy = threading.Event(), threading.Event()

    def gated(key_type: str) -> Any:
        busy.set()
        assert gate.wait(10)
        made.append(key_type)
        return generate_private_key(key_type)

    monkeypatch.setattr(estkit.nmos.prefetch, "generate_private_key", gated)
    keys = KeyPrefetch(["p256", "p256", "p256"])
    assert busy.wait(10)  # the first key is being made
    keys.close()
    gate.set()
    keys._thread.join(10)
    assert not keys._thread.is_alive()
    assert made == ["p256"]  # the one in progress when closed; not the two after it
    assert keys.pending == 0
    assert all(ahead.key is None for ahead in keys._queue)  # nothing kept
    assert isinstance(keys.take("p256"), ec.EllipticCurvePrivateKey)  # made on the spot


def test_workflow_key_types_come_cheapest_first_then_in_the_order_of_need() -> None:
    """The workflow enrolls its slots at once: the EC keys (microseconds) come first, so the ECDSA
    lane never waits behind an RSA key; the RSA keys in the order the RSA lane needs them."""
    assert workflow_key_types(("rsa2048", "p256"), renew=True) == [
        "p256",
        "p256",
        "rsa2048",
        "rsa2048",
    ]
    assert workflow_key_types(("rsa2048", "p256"), renew=False) == ["p256", "rsa2048"]
    assert workflow_key_types(("rsa3072", "p384", "rsa2048"), renew=False) == [
        "p384",
        "rsa3072",
        "rsa2048",
    ]


def test_hurry_makes_the_next_key_beside_a_slow_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow first key (a long prime search) no longer holds up the next: after hurry() a second
    thread makes it meanwhile. Without hurry the P-256 key would wait behind the gate."""
    gate = threading.Event()
    first = threading.Event()

    def slow_first(key_type: str) -> Any:
        if key_type == "rsa2048":
            first.set()
            assert gate.wait(10)
        return generate_private_key(key_type)

    monkeypatch.setattr(estkit.nmos.prefetch, "generate_private_key", slow_first)
    keys = KeyPrefetch(["rsa2048", "p256", "p384"])
    assert first.wait(10)  # the first thread is stuck on the RSA key
    assert keys.hurry() is True
    assert isinstance(keys.take("p256"), ec.EllipticCurvePrivateKey)  # made beside it
    assert isinstance(keys.take("p384"), ec.EllipticCurvePrivateKey)
    assert keys.hurry() is False  # nothing left to begin
    gate.set()
    assert isinstance(keys.take("rsa2048"), rsa.RSAPrivateKey)
    keys.close()
    assert keys.hurry() is False
    assert len(keys._threads) == estkit.nmos.prefetch.MAX_KEY_THREADS
