"""docs/security.md, section "Secrets, queue and authentication": every row names a test that
exists, and the table keeps at least the rows issue 24 asks for."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SECTION = "## Secrets, queue and authentication"
MIN_ROWS = 15
_TEST_ID = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _rows() -> list[str]:
    text = (REPO / "docs" / "security.md").read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if re.match(r"^\| \d+ \|", line)]


def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


def test_every_row_of_the_secrets_table_names_an_existing_test() -> None:
    rows = _rows()
    assert len(rows) >= MIN_ROWS
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 6, row  # #, input, status, message, stored, test
        found = _TEST_ID.findall(cells[-1])
        assert found, row
        for path, name in found:
            assert name in _functions(REPO / path), f"{path}::{name} (row {cells[0]})"
