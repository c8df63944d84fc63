#!/usr/bin/env python3
"""Long-running fuzzing of every parser in ``estkit.protocol``; prints inputs tried and crashes.

    pip install atheris            # optional: coverage-guided (libFuzzer) engine
    python fuzz/fuzz_protocol.py                       # every target, 20 s each
    python fuzz/fuzz_protocol.py --seconds 120 --target decode_csrattrs
    python fuzz/fuzz_protocol.py --engine hypothesis   # no atheris: random + mutated seeds

Engines: ``atheris`` (coverage-guided: libFuzzer mutates inputs that reach new branches of our
Python code and of asn1crypto, both instrumented) when it is installed, else ``hypothesis``
(random bytes and mutations of valid seeds, not coverage-guided). Each target runs in its own
process for atheris, because libFuzzer can run only once per process.

A "crash" is any exception a parser is not documented to raise (see ``fuzz/targets.py``). Every
crashing input is saved under ``--crash-dir`` (default ``fuzz/crashes``) as ``TARGET-SHA1.bin``;
replay one with ``--replay FILE --target NAME``. Exit status: 0 no crash, 1 crashes found,
2 a target hung or its fuzzing process died, 3 a target ran no input at all.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_SECONDS_PER_TARGET = 20.0
DEFAULT_CRASH_DIR = HERE / "crashes"
DEFAULT_CORPUS_DIR = HERE / "corpus"
# libFuzzer: an input running longer than this is reported as a hang (parsers take microseconds).
PER_INPUT_TIMEOUT_SECONDS = 10
# libFuzzer: stop if the process grows past this (a parser allocating without bound).
RSS_LIMIT_MB = 2048
# Largest input libFuzzer builds; the server's body limit is 64 KiB, most bugs show far below.
MAX_LEN_BYTES = 16 * 1024
# How often (seconds) a fuzzing child rewrites its summary file, so a killed child still reports.
SUMMARY_INTERVAL_SECONDS = 1.0
HYPOTHESIS_BATCH_EXAMPLES = 500
# Distinct crash signatures kept per target (the first input of each is saved).
MAX_CRASH_SIGNATURES = 50


@dataclass
class Summary:
    """What one target's run did (written as JSON by the fuzzing child, read by the parent)."""

    target: str
    engine: str
    inputs: int = 0
    seconds: float = 0.0
    crashes: int = 0
    signatures: dict[str, str] = field(default_factory=dict)  # signature -> saved file
    coverage: str = ""
    note: str = ""

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Summary:
        return cls(**json.loads(path.read_text()))


