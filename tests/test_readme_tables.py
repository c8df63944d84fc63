"""The README's bad-input table is a promise: every row must point at a test that exists.

Why: the table is what an operator reads to learn what the server does with hostile input; a row
whose test was renamed or deleted would claim a proof that no longer runs.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MIN_BAD_INPUT_CLASSES = 25
_ROW = re.compile(r"^\| (\d+) \| (.+?) \| (.+?) \| (.+) \|$")
_TEST_ID = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _bad_input_rows() -> list[tuple[int, str]]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Bad input\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        match = _ROW.match(line)
        if match:
            rows.append((int(match.group(1)), match.group(4)))
    return rows


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def test_the_readme_lists_at_least_25_numbered_bad_input_classes() -> None:
    rows = _bad_input_rows()
    assert len(rows) >= MIN_BAD_INPUT_CLASSES, rows
    assert [number for number, _ in rows] == list(range(1, len(rows) + 1))


def test_every_bad_input_row_names_tests_that_exist() -> None:
    missing = []
    for number, proved_by in _bad_input_rows():
        ids = _TEST_ID.findall(proved_by)
        assert ids, f"row {number} names no test: {proved_by}"
        for file_name, function in ids:
            path = REPO / file_name
            if not path.is_file() or function not in _test_functions(path):
                missing.append(f"row {number}: {file_name}::{function}")
    assert not missing, missing
