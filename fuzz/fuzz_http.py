"""Longer fuzzing of the running server's HTTP endpoints (issue 6), printing inputs and crashes.

The properties are the suite's own (``tests/robustness/test_http_fuzz.py``: random methods, paths,
content types, headers and bodies, and raw bytes instead of HTTP, each on a fresh TLS connection
to a real server on 127.0.0.1; the answer must be 2xx/4xx, never 5xx, never a hang). This script
only runs them with many more examples and reports what hypothesis tried.

    python fuzz/fuzz_http.py                     # 2,000 examples per property
    python fuzz/fuzz_http.py --examples 20000

Exit status 0 when no property failed; the failing input is printed by pytest/hypothesis.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROPERTIES = "tests/robustness/test_http_fuzz.py"
EXAMPLES_ENV = "ESTKIT_HTTP_FUZZ_EXAMPLES"  # read by the test module
# The properties append one line per input they ran ("name ok|fail") to this file: the count comes
# from the inputs themselves, not from parsing hypothesis's human-readable statistics.
COUNTS_ENV = "ESTKIT_HTTP_FUZZ_COUNTS"


def read_counts(path: Path) -> dict[str, tuple[int, int]]:
    """Per property: (inputs run, inputs that failed), from the file the properties wrote."""
    tried: collections.Counter[str] = collections.Counter()
    failed: collections.Counter[str] = collections.Counter()
    if path.exists():
        for line in path.read_text(encoding="ascii").splitlines():
            name, _, outcome = line.partition(" ")
            tried[name] += 1
            failed[name] += outcome != "ok"
    return {name: (tried[name], failed[name]) for name in sorted(tried)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="examples per property")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        counts_file = Path(scratch) / "counts"
        completed = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", PROPERTIES,
             "--timeout", "0"],
            cwd=REPO,
            env=dict(os.environ, **{EXAMPLES_ENV: str(args.examples),
                                    COUNTS_ENV: str(counts_file)}),
            capture_output=True,
            text=True,
        )  # fmt: skip
        counts = read_counts(counts_file)
    elapsed = time.monotonic() - started
    print(f"HTTP endpoint fuzzing, {args.examples} examples per property, {elapsed:.0f} s")
    for name, (tried, failing) in counts.items():
        print(f"  {name:<55} {tried:>7} inputs, {failing} failing")
    tried = sum(t for t, _ in counts.values())
    failed = sum(f for _, f in counts.values())
    print(f"total: {tried} inputs tried, {failed} failing inputs")
    if completed.returncode != 0:
        print(completed.stdout[-4000:] + completed.stderr[-2000:])
        return 1
    if tried == 0:
        # Nothing ran (collection error, a skip, a renamed property): that is not a pass.
        print("no input was run: the properties did not execute; see pytest's output above")
        print(completed.stdout[-4000:] + completed.stderr[-2000:])
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
