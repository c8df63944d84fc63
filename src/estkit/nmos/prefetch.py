"""New key pairs made ahead of need, in a background thread (issue 23).

Why: ``estkit nmos workflow`` makes two RSA-2048 keys (the enrollment's and the renewal's), each
40-150 ms of CPU on a 2-core machine, and made each at the moment it needed it while the rest of
the process waited. cryptography releases the GIL while it generates a key, so a thread started at
the beginning of the command makes them while the main thread imports the node's modules, fetches
``/cacerts`` and waits for the server. They are the same keys, made by the same function
(:func:`estkit.protocol.keys.generate_private_key`), and the node still decides alone what to do
with each; only *when* a key is made changes. The number of keys does not change: one per
enrollment and one per renewal, as the prototype makes.

What holds (docs/security.md, "Start-up speed"):

- each key is handed out once, to the first :meth:`KeyPrefetch.take` asking for its type, and this
  object keeps no reference to it afterwards; nothing is written anywhere by this module;
- a type nobody announced (or more keys of a type than announced) is generated on the spot;
- a generation failure reaches the caller that takes that key, as an exception from ``take``;
- :meth:`KeyPrefetch.close` drops the keys never taken and stops the thread before it makes the
  next one; the thread is a daemon, so a command failing early does not wait for it.

RSA key generation is a search for primes: usually 30-60 ms per RSA-2048 key here, sometimes
several times that. When the caller has finished its own CPU-bound start-up (the workflow, once
its modules are loaded), :meth:`KeyPrefetch.hurry` starts a second thread for the keys not begun
yet, so a slow first key no longer delays the next one as well.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

from estkit.protocol.keys import PrivateKey, generate_private_key

# Threads making keys at most: the first from the start, a second once the caller hurries. More
# would only compete for a 2-core machine's cores with the enrollments waiting for them.
MAX_KEY_THREADS = 2


class _Ahead:
    """One key being made ahead: its type, then the key or the error."""

    __slots__ = ("done", "error", "key", "key_type")

    def __init__(self, key_type: str) -> None:
        self.key_type = key_type
        self.done = threading.Event()
        self.key: PrivateKey | None = None
        self.error: BaseException | None = None


class KeyPrefetch:
    """Generate keys of ``key_types``, in that order, in a background thread; :meth:`take` hands
    them out (use it where :func:`generate_private_key` was called)."""

    def __init__(self, key_types: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._queue = [_Ahead(key_type) for key_type in key_types]
        self._by_type: dict[str, deque[_Ahead]] = {}
        for ahead in self._queue:
            self._by_type.setdefault(ahead.key_type, deque()).append(ahead)
        self._next = 0  # index in _queue of the next key to begin
        self._threads: list[threading.Thread] = []
        self._thread = self._start_thread()

    def _start_thread(self) -> threading.Thread:
        name = f"estkit-key-prefetch-{len(self._threads)}"
        thread = threading.Thread(target=self._generate, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    def _generate(self) -> None:
        while True:
            with self._lock:
                if self._closed or self._next >= len(self._queue):
                    return
                ahead = self._queue[self._next]
                self._next += 1
            try:
                key: PrivateKey | None = generate_private_key(ahead.key_type)
            except BaseException as exc:  # handed to the caller of take(), not lost here
                key, ahead.error = None, exc
            with self._lock:
                # Closed while it was being made: nobody will take it, so it is not kept.
                ahead.key = None if self._closed else key
            ahead.done.set()

    def hurry(self) -> bool:
        """Start another thread (up to :data:`MAX_KEY_THREADS`) for the keys not begun yet, if
        any; True when one was started. For a caller whose own CPU-bound work is over."""
        with self._lock:
            if (
                self._closed
                or self._next >= len(self._queue)
                or len(self._threads) >= MAX_KEY_THREADS
            ):
                return False
            self._start_thread()
        return True

    def take(self, key_type: str) -> PrivateKey:
        """A new key of ``key_type``: the next one made ahead, else one made now."""
        with self._lock:
            waiting = self._by_type.get(key_type)
            ahead = waiting.popleft() if waiting and not self._closed else None
        if ahead is None:
            return generate_private_key(key_type)
        ahead.done.wait()
        key, error = ahead.key, ahead.error
        ahead.key = ahead.error = None  # handed out once: no reference stays here
        if error is not None:
            raise error
        assert key is not None
        return key

    def close(self) -> None:
        """Drop the keys not taken; the thread makes no further key."""
        with self._lock:
            self._closed = True
            for waiting in self._by_type.values():
                for ahead in waiting:
                    ahead.key = None
                waiting.clear()

    @property
    def pending(self) -> int:
        """How many announced keys are still to be taken (for tests and diagnostics)."""
        with self._lock:
            return sum(len(waiting) for waiting in self._by_type.values())


def workflow_key_types(key_types: Iterable[str], *, renew: bool) -> list[str]:
    """The keys :func:`estkit.nmos.workflow.run_workflow` needs, in the order they are made: one
    per slot for the enrollments, then (when renewing) one more per slot for the renewals, the
    elliptic-curve keys first. They take microseconds, and the workflow enrolls its slots at
    once: the ECDSA enrollment must not wait behind an RSA key made for the other lane."""
    once = list(key_types)
    wanted = once * 2 if renew else once
    return sorted(wanted, key=lambda key_type: key_type.startswith("rsa"))
