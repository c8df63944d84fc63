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
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROPERTIES = "tests/robustness/test_http_fuzz.py"
EXAMPLES_ENV = "ESTKIT_HTTP_FUZZ_EXAMPLES"  # read by the test module
# From hypothesis's --hypothesis-show-statistics: "N passing examples, M failing examples, K invalid
# examples", once per phase, under a "tests/...::name:" header per property.
_COUNTS = re.compile(r"(\d+) passing examples?, (\d+) failing examples?, (\d+) invalid")
_TEST = re.compile(r"^(tests/\S+::\S+):\s*$", re.MULTILINE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="examples per property")
    args = parser.parse_args()
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", PROPERTIES,
         "--hypothesis-show-statistics", "--timeout", "0"],
        cwd=REPO,
        env=dict(os.environ, **{EXAMPLES_ENV: str(args.examples)}),
        capture_output=True,
        text=True,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    output = completed.stdout + completed.stderr
    tried = failed = 0
    print(f"HTTP endpoint fuzzing, {args.examples} examples per property, {elapsed:.0f} s")
    # The statistics come as "tests/...::name:" headers, each followed by its counts.
    names = _TEST.findall(output)
    bodies = _TEST.split(output)[2::2]
    for name, body in zip(names, bodies, strict=False):
        counts = [tuple(map(int, match)) for match in _COUNTS.findall(body)]
        passing = sum(c[0] for c in counts)
        failing = sum(c[1] for c in counts)
        tried += passing + failing
        failed += failing
        print(f"  {name.split('::')[-1]:<55} {passing + failing:>7} inputs, {failing} failing")
    print(f"total: {tried} inputs tried, {failed} failing inputs")
    if completed.returncode != 0:
        print(output[-4000:])
    return 0 if completed.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
