"""Lazy package exports: ``from estkit.ca import CertificateAuthority`` imports one module, not all.

Why: a package ``__init__`` that imports every submodule makes each ``import estkit.x.y`` pay for
the whole package, and the ``estkit`` command starts a new process for every invocation (scripts,
cron timers), where that is most of its run time. So a package's public names are imported only
under ``if TYPE_CHECKING:``, one ``from .x import Name as Name`` line each (an explicit re-export
under mypy's ``no_implicit_reexport``), which type checkers and editors read; and
:func:`lazy_exports` reads the same lines from the package's own source at run time (a text scan
of one small file, no ``ast``) to make the module-level ``__getattr__`` and ``__dir__`` (PEP 562)
that import a submodule the first time one of its names is read, and ``__all__``. Those import
lines are the only list of a package's names; tests/test_cli_start.py checks that the scan reads
them exactly as Python's parser does and that every name resolves. (So a package needs its
``__init__.py`` source at run time, as every pip or wheel install has; a bytecode-only build
would not.)
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

# One re-export line of a TYPE_CHECKING block: ``from estkit.ca.store import Event as Event`` or
# ``from .store import Event as Event`` (ruff's isort keeps each ``as`` import on its own
# statement, parenthesised when the line is too long).
_REEXPORT = re.compile(r"from\s+(\.?[\w.]+)\s+import\s+\(?\s*(\w+)\s+as\s+(\w+)")
_BLOCK = re.compile(r"^if TYPE_CHECKING:\n((?:[ \t]+.*\n|\n)+)", re.MULTILINE)


def import_module(name: str) -> ModuleType:
    """``importlib.import_module``, but through the ``import`` statement's machinery, so that
    ``python -X importtime`` lists the module with its own line and cumulative time (it does not
    see modules loaded by ``importlib.import_module``, whose cost then looks like its children's).
    """
    __import__(name)
    return sys.modules[name]


def type_checking_exports(package: str, source: str) -> dict[str, str]:
    """``name -> submodule`` (relative to ``package``) for each ``from .x import Name as Name``
    line in the ``if TYPE_CHECKING:`` block of ``source``, the package's ``__init__``.

    ``ValueError`` for a block that holds anything else, a name that is renamed or imported twice,
    or a module outside the package: the lazy ``__getattr__`` could not find such a name.
    """
    block = _BLOCK.search(source)
    if block is None:
        raise ValueError(f"{package}: no 'if TYPE_CHECKING:' block of re-exports")
    code = re.sub(r"#.*", "", block.group(1))
    exports: dict[str, str] = {}
    for match in _REEXPORT.finditer(code):
        module, name, alias = match.groups()
        if module.startswith("."):
            submodule = module[1:]
        elif module.startswith(package + "."):
            submodule = module[len(package) + 1 :]
        else:
            raise ValueError(f"{package}: {name} is imported from {module}, outside the package")
        if alias != name or name in exports:
            raise ValueError(f"{package}: {name} must be imported once, as '{name} as {name}'")
        exports[name] = submodule
    # Anything the pattern did not read (a plain import, a second name on one line) is refused.
    statements = len(re.findall(r"^\s*(?:from|import)\s", code, re.MULTILINE))
    names = len(re.findall(r"\bas\b", code))
    if not statements == names == len(exports):
        raise ValueError(
            f"{package}: its TYPE_CHECKING block must hold only 'from .x import Name as Name' "
            f"lines, one name each ({statements} imports of {names} names, {len(exports)} read)"
        )
    return exports


def lazy_exports(
    package: str, init_file: str, *, search: bool = False
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``, whose ``__init__`` is ``init_file``
    and whose public names are the ones it imports under ``if TYPE_CHECKING:``
    (:func:`type_checking_exports`). ``__all__`` is those names, sorted.

    With ``search`` (estkit.protocol, whose namespace is its submodules' ``__all__``), a public name
    missing from the imports is looked for in the imported submodules' ``__all__``, so a name
    added to a submodule works at once; the package's consistency test still asks for the import.
    """
    exports = type_checking_exports(package, Path(init_file).read_text(encoding="utf-8"))
    submodules = list(dict.fromkeys(exports.values()))

    def _locate(name: str) -> str | None:
        submodule = exports.get(name)
        # A submodule's own name (``from estkit.protocol import limits``) is no export: answer
        # at once, so the import system loads that one module, instead of importing every
        # ``search`` module to look for the name first.
        if submodule is not None or name.startswith("_") or not search or name in submodules:
            return submodule
        for candidate in submodules:
            module = import_module(f"{package}.{candidate}")
            if name in getattr(module, "__all__", ()):
                return candidate
        return None

    def __getattr__(name: str) -> Any:
        submodule = _locate(name)
        if submodule is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f"{package}.{submodule}"), name)
        # Cache it on the package so the next read is a plain attribute lookup.
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(exports) | set(vars(sys.modules[package])))

    return __getattr__, __dir__, sorted(exports)
