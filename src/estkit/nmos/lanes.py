"""Independent steps of one run done at once, one thread per lane, reported as if done in turn.

Why (issue 23): the NMOS workflow's RSA and ECDSA certificates (BCP-003-03 C7) do not depend on
each other. Done one after the other, the node sat idle while the server signed one request and
while an RSA key was still being made; in a thread each, one lane builds, checks and writes its
certificate while the other waits for the server or for its key.

What holds (docs/security.md, "Start-up speed"):

- a lane runs its own steps in order, in its own thread; a lane that fails does not stop the
  others, and :func:`run_lanes` returns every lane's exception, so none is lost;
- the events of all lanes reach the sink one at a time, in the order one thread doing the phases
  in turn would have produced them (:class:`OrderedEvents`): an event of a later phase waits
  until every earlier phase has finished. The output of a run does not depend on timing;
- what lanes share is safe for it: the node's connector keeps one HTTP client per thread, its
  loaded pairs and the key prefetch are locked, each slot's files are written atomically through
  their own temporary files, and hooks run one at a time.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Generic, TypeVar

E = TypeVar("E")

Lane = Callable[[], None]


class OrderedEvents(Generic[E]):
    """A sink in front of ``sink`` that passes events on in the order of ``phases``.

    Each lane runs its phases inside :meth:`phase`; events emitted by a thread outside any
    phase go straight through. A phase that will not run (its lane failed earlier) must be
    marked with :meth:`finish`, or the phases after it are held back until :meth:`flush`.
    """

    def __init__(self, sink: Callable[[E], None], phases: Sequence[Hashable]) -> None:
        self._sink = sink
        self._order = list(phases)
        self._held: dict[Hashable, list[E]] = {name: [] for name in self._order}
        self._finished: set[Hashable] = set()
        self._head = 0  # index in _order of the phase whose events go straight through
        self._lock = threading.Lock()
        self._local = threading.local()

    def __call__(self, event: E) -> None:
        current = getattr(self._local, "phase", None)
        with self._lock:
            if current in self._held and not self._is_head(current):
                self._held[current].append(event)
                return
            self._sink(event)

    def _is_head(self, name: Hashable) -> bool:
        return self._head < len(self._order) and self._order[self._head] == name

    @contextlib.contextmanager
    def phase(self, name: Hashable) -> Iterator[None]:
        """Events of this thread belong to phase ``name`` until the block ends (then it is
        finished, whether it succeeded or raised)."""
        self._local.phase = name
        try:
            yield
        finally:
            self._local.phase = None
            self.finish(name)

    def finish(self, *names: Hashable) -> None:
        """Mark phases finished (run or skipped); pass on what the next phases held back."""
        with self._lock:
            self._finished.update(names)
            while self._head < len(self._order) and self._order[self._head] in self._finished:
                self._head += 1
                if self._head < len(self._order):
                    self._pass_on(self._order[self._head])

    def flush(self) -> None:
        """Pass on everything still held, in phase order (the run is over)."""
        with self._lock:
            for name in self._order[self._head :]:
                self._pass_on(name)
            self._head = len(self._order)

    def _pass_on(self, name: Hashable) -> None:
        held, self._held[name] = self._held[name], []
        for event in held:
            self._sink(event)


def run_lanes(lanes: Sequence[Lane], *, at_once: bool = True) -> list[BaseException | None]:
    """Run each lane in a thread of its own and wait for all; each lane's exception (or None),
    in the order given. A single lane, or every lane when not ``at_once`` (what they share is
    not safe for threads), runs in the calling thread, one after the other.

    The threads are daemons: if the caller is interrupted while waiting (Ctrl-C), the process
    does not wait for an exchange in flight before it exits.
    """
    errors: list[BaseException | None] = [None] * len(lanes)
    caller = threading.current_thread()

    def run(index: int) -> None:
        try:
            lanes[index]()
        except Exception as exc:  # returned to the caller, who decides what to raise
            errors[index] = exc
        except BaseException as exc:
            if threading.current_thread() is caller:
                raise  # Ctrl-C in the caller's own thread: no further lane starts
            errors[index] = exc

    if len(lanes) == 1 or not at_once:
        for index in range(len(lanes)):
            run(index)
        return errors
    threads = [
        threading.Thread(target=run, args=(index,), name=f"estkit-lane-{index}", daemon=True)
        for index in range(len(lanes))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors
