"""docs/requirements.md is the requirement catalog: every ID the code cites is defined there.

Why a test: requirement IDs (``S4``, ``C7``, ``T2``, ``RFC 7030 §3.5`` ...) appear in hundreds of
comments, docstrings, test names and conformance messages. A clone of the repository must be able
to look each one up, and a row must not point at a test, a function or a conformance case that was
renamed or deleted. Nothing in the repository may point outside it either: a clone has nothing
beside it.
"""

from __future__ import annotations

import ast
import io
import os
import re
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from estkit.conformance.cases import ALL_CASES

REPO = Path(__file__).resolve().parent.parent
CATALOG = REPO / "docs" / "requirements.md"

# A requirement ID is one of the catalog's prefixes followed by a number, as a whole word: E1-E16
# (RFC 7030/8951), Q1-Q6 (interop quirks), D/S/C (BCP-003-03), T (BCP-003-01). A range such as
# "D1-D5" or "C4–C13" stands for every ID in it. Not after ":" or ".", so colon-hex fingerprints
# and dotted versions never count. In Python files only comments and string literals are searched
# (the tokenizer tells them from code): as code the same shapes are plain names, such as
# ``T1 = T0 + timedelta(...)`` in the rollover tests.
_ID = re.compile(r"(?<![:.])\b([CDEQST])([1-9]\d?)(?:\s*[-–]\s*\1([1-9]\d?))?\b")
# "RFC 7030 §4.5.2" / "RFC 8951 §3.1": the sections of the two EST RFCs, indexed by the catalog.
_SECTION = re.compile(r"\bRFC ?(7030|8951),? ?§ ?(\d+(?:\.\d+)*)")
# "RFC 6960 §4.2.2.2", "RFC 8446 §6" ...: sections of the other standards the code follows (OCSP,
# CRLs and certificate profile, PKCS#11 URIs, the RA's EKU, TLS 1.3 alerts and exporters, root
# key update), indexed in their own table of the catalog.
_OTHER_SECTION = re.compile(
    r"\bRFC ?(4210|5019|5280|6402|6960|7512|8446|8954|9266),? ?§ ?(\d+(?:\.\d+)*)"
)
# What a catalog row names: pytest node ids, ``estkit.module:qualified.name`` and case ids.
_TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(?:\[[^\]`]*\])?`")
_CODE_REF = re.compile(r"`(estkit(?:\.\w+)*):([\w.]+)`")
_BACKTICKED = re.compile(r"`([^`]+)`")

# Where cited IDs are looked for: the package, the tests and the other code and docs that cite them.
_PYTHON_ROOTS = ("src", "tests", "benchmarks", "fuzz")
_MARKDOWN = ("README.md", "docs", "fuzz")
# Written in two pieces so this file does not match itself.
_OUTSIDE = ("../" + "shared", "shared/" + "reference", "/work/" + "shared")
_NOT_REPOSITORY = {".git", ".venv", "venv", "node_modules", "__pycache__", "build", "dist"}
_MAX_SCANNED_BYTES = 4 * 1024 * 1024  # larger files are data (fuzz corpora), never prose


@dataclass(frozen=True)
class Row:
    table: str
    key: str
    cells: dict[str, str]
    line: int


def expand(match: re.Match[str]) -> list[str]:
    letter, first, last = match.group(1), int(match.group(2)), match.group(3)
    if last is None:
        return [f"{letter}{first}"]
    return [f"{letter}{number}" for number in range(first, int(last) + 1)]


def prose_of_python(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every comment and string literal of a Python file."""
    source = path.read_text(encoding="utf-8")
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.COMMENT, tokenize.STRING):
            yield token.start[0], token.string


def prose_files() -> Iterator[tuple[Path, Iterator[tuple[int, str]]]]:
    for root in _PYTHON_ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            if path != Path(__file__).resolve():  # its comments name every prefix on purpose
                yield path, prose_of_python(path)
    for name in _MARKDOWN:
        base = REPO / name
        paths = [base] if base.is_file() else sorted(base.rglob("*.md"))
        for path in paths:
            if path != CATALOG:
                lines = path.read_text(encoding="utf-8").splitlines()
                yield path, iter(enumerate(lines, start=1))


@cache
def all_citations() -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, list[str]]]:
    """(requirement ID -> places, "RFC 7030/8951 §x" -> places, other "RFC n §x" -> places)."""
    ids: dict[str, list[str]] = {}
    sections: dict[str, list[str]] = {}
    others: dict[str, list[str]] = {}
    for path, chunks in prose_files():
        for line, text in chunks:
            where = f"{path.relative_to(REPO)}:{line}"
            for match in _ID.finditer(text):
                for requirement in expand(match):
                    ids.setdefault(requirement, []).append(where)
            for pattern, found in ((_SECTION, sections), (_OTHER_SECTION, others)):
                for match in pattern.finditer(text):
                    found.setdefault(f"RFC {match.group(1)} §{match.group(2)}", []).append(where)
    return ids, sections, others


def citations() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(requirement ID -> places, "RFC 7030/8951 §x" -> places) over the whole repository."""
    ids, sections, _others = all_citations()
    return ids, sections


@cache
def catalog_rows() -> tuple[Row, ...]:
    """Every row of every table in the catalog, keyed by its first cell."""
    rows: list[Row] = []
    header: list[str] | None = None
    table = ""
    lines = CATALOG.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.startswith("|"):
            header = None
            if line.startswith("#"):
                table = line.lstrip("#").strip()
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not set("".join(cells)) <= set("-: "):
            rows.append(Row(table, cells[0], dict(zip(header, cells, strict=False)), number))
    return tuple(rows)


def defined_ids() -> dict[str, Row]:
    """The rows of the requirement tables (first column "ID"), by ID."""
    return {row.key: row for row in catalog_rows() if "ID" in row.cells}


def code_defines(module: str, qualified: str) -> bool:
    """Whether ``src/<module>.py`` (or its package) defines ``qualified`` (``Class.method``)."""
    base = REPO / "src" / Path(*module.split("."))
    path = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
    if not path.is_file():
        return False
    body: list[ast.stmt] = ast.parse(path.read_text(encoding="utf-8")).body
    for name in qualified.split("."):
        found = [
            node
            for node in body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and node.name == name
        ]
        if not found:
            return False
        body = found[0].body
    return True


@cache
def functions_in(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    )


def test_the_catalog_defines_each_id_of_the_standards_exactly_once() -> None:
    keys = [row.key for row in catalog_rows() if "ID" in row.cells]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    assert not twice, f"IDs with more than one row in docs/requirements.md: {twice}"
    expected = {
        f"{letter}{number}"
        for letter, top in (("E", 16), ("Q", 6), ("D", 5), ("S", 8), ("C", 18), ("T", 5))
        for number in range(1, top + 1)
    }
    missing, unknown = sorted(expected - set(keys)), sorted(set(keys) - expected)
    assert not missing and not unknown, f"missing rows: {missing}; unknown rows: {unknown}"
    empty = [row.key for row in catalog_rows() if "ID" in row.cells and not all(row.cells.values())]
    assert not empty, f"rows with an empty cell (write — when nothing applies): {empty}"


def test_every_requirement_id_cited_in_the_repository_is_catalogued() -> None:
    ids, _sections = citations()
    # 51 distinct IDs are cited today: far fewer means the scan itself broke.
    assert len(ids) >= 40, f"the citation scan found only {sorted(ids)}"
    missing = {key: places for key, places in ids.items() if key not in defined_ids()}
    assert not missing, "cited but missing from docs/requirements.md: " + "; ".join(
        f"{key} (at {', '.join(places[:3])})" for key, places in sorted(missing.items())
    )


def test_every_rfc_7030_and_8951_section_cited_is_indexed() -> None:
    _ids, sections = citations()
    assert len(sections) >= 10, f"the section scan found only {sorted(sections)}"
    indexed = {row.key for row in catalog_rows() if row.table == "RFC section index"}
    missing = {key: places for key, places in sections.items() if key not in indexed}
    assert not missing, "cited but missing from the section index of docs/requirements.md: " + (
        "; ".join(f"{key} (at {', '.join(places[:3])})" for key, places in sorted(missing.items()))
    )


def test_every_section_of_the_other_standards_cited_is_indexed() -> None:
    """OCSP, CRL, PKCS#11, RA and TLS sections cited in the code have a row too."""
    _ids, _sections, others = all_citations()
    # 29 distinct sections are cited today: far fewer means the scan itself broke.
    assert len(others) >= 20, f"the scan of the other standards found only {sorted(others)}"
    indexed = {row.key for row in catalog_rows() if row.table == "Sections of the other standards"}
    missing = {key: places for key, places in others.items() if key not in indexed}
    where = "; ".join(f"{key} (at {', '.join(at[:3])})" for key, at in sorted(missing.items()))
    assert not missing, (
        f"cited but missing from 'Sections of the other standards' in docs/requirements.md: {where}"
    )


def test_every_test_named_in_the_catalog_exists() -> None:
    text = CATALOG.read_text(encoding="utf-8")
    named = set(_TEST_REF.findall(text))
    assert len(named) >= 100, f"only {len(named)} tests named: is the pattern broken?"
    missing = sorted(
        f"{file_name}::{function}"
        for file_name, function in named
        if not (REPO / file_name).is_file() or function not in functions_in(REPO / file_name)
    )
    assert not missing, f"docs/requirements.md names tests that do not exist: {missing}"


def test_every_code_location_named_in_the_catalog_exists() -> None:
    text = CATALOG.read_text(encoding="utf-8")
    named = set(_CODE_REF.findall(text))
    assert len(named) >= 100, f"only {len(named)} code locations named: is the pattern broken?"
    missing = sorted(
        f"{module}:{qualified}"
        for module, qualified in named
        if not code_defines(module, qualified)
    )
    assert not missing, f"docs/requirements.md names code that does not exist: {missing}"


def test_conformance_cases_and_catalog_rows_agree() -> None:
    """A row lists exactly the cases that cite its ID, so its verdict columns describe them."""
    rows = defined_ids()
    listed = {
        (case_id, key)
        for key, row in rows.items()
        for case_id in _BACKTICKED.findall(row.cells["Cases"])
    }
    cited = {
        (case.id, requirement)
        for case in ALL_CASES
        for match in _ID.finditer(case.requirement)
        for requirement in expand(match)
    }
    known = {case.id for case in ALL_CASES}
    unknown = sorted(f"{key}: {case_id}" for case_id, key in listed if case_id not in known)
    assert not unknown, f"docs/requirements.md lists conformance cases that do not exist: {unknown}"
    not_cited = sorted(f"{key}: {case_id}" for case_id, key in listed - cited)
    assert not not_cited, f"rows list cases that do not cite the row's ID: {not_cited}"
    unlisted = sorted(f"{key}: add {case_id}" for case_id, key in cited - listed)
    assert not unlisted, f"cases cite IDs whose row does not list them: {unlisted}"


def repository_files() -> Iterator[Path]:
    for directory, subdirectories, files in os.walk(REPO):
        subdirectories[:] = [
            name
            for name in subdirectories
            if name not in _NOT_REPOSITORY and not name.endswith((".egg-info", "_cache"))
        ]
        for name in files:
            yield Path(directory) / name


def test_nothing_in_the_repository_points_outside_it() -> None:
    offenders = []
    for path in repository_files():
        if path.stat().st_size > _MAX_SCANNED_BYTES:
            continue
        data = path.read_bytes()
        if b"\0" in data[:1024]:
            continue  # binary
        for line_number, line in enumerate(data.splitlines(), start=1):
            offenders += [
                f"{path.relative_to(REPO)}:{line_number}: {outside}"
                for outside in _OUTSIDE
                if outside.encode() in line
            ]
    assert not offenders, (
        "paths outside the repository (a clone has nothing beside it; point at "
        f"docs/requirements.md or another document in the repository instead): {offenders}"
    )
