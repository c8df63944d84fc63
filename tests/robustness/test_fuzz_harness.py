"""A bounded run of the fuzz harness (``fuzz/``) in the test suite.

The long, coverage-guided run is ``python fuzz/fuzz_protocol.py``; here every target gets its
seeds, every saved crash input (``fuzz/regressions``) and a few hundred random and mutated inputs,
so a parser that starts raising an undocumented exception fails the suite, and the harness itself
is shown to detect a crash and to save the input.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
sys.path.insert(0, str(FUZZ_DIR))

import targets  # noqa: E402  (fuzz/targets.py)

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same inputs on every run: a failure here is reproducible
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.parametrize("name", list(targets.TARGETS))
def test_parser_survives_seeds_and_mutations(name: str) -> None:
    target = targets.TARGETS[name]
    seeds = targets.seeds(name)
    for seed in seeds:
        outcome = targets.check_input(target, seed)
        assert outcome.crash is None, f"seed crashed {name}: {outcome.crash!r}"

    @SETTINGS
    @given(
        seed=st.sampled_from(seeds),
        edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=6),
        cut=st.none() | st.integers(0, 1 << 16),
        noise=st.binary(max_size=512),
        use_noise=st.booleans(),
    )
    def mutated(seed: bytes, edits: list, cut: int | None, noise: bytes, use_noise: bool) -> None:
        data = bytearray(noise if use_noise or not seed else seed)
        for position, value in edits:
            if data:
                data[position % len(data)] = value
        if cut is not None:
            data = data[: cut % (len(data) + 1)]
        outcome = targets.check_input(target, bytes(data))
        assert outcome.crash is None, f"{name} crashed on {bytes(data)[:80]!r}: {outcome.crash!r}"

    mutated()


@pytest.mark.parametrize(
    "path",
    [pytest.param(path, id=path.name) for path in sorted((FUZZ_DIR / "regressions").glob("*.bin"))],
)
def test_saved_crash_inputs_no_longer_crash(path: Path) -> None:
    """Every input that once crashed a parser must now return or raise a documented error."""
    name = next(n for n in targets.TARGETS if path.name.startswith(f"{n}-"))
    outcome = targets.check_input(targets.TARGETS[name], path.read_bytes())
    assert outcome.crash is None, f"{path.name}: {outcome.crash!r}"


def test_harness_detects_and_saves_a_crash(tmp_path: Path) -> None:
    """A parser raising an undocumented exception is counted once per signature and saved."""
    import fuzz_protocol

    broken = targets.Target("broken", lambda data: {}[data])  # KeyError: not documented
    summary = fuzz_protocol.Summary("broken", "test")
    recorder = fuzz_protocol.Recorder(summary, tmp_path, None)
    for data in (b"first", b"second", b"first"):
        recorder.record(data, targets.check_input(broken, data).crash)
    healthy = targets.TARGETS["parse_media_type"]
    recorder.record(b"text/plain", targets.check_input(healthy, b"text/plain").crash)
    assert (summary.inputs, summary.crashes) == (4, 3)
    assert len(summary.signatures) == 1
    assert next(iter(summary.signatures)).startswith("KeyError at ")
    saved = list(tmp_path.glob("broken-*.bin"))
    assert [path.read_bytes() for path in saved] == [b"first"]


def test_driver_prints_inputs_tried_and_crashes(tmp_path: Path) -> None:
    """The command-line driver (hypothesis engine, as when atheris is missing), end to end."""
    result = subprocess.run(
        [sys.executable, str(FUZZ_DIR / "fuzz_protocol.py"), "--engine", "hypothesis",
         "--seconds", "1", "--target", "parse_media_type", "--target", "parse_retry_after",
         "--crash-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    total = next(line for line in result.stdout.splitlines() if line.startswith("total:"))
    assert int(total.split()[1]) > 0 and "0 crashing inputs" in total
    assert "parse_media_type" in result.stdout and "parse_retry_after" in result.stdout
