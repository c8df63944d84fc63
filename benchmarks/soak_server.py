"""Server side of ``soak.py``: `estkit server serve` subprocesses, their RSS, and their store.

Why subprocesses: RSS must be the server's own memory, read from ``/proc/PID/status`` (VmRSS),
not the load generator's; and "two instances" means two processes on one database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from estkit.server.config import load_config, save_config

START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
_BANNER = re.compile(r"listening on https://(?:127\.0\.0\.1|localhost):(\d+)")


def rss_kib(pid: int) -> int | None:
    """Resident set size of ``pid`` in KiB (VmRSS), or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


@dataclass
class ServerProcess:
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, log_level: str) -> ServerProcess:
        env = dict(os.environ, COLUMNS="200", PYTHONUNBUFFERED="1")
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "estkit.cli.main", "server", "serve", str(self.data_dir),
                 "--host", "127.0.0.1", "--port", "0", "--log-level", log_level],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            match = _BANNER.search(self.log_path.read_text(errors="replace"))
            if match:
                self.port = int(match.group(1))
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the server did not start:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def running_servers(
    data_dir: Path, count: int, log_dir: Path, log_level: str
) -> Iterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    try:
        for index in range(count):
            servers.append(
                ServerProcess(data_dir, log_dir / f"server-{index}.log").start(log_level)
            )
        yield servers
    finally:
        for server in servers:
            server.stop()


def use_store(data_dir: Path, database_url: str) -> None:
    """Point the data directory's configuration at ``database_url`` (a fresh store per run)."""
    config = load_config(data_dir)
    save_config(dataclasses.replace(config, database_url=database_url))


# ------------------------------------------------------------------------------------------------
# RSS sampling


@dataclass
class RssSampler:
    """Samples every server's VmRSS every ``interval`` seconds in a background thread."""

    pids: list[int]
    interval: float
    samples: list[tuple[float, list[int | None]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        started = time.perf_counter()

        def run() -> None:
            while not self._stop.is_set():
                self.samples.append(
                    (time.perf_counter() - started, [rss_kib(p) for p in self.pids])
                )
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def series_mib(self, index: int) -> list[tuple[float, float]]:
        return [
            (at, values[index] / 1024) for at, values in self.samples if values[index] is not None
        ]
