"""How fast the ``estkit`` command answers: start-up, a one-request command, the NMOS workflow.

Why: ``estkit`` runs from scripts and timers (``nmos agent --once``), where start-up is most of
the cost. Issue 23's targets, each the median of ``--rounds`` runs (10 by default) of the real
console script in a fresh process, against a real server on loopback started here:

- ``estkit --help`` ≤ 0.25 s;
- ``estkit client cacerts`` ≤ 0.4 s end to end;
- ``estkit nmos workflow`` no slower than ``reference_workflow.py`` (the prototype's steps in a
  minimal script: /cacerts, then RSA-2048 and P-256 keys, CSRs, /simpleenroll, and the renewal
  through /simplereenroll); the two alternate run by run so drift hits both alike.

Each ``estkit <group> --help`` is timed too, and ``python -X importtime`` gives the ten imports
with the largest cumulative time for ``--help``, ``client cacerts`` and ``nmos workflow``.
Next to each wall-clock median is the median CPU time (user + system) of the command's process:
on a shared, loaded machine the wall clock mostly measures the other processes, the CPU time
what the command itself costs. The load average is printed before and after.
One unmeasured run of each command comes first, so the file cache is warm and Python's bytecode
cache is written: the commands run with ``PYTHONDONTWRITEBYTECODE`` removed from their
environment, as an installed estkit runs (an environment that sets it recompiles every estkit
module at every start, ~0.1 s, which no user of an installed package pays).

Run: ``python benchmarks/bench_cli_start.py [--rounds N]``. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from estkit.server.datadir import init_data_dir
from estkit.server.runner import start_server_thread

HELP_TARGET_SECONDS = 0.25  # issue 23: "estkit --help ≤ 0.25 s"
CACERTS_TARGET_SECONDS = 0.4  # issue 23: "estkit client cacerts ... ≤ 0.4 s end to end"
GROUPS = ("client", "server", "nmos", "test-server", "demo")
IMPORT_TOP = 10
RUN_TIMEOUT_SECONDS = 120
REFERENCE = Path(__file__).resolve().parent / "reference_workflow.py"
NODE_HOSTNAME = "node1.example.com"
# The commands' environment: bytecode may be cached (see the module docstring).
ENV = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
_IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")


def _estkit() -> str:
    """The console script installed next to this interpreter (what a user runs)."""
    script = Path(sys.executable).with_name("estkit")
    if script.exists():
        return str(script)
    found = shutil.which("estkit")
    if found is None:
        raise SystemExit("the estkit console script is not installed (pip install -e .)")
    return found


class Sample(NamedTuple):
    wall: float  # seconds, start to exit
    cpu: float  # seconds of user + system CPU of the command's process


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(argv: Sequence[str], env: dict[str, str] = ENV) -> Sample:
    cpu_before = _children_cpu()
    start = time.perf_counter()
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, env=env
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr}")
    # The server runs in this process (a thread), so the children's CPU is the command's alone.
    return Sample(elapsed, _children_cpu() - cpu_before)


def _import_top(argv: Sequence[str]) -> list[tuple[int, int, str]]:
    """(cumulative µs, self µs, module) of the top-level imports with the largest cumulative."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        env=ENV,
    )
    rows: list[tuple[int, int, str]] = []
    for line in result.stderr.splitlines():
        match = _IMPORTTIME.match(line)
        # Top level only (no indentation), so nested imports are not counted twice.
        if match and match.group(3) == " ":
            rows.append((int(match.group(2)), int(match.group(1)), match.group(4)))
    return sorted(rows, reverse=True)[:IMPORT_TOP]


def _line(label: str, samples: dict[str, list[Sample]]) -> Sample:
    """Print one figure (and the baseline's, when measured); return this tree's medians."""
    walls = [s.wall for s in samples["this tree"]]
    median = Sample(
        statistics.median(walls), statistics.median(s.cpu for s in samples["this tree"])
    )
    text = (
        f"  {label:<36} median {median.wall:.3f} s  (min {min(walls):.3f}, max {max(walls):.3f})"
        f"  cpu {median.cpu:.3f} s"
    )
    if "baseline" in samples:
        base = samples["baseline"]
        text += (
            f"   baseline {statistics.median(s.wall for s in base):.3f} s"
            f"  cpu {statistics.median(s.cpu for s in base):.3f} s"
        )
    print(text)
    return median


