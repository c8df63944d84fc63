"""Lazy package exports: ``from estkit.ca import CertificateAuthority`` imports one module, not all.

Why: a package ``__init__`` that imports every submodule makes each ``import estkit.x.y`` pay for
the whole package, and the ``estkit`` command starts a new process for every invocation (scripts,
cron timers), where that is most of its run time. A package lists its public names once, as
``name -> submodule``; :func:`lazy_exports` returns the module-level ``__getattr__`` and
``__dir__`` (PEP 562) that import a submodule the first time one of its names is read. Each
package also imports the same names under ``if TYPE_CHECKING:`` so type checkers and editors see
them; tests/test_cli_start.py checks that both lists agree and that every name resolves.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any


def import_module(name: str) -> ModuleType:
    """``importlib.import_module``, but through the ``import`` statement's machinery, so that
    ``python -X importtime`` lists the module with its own line and cumulative time (it does not
    see modules loaded by ``importlib.import_module``, whose cost then looks like its children's).
    """
    __import__(name)
    return sys.modules[name]


def lazy_exports(
    package: str, exports: Mapping[str, str], *, search: Sequence[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose names live in ``exports`` (name ->
    submodule, relative to the package: ``"authority"`` for ``estkit.ca.authority``).

    ``search`` names submodules whose ``__all__`` is the package's namespace (estkit.protocol):
    a public name missing from ``exports`` is looked for there, so a name added to a submodule
    works at once; the package's consistency test still asks for it to be listed.
    """

    def _locate(name: str) -> str | None:
        submodule = exports.get(name)
        # A submodule's own name (``from estkit.protocol import limits``) is no export: answer
        # at once, so the import system loads that one module, instead of importing every
        # ``search`` module to look for the name first.
        if submodule is not None or name.startswith("_") or name in search:
            return submodule
        for candidate in search:
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

    return __getattr__, __dir__