def _signature(exc: BaseException) -> str:
    """Exception type plus the innermost frame, so one bug counts once however often it fires."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    return f"{type(exc).__name__} at {where}"


class Recorder:
    """Counts inputs and saves crashing ones; shared by both engines."""

    def __init__(self, summary: Summary, crash_dir: Path, summary_path: Path | None) -> None:
        self.summary = summary
        self.crash_dir = crash_dir
        self.summary_path = summary_path
        self.started = time.monotonic()
        self._last_save = 0.0

    def record(self, data: bytes, crash: BaseException | None) -> None:
        self.summary.inputs += 1
        if crash is not None:
            self.summary.crashes += 1
            signature = _signature(crash)
            if (
                signature not in self.summary.signatures
                and len(self.summary.signatures) < MAX_CRASH_SIGNATURES
            ):
                self.crash_dir.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha1(data).hexdigest()[:16]
                path = self.crash_dir / f"{self.summary.target}-{digest}.bin"
                path.write_bytes(data)
                self.summary.signatures[signature] = str(path)
                print(
                    f"CRASH {self.summary.target}: {signature}: {crash!r:.200} -> {path}",
                    file=sys.stderr,
                    flush=True,
                )
        now = time.monotonic()
        if self.summary_path is not None and now - self._last_save >= SUMMARY_INTERVAL_SECONDS:
            self.flush()

    def flush(self) -> None:
        self.summary.seconds = round(time.monotonic() - self.started, 2)
        if self.summary_path is not None:
            self.summary.save(self.summary_path)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


# ------------------------------------------------------------------------------------------------
# atheris engine (one child process per target)


def _atheris_child(
    name: str, seconds: float, crash_dir: Path, corpus_root: Path, summary_path: Path
) -> None:
    import atheris

    crash_dir.mkdir(parents=True, exist_ok=True)
    # Instrument our parsers and the pure-Python ASN.1 library they use, so libFuzzer sees
    # which branches an input reached (cryptography's Rust parsers are not instrumentable here).
    with atheris.instrument_imports(include=["estkit", "asn1crypto"]):
        sys.path.insert(0, str(HERE))
        import targets

    target = targets.TARGETS[name]
    recorder = Recorder(Summary(name, "atheris"), crash_dir, summary_path)
    corpus = corpus_root / name
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for index, seed in enumerate(targets.seeds(name)):
            (corpus / f"seed-{index}").write_bytes(seed)

    def one_input(data: bytes) -> None:
        recorder.record(data, targets.check_input(target, data).crash)
        if recorder.elapsed() >= seconds:
            recorder.flush()
            os._exit(0)  # libFuzzer never returns; leave with the summary written

    atheris.Setup(
        [
            sys.argv[0],
            str(corpus),
            f"-timeout={PER_INPUT_TIMEOUT_SECONDS}",
            f"-rss_limit_mb={RSS_LIMIT_MB}",
            f"-max_len={MAX_LEN_BYTES}",
            f"-artifact_prefix={crash_dir}/{name}-libfuzzer-",
            "-print_final_stats=1",
        ],
        one_input,
    )
    recorder.flush()
    atheris.Fuzz()


_COVERAGE = re.compile(r"cov: (\d+) ft: (\d+)")


def _run_atheris(name: str, seconds: float, crash_dir: Path, corpus_root: Path) -> Summary:
    crash_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="estkit-fuzz-") as tmp:
        summary_path = Path(tmp) / "summary.json"
        log_path = Path(tmp) / "libfuzzer.log"
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            name,
            "--seconds",
            str(seconds),
            "--crash-dir",
            str(crash_dir),
            "--corpus-dir",
            str(corpus_root),
            "--summary",
            str(summary_path),
        ]
        with log_path.open("wb") as log:
            process = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, timeout=seconds + 120
            )
        output = log_path.read_text(errors="replace")
        summary = Summary.load(summary_path) if summary_path.exists() else Summary(name, "atheris")
        found = _COVERAGE.findall(output)
        if found:
            summary.coverage = f"cov {found[-1][0]} / ft {found[-1][1]}"
        if process.returncode != 0:
            # libFuzzer stopped on its own: a hang (-timeout), out-of-memory, or a hard crash.
            reason = next(
                (
                    line
                    for line in output.splitlines()
                    if "ERROR: libFuzzer" in line or "ALARM" in line
                ),
                f"exit status {process.returncode}",
            )
            summary.note = reason.strip()[:200]
        for line in output.splitlines():
            if line.startswith("CRASH "):
                print(line, flush=True)
        return summary


# ------------------------------------------------------------------------------------------------
# hypothesis engine (in process)


def _run_hypothesis(name: str, seconds: float, crash_dir: Path) -> Summary:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    sys.path.insert(0, str(HERE))
    import targets

    target = targets.TARGETS[name]
    recorder = Recorder(Summary(name, "hypothesis"), crash_dir, None)
    seed_inputs = targets.seeds(name)

    def mutate(seed: bytes, edits: list[tuple[int, int]], cut: int | None, insert: bytes) -> bytes:
        data = bytearray(seed or b"\0")
        for position, value in edits:
            data[position % len(data)] = value
        if cut is not None:
            data = data[: cut % (len(data) + 1)]
        position = (edits[0][0] if edits else 0) % (len(data) + 1)
        return bytes(data[:position] + insert + data[position:])

    inputs = st.one_of(
        st.binary(max_size=4096),
        st.builds(
            mutate,
            st.sampled_from(seed_inputs),
            st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=8),
            st.none() | st.integers(0, 1 << 16),
            st.binary(max_size=64),
        ),
        st.text(max_size=256).map(lambda text: text.encode("utf-8")),
    )

    @settings(
        max_examples=HYPOTHESIS_BATCH_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(data=inputs)
    def batch(data: bytes) -> None:
        recorder.record(data, targets.check_input(target, data).crash)

    while recorder.elapsed() < seconds:
        batch()
    recorder.flush()
    recorder.summary.coverage = "n/a (not coverage-guided)"
    return recorder.summary


# ------------------------------------------------------------------------------------------------
# command line


def _atheris_available() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def _print_table(summaries: list[Summary]) -> None:
    header = (
        f"{'target':30} {'engine':10} {'inputs':>10} {'inputs/s':>9} {'crashes':>8} "
        f"{'unique':>6}  coverage"
    )
    print(header)
    print("-" * len(header))
    for s in summaries:
        rate = s.inputs / s.seconds if s.seconds else 0.0
        print(
            f"{s.target:30} {s.engine:10} {s.inputs:>10} {rate:>9.0f} {s.crashes:>8} "
            f"{len(s.signatures):>6}  {s.coverage}{'  ' + s.note if s.note else ''}"
        )
        for signature, path in s.signatures.items():
            print(f"    {signature}  ->  {path}")
    total_inputs = sum(s.inputs for s in summaries)
    total_crashes = sum(s.crashes for s in summaries)
    print("-" * len(header))
    print(
        f"total: {total_inputs} inputs tried, {total_crashes} crashing inputs, "
        f"{sum(len(s.signatures) for s in summaries)} distinct crashes"
    )


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(HERE))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    parser.add_argument(
        "--seconds",
        type=float,
        default=DEFAULT_SECONDS_PER_TARGET,
        help="fuzzing time per target (default %(default)s)",
    )
    parser.add_argument("--target", action="append", help="only these targets (repeatable)")
    parser.add_argument("--crash-dir", type=Path, default=DEFAULT_CRASH_DIR)
    parser.add_argument("--corpus-dir", type=Path, default=DEFAULT_CORPUS_DIR)
    parser.add_argument("--replay", type=Path, help="run one saved input and show the outcome")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--summary", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        # Before anything imports estkit: instrumentation only applies to modules imported
        # inside atheris.instrument_imports().
        _atheris_child(args.child, args.seconds, args.crash_dir, args.corpus_dir, args.summary)
        return 0
    import targets

    if args.list:
        print("\n".join(targets.TARGETS))
        return 0
    names = args.target or list(targets.TARGETS)
    unknown = [name for name in names if name not in targets.TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; see --list")
    if args.replay:
        if len(names) != 1:
            parser.error("--replay needs exactly one --target")
        outcome = targets.check_input(targets.TARGETS[names[0]], args.replay.read_bytes())
        if outcome.crash is None:
            print("no crash: the parser returned or raised a documented error")
            return 0
        traceback.print_exception(outcome.crash)
        return 1

    engine = args.engine
    if engine == "auto":
        engine = "atheris" if _atheris_available() else "hypothesis"
        if engine == "hypothesis":
            print(
                "atheris is not installed (pip install atheris): using the hypothesis "
                "fallback, which is not coverage-guided",
                file=sys.stderr,
            )
    elif engine == "atheris" and not _atheris_available():
        parser.error("atheris is not installed: pip install atheris, or use --engine hypothesis")
    print(f"fuzzing {len(names)} target(s) with {engine}, {args.seconds:g} s each", flush=True)
    summaries = []
    for name in names:
        if engine == "atheris":
            summary = _run_atheris(name, args.seconds, args.crash_dir, args.corpus_dir)
        else:
            summary = _run_hypothesis(name, args.seconds, args.crash_dir)
        print(f"  {name}: {summary.inputs} inputs, {summary.crashes} crashes", flush=True)
        summaries.append(summary)
    print()
    _print_table(summaries)
    if any(s.note for s in summaries):
        return 2
    if any(s.crashes for s in summaries):
        return 1
    idle = [s.target for s in summaries if s.inputs == 0]
    if idle:
        # A target that ran no input tested nothing: say so and fail rather than pass silently.
        print(f"no input was run for: {', '.join(idle)}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