def _alternate(
    argv: Callable[[int, str], list[str]], variants: dict[str, dict[str, str]], rounds: int
) -> dict[str, list[Sample]]:
    """Run ``argv(round, variant)`` under each variant's environment in turn, ``rounds`` times,
    so that load from other processes on the machine hits every variant alike."""
    samples: dict[str, list[Sample]] = {name: [] for name in variants}
    for i in range(rounds):
        for name, env in variants.items():
            samples[name].append(_run(argv(i, name), env))
    return samples


def _load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPU(s)"


def _verdict(value: float, limit: float) -> str:
    return " " * 40 + f"target ≤ {limit} s: {'met' if value <= limit else 'MISSED'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="runs per figure (median)")
    parser.add_argument(
        "--baseline-src",
        metavar="DIR",
        help="also time another estkit source tree (its src/ directory, e.g. an older commit "
        "unpacked with git archive), alternating run by run with this one",
    )
    args = parser.parse_args()
    estkit = _estkit()

    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        paths = init_data_dir(tmp / "data")
        with start_server_thread(paths.data_dir) as server:
            host = urlsplit(server.url).hostname or "localhost"
            cacerts = [
                estkit, "client", "cacerts", "--server", server.url,
                "--trust", str(paths.ca_certificates), "--out", str(tmp / "cacerts.pem"),
            ]  # fmt: skip

            def workflow(out: Path) -> list[str]:
                return [
                    estkit, "nmos", "workflow", "--ip", host, "--port", str(server.port),
                    "--cert", str(paths.device_certificate), "--key", str(paths.device_key),
                    "--hostname", NODE_HOSTNAME, "--out-dir", str(out),
                ]  # fmt: skip

            def reference(out: Path) -> list[str]:
                return [
                    sys.executable, str(REFERENCE), "--ip", host, "--port", str(server.port),
                    "--cert", str(paths.device_certificate), "--key", str(paths.device_key),
                    "--host", NODE_HOSTNAME, "--out-dir", str(out),
                ]  # fmt: skip

            # Warm the file cache (and the server) once; not measured.
            _run([estkit, "--help"])
            _run(cacerts)
            _run(workflow(tmp / "warm-node"))
            _run(reference(tmp / "warm-reference"))

            variants = {"this tree": ENV}
            if args.baseline_src:
                baseline = str(Path(args.baseline_src).resolve())
                variants["baseline"] = {**ENV, "PYTHONPATH": baseline}
                _run([estkit, "--help"], variants["baseline"])  # writes its bytecode cache
                _run(cacerts, variants["baseline"])
            print(f"estkit start-up, median of {args.rounds} runs ({estkit})")
            print(_load_average())
            if args.baseline_src:
                print(f"baseline: the same commands with PYTHONPATH={args.baseline_src}")
            help_median = _line(
                "estkit --help", _alternate(lambda i, v: [estkit, "--help"], variants, args.rounds)
            )
            print(_verdict(help_median.wall, HELP_TARGET_SECONDS))
            for group in GROUPS:
                _line(
                    f"estkit {group} --help",
                    _alternate(lambda i, v, g=group: [estkit, g, "--help"], variants, args.rounds),
                )
            cacerts_median = _line(
                "estkit client cacerts (end to end)",
                _alternate(lambda i, v: cacerts, variants, args.rounds),
            )
            print(_verdict(cacerts_median.wall, CACERTS_TARGET_SECONDS))

            # The workflow and the reference alternate too (keys are made at random speeds).
            with_reference = {**variants, "reference": ENV}

            def workflow_or_reference(i: int, variant: str) -> list[str]:
                out = tmp / f"{variant.replace(' ', '-')}-{i}"
                return reference(out) if variant == "reference" else workflow(out)

            runs = _alternate(workflow_or_reference, with_reference, args.rounds)
            ours_median = _line("estkit nmos workflow", runs)
            theirs_median = _line(
                "reference_workflow.py (prototype)", {"this tree": runs["reference"]}
            )
            verdict = "met" if ours_median.wall <= theirs_median.wall else "MISSED"
            print(
                " " * 40 + f"target: no slower than the reference: {verdict} "
                f"({ours_median.wall - theirs_median.wall:+.3f} s wall, "
                f"{ours_median.cpu - theirs_median.cpu:+.3f} s cpu)"
            )
            print(_load_average())

            for title, argv in (
                ("estkit --help", [estkit, "--help"]),
                ("estkit client cacerts", cacerts),
                ("estkit nmos workflow", workflow(tmp / "importtime-node")),
            ):
                print(f"\nimport-time top {IMPORT_TOP}, {title} (cumulative / self, ms)")
                for cumulative, self_us, module in _import_top(argv):
                    print(f"  {cumulative / 1e3:8.1f} {self_us / 1e3:8.1f}  {module}")


if __name__ == "__main__":
    main()
