"""What `estkit server serve DIR` runs with no flags (issue 16): one worker per CPU, uvloop.

Why: the default is what users deploy and what the throughput goal is measured on, so the default
worker count and the event loop are asserted on the real `serve` process, not only on helpers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import uvloop

from estkit.server import runner
from estkit.server.datadir import init_data_dir
from estkit.server.runner import MAX_WORKERS, default_workers, new_event_loop, start_server_thread

SERVE_START_SECONDS = 60
WORKER_EXIT_SECONDS = 15


def test_default_workers_is_the_cpus_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0})
    assert default_workers() == 1  # a 1-core machine: no fork at all
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2})
    assert default_workers() == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(MAX_WORKERS + 50)))
    assert default_workers() == MAX_WORKERS


def test_the_event_loop_is_uvloop_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runner.EVENT_LOOP_ENV, raising=False)
    loop = new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    monkeypatch.setenv(runner.EVENT_LOOP_ENV, "asyncio")
    loop = new_event_loop()
    try:
        assert not isinstance(loop, uvloop.Loop) and isinstance(loop, asyncio.BaseEventLoop)
    finally:
        loop.close()


def test_without_uvloop_the_server_falls_back_to_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runner.EVENT_LOOP_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    loop = new_event_loop()
    try:
        assert type(loop).__module__.startswith("asyncio")
    finally:
        loop.close()


def test_the_test_server_thread_runs_the_same_loop_as_serve(tmp_path: Path) -> None:
    paths = init_data_dir(tmp_path / "data")
    with start_server_thread(paths.data_dir) as running:
        assert isinstance(running._loop, uvloop.Loop)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_serve_without_flags_runs_one_worker_per_cpu(tmp_path: Path) -> None:
    paths = init_data_dir(tmp_path / "data")
    server = subprocess.Popen(
        [sys.executable, "-m", "estkit.cli.main", "server", "serve", str(paths.data_dir),
         "--port", "0", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert server.stdout is not None
        ready = json.loads(server.stdout.readline())
        expected = default_workers()
        assert ready["workers"] == expected
        # One process per worker under the supervisor; on one CPU the supervisor serves itself.
        workers = _children(server.pid)
        assert len(workers) == (expected if expected > 1 else 0), workers
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=WORKER_EXIT_SECONDS)
        deadline = time.monotonic() + WORKER_EXIT_SECONDS
        while any(Path(f"/proc/{pid}").exists() for pid in workers) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.02)
        # Reaped by init or left as zombies: either way no worker runs on after its supervisor.
        running = [
            pid
            for pid in workers
            if Path(f"/proc/{pid}/stat").exists()
            and Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
        ]
        assert running == []
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=WORKER_EXIT_SECONDS)


def test_a_token_ca_defaults_to_one_worker(tmp_path: Path) -> None:
    """Several processes signing through one SoftHSM2 token intermittently lost connections
    (tests/ca/test_pkcs11.py's two-worker test is xfail for it): a CA whose keys are token URIs
    gets one worker unless more are asked for."""
    from estkit.server.runner import default_workers

    generation = tmp_path / "ca" / "generations" / "g1"
    generation.mkdir(parents=True)
    (generation / "root.pem").write_text("")
    assert default_workers(tmp_path) == default_workers()  # file keys: one per CPU
    (generation / "issuing.uri").write_text("pkcs11:token=t;object=k\n")
    assert default_workers(tmp_path) == 1
