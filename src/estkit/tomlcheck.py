"""Reading and checking the TOML files people edit: the server's estkit.toml, the node's file.

Why one module: both files are written by hand, so both need the same things (a bounded read, a
parse error that names the file, unknown keys refused because a typo silently ignored would leave
a setting at its default, "port = true" refused although ``bool`` is an ``int`` in Python), and
each package raises its own error class (``ConfigError``, ``NodeConfigError``), passed as
``error``: any callable taking ``(message, hint)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from estkit.errors import EstkitError

# A configuration file is a few kilobytes; the largest real one (a server with thousands of
# Basic/Digest users, ~250 bytes each) stays well under a megabyte. 4 MiB bounds the memory and
# parse time a wrong file (a log or an image given as the configuration) can cost.
MAX_TOML_BYTES = 4 * 1024 * 1024

T = TypeVar("T")
ErrorFactory = Callable[[str, str | None], Exception]


class TomlError(EstkitError, ValueError):
    """A TOML file is unreadable, too large, not TOML, or holds a value of the wrong kind."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)


def read_toml(
    path: Path, *, error: ErrorFactory = TomlError, limit: int = MAX_TOML_BYTES
) -> dict[str, Any]:
    """The parsed document at ``path``; ``FileNotFoundError`` propagates (the caller knows what
    creates the file), anything else wrong becomes ``error(message, hint)``."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(limit + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}", None) from None
    if len(raw) > limit:
        raise error(
            f"{path} is larger than {limit} bytes: not a configuration file",
            "check that the path names the TOML configuration",
        )
    import tomllib  # here, not at import: a command that reads no file does not pay for it

    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise error(f"{path} is not valid TOML: {exc}", "fix the syntax") from None


def expect(
    value: object,
    kind: type[T] | tuple[type[T], ...],
    where: str,
    *,
    error: ErrorFactory = TomlError,
) -> T:
    """``value`` if it is of ``kind`` (a bool never passes as an int), else ``error``."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python; "port = true" must not pass as port 1.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = "/".join(k.__name__ for k in kinds)
        raise error(
            f"{where} should be a {names}, found {type(value).__name__} {value!r}",
            "fix the value in the TOML file",
        )
    return value


def check_keys(
    table: Mapping[str, Any], allowed: set[str], where: str, *, error: ErrorFactory = TomlError
) -> None:
    """Refuse keys of ``table`` outside ``allowed``: a misspelt setting must not be ignored."""
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise error(
            f"unknown setting(s) {', '.join(unknown)} in [{where}]",
            f"allowed here: {', '.join(sorted(allowed))}",
        )


def sub_table(
    doc: Mapping[str, Any], name: str, where: str, *, error: ErrorFactory = TomlError
) -> Mapping[str, Any]:
    """The sub-table ``[name]`` of ``doc`` (empty when absent), else ``error``."""
    value = doc.get(name, {})
    if not isinstance(value, Mapping):
        raise error(f"{where}: [{name}] must be a table", None)
    return value


__all__ = ["MAX_TOML_BYTES", "TomlError", "check_keys", "expect", "read_toml", "sub_table"]
