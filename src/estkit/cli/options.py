"""Option types and option groups shared by the command groups.

Why one place: a file, an output file or a port is taken the same way by every command (the
same click type, the same checks before anything is sent), so each is defined once here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from estkit.cli.output import existing_parent

F = TypeVar("F", bound=Callable[..., Any])

# A file path (need not exist yet: written, or checked later with a better message).
FILE = click.Path(dir_okay=False, path_type=Path)
# A file that must exist when the command starts (click says so before anything runs).
EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
# A directory path.
DIRECTORY = click.Path(file_okay=False, path_type=Path)
# A TCP port to listen on; 0 lets the system choose one.
PORT = click.IntRange(0, 65535)
# Where `estkit server serve` keeps its data (demo data on a first run) when given no DIR; the
# NMOS workflow borrows the demo device credentials from it.
DEFAULT_DATA_DIR = Path("estkit-data")


def limit_option(
    flag: str, bounds: click.ParamType, default: float, help: str | None = None
) -> Callable[[F], F]:
    """A number within ``bounds``; ``--help`` shows its default, so every limit says its value."""
    return click.option(flag, type=bounds, default=default, show_default=True, help=help)


def output_file_option(flag: str, help: str, *, metavar: str = "PEM") -> Callable[[F], F]:
    """``flag`` names a file the command writes; its directory must exist (checked first)."""
    return click.option(flag, type=FILE, callback=existing_parent, metavar=metavar, help=help)


def certificate_and_key_options(
    cert_flag: str, cert_help: str, key_flag: str, key_help: str = "Its private key."
) -> Callable[[F], F]:
    """A certificate (chain) file and the file of its key, given together."""
    return option_group(
        click.option(cert_flag, type=FILE, help=cert_help),
        click.option(key_flag, type=FILE, help=key_help),
    )


def option_group(*options: Callable[[F], F]) -> Callable[[F], F]:
    """Several options applied as one decorator, in the order given (as ``--help`` lists them)."""

    def apply(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return apply
