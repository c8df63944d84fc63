"""Injectable time for the node: what "now" is and how to wait.

Why: renewal happens at 80% of a 90-day lifetime, and retries back off over hours. Tests (and a
vendor's own tests) must run months of that in milliseconds, so nothing in ``estkit.nmos`` calls
``datetime.now`` or ``time.sleep`` directly; it asks a :class:`Clock`.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """The two things the node needs from time."""

    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (or less, if :meth:`wake` is called meanwhile)."""
        ...

    def wake(self) -> None:
        """Cut a running :meth:`sleep` short (used to stop the agent on SIGTERM)."""
        ...


class SystemClock:
    """Real time; :meth:`sleep` is interruptible so SIGTERM never waits out a long renewal delay."""

    def __init__(self) -> None:
        self._wakeup = threading.Event()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._wakeup.wait(seconds)
        self._wakeup.clear()

    def wake(self) -> None:
        self._wakeup.set()


class ManualClock:
    """A clock that moves only when told to, or when someone sleeps on it.

    ``sleep`` advances time instantly and records the requested delay in :attr:`sleeps`, so a test
    can assert the exact backoff sequence (1 s, 2 s, 4 s, ...) without waiting for it.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(UTC)
        if self._now.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start time")
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self._now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(seconds, 0.0))

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)

    def set(self, when: datetime) -> None:
        self._now = when

    def wake(self) -> None:
        """Nothing to interrupt: sleeping on a manual clock never blocks."""
