"""One error tree rooted in ``estkit.errors.EstkitError``; the library speaks its API, not flags.

Issue 22 item 5: every exception class estkit defines derives from :class:`EstkitError`; the CA
has one root (:class:`CaError`) and there is one :class:`StoreError`; library messages name no
command-line flags (at most ``MAX_FLAG_STRINGS`` left, each justified where it stands) and the CLI
adds the flag to the hint from the parameter names the error carries.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import estkit
from estkit.errors import EstkitError, StoreError

SRC = Path(estkit.__file__).parent
# Issue 22: at most ten strings in library code may name a command-line flag, each justified by
# a comment where it stands.
MAX_FLAG_STRINGS = 10
# "--name" not preceded by a word character or a dash: a flag, not "-----BEGIN" or "a--b".
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _estkit_modules() -> list[str]:
    return [info.name for info in pkgutil.walk_packages(estkit.__path__, "estkit.")]


def test_every_exception_class_in_estkit_derives_from_estkit_error() -> None:
    outside: list[str] = []
    seen = 0
    for name in _estkit_modules():
        # An import failure fails the test: no module is skipped.
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
            ):
                seen += 1
                if not issubclass(value, EstkitError):
                    outside.append(f"{value.__module__}.{value.__qualname__}")
    assert seen >= 50, f"only {seen} exception classes found: the module walk is broken"
    assert outside == [], f"exception classes outside the EstkitError tree: {outside}"


def test_the_ca_has_one_root_and_there_is_one_store_error() -> None:
    from estkit.ca import store as ca_store
    from estkit.ca.authority import CaExistsError, CaNotFoundError
    from estkit.ca.errors import CaError
    from estkit.ca.manufacturer import ManufacturerError
    from estkit.ca.profiles import ProfileError
    from estkit.nmos import store as node_store
    from estkit.nmos.errors import NmosError

    for error in (CaExistsError, CaNotFoundError, ManufacturerError, ProfileError):
        assert issubclass(error, CaError), error
    assert issubclass(ProfileError, ValueError)  # callers catching ValueError still do
    assert ca_store.StoreError is StoreError and node_store.StoreError is StoreError
    assert issubclass(ca_store.StoreUnavailableError, StoreError)
    assert issubclass(node_store.CredentialStoreError, NmosError)
    assert issubclass(node_store.CredentialStoreError, StoreError)


def test_errors_hold_their_context_and_read_well() -> None:
    from estkit.client.errors import EstHttpError
    from estkit.nmos.errors import NmosError

    http = EstHttpError(
        "POST /simpleenroll was refused",
        status=400,
        hint="fix the request",
        params=("credentials",),
        url="https://est.example/.well-known/est/simpleenroll",
    )
    assert str(http) == "POST /simpleenroll was refused (fix the request)"
    assert (http.status, http.params, http.url) == (400, ("credentials",), http.url)
    node = NmosError("no server\x1b[2J", "look", params=("domain",))
    assert str(node) == "no server\\x1b[2J" and node.hint == "look" and node.params == ("domain",)
    plain = EstkitError("something")
    assert (str(plain), plain.hint, plain.params) == ("something", None, ())


def _docstring_nodes(tree: ast.AST) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def flag_strings(root: Path = SRC) -> list[str]:
    """Every string literal (docstrings aside) in library code, outside ``cli/``, naming a flag."""
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        if "cli" in path.relative_to(root).parts[:1]:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = _docstring_nodes(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and FLAG.search(node.value)
            ):
                found.append(f"{path.relative_to(root)}:{node.lineno}: {node.value.strip()}")
    return found


def test_library_messages_name_at_most_ten_command_line_flags() -> None:
    found = flag_strings()
    assert len(found) <= MAX_FLAG_STRINGS, "\n".join(found)


def test_the_flag_counter_sees_a_flag_in_a_message(tmp_path: Path) -> None:
    (tmp_path / "mod.py").write_text(
        '"""Docs may say --json."""\n'
        'def f(x):\n    """--ignored"""\n    raise ValueError(f"pass --trust PEM, not {x}")\n'
        'PEM = "-----BEGIN CERTIFICATE-----"\n'
    )
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "main.py").write_text('HELP = "--trust"\n')
    assert [line.split(": ", 1)[0] for line in flag_strings(tmp_path)] == ["mod.py:4"]


@pytest.mark.parametrize("module", ["estkit.errors", "estkit.ca.errors"])
def test_error_modules_import_nothing_above_them(module: str) -> None:
    source = Path(importlib.import_module(module).__file__ or "").read_text()
    imported = re.findall(r"^from (estkit[\w.]*) import", source, re.MULTILINE)
    assert set(imported) <= {"estkit.errors"}
