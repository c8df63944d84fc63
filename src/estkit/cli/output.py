"""Shared CLI plumbing: human output with rich, machine output with --json, and clean failures.

Why one place: every command must fail the same way (one or two lines saying what failed and what
to try, exit status non-zero, never a traceback) and print JSON the same way.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar

import click
from rich.console import Console
from rich.markup import escape

P = ParamSpec("P")
R = TypeVar("R")

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

EXIT_FAILURE = 1
EXIT_USAGE = 2


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def print_json(data: Any) -> None:
    """Write one JSON document to stdout (nothing else may go to stdout under --json)."""
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default, sort_keys=False) + "\n")
    sys.stdout.flush()


def fail(message: str, hint: str | None = None, code: int = EXIT_FAILURE) -> NoReturn:
    """Stop the command with a short message on stderr and a non-zero exit status.

    The texts are escaped: they quote servers and config files, whose brackets ("[est]", a
    server's "[/]") are not rich markup.
    """
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    if hint:
        err_console.print(f"[dim]hint:[/] {escape(hint)}", soft_wrap=True)
    raise SystemExit(code)


def hint_with_flags(
    hint: str | None, params: Iterable[str], flags: Mapping[str, str]
) -> str | None:
    """``hint`` followed by the command-line options for the API ``params`` it is about.

    Why here: the library names parameters (``trust``, ``credentials``), never flags, because it
    is also called from programs; each command group knows which of its flags sets which
    parameter (``flags``), so the person at the terminal still reads what to type.
    """
    named = list(dict.fromkeys(flags[param] for param in params if param in flags))
    if not named:
        return hint
    options = f"on the command line: {', '.join(named)}"
    return f"{hint} ({options})" if hint else options


def name_flags(text: str, flags: Mapping[str, str]) -> str:
    """``text`` (a library warning) with every API parameter it names, such as
    ``allow_dev_servers`` or ``(serial_number)``, replaced by this command group's flag."""
    for param, flag in flags.items():
        if "_" in param:  # "trust" or "domain" are ordinary words too: never rewrite those
            text = re.sub(rf"(?<![\w.-]){re.escape(param)}(?![\w-])", flag, text)
    return text


def error_hint(exc: BaseException, flags: Mapping[str, str] | None = None) -> str | None:
    """The hint of an estkit error (``hint`` attribute), with the flags of its ``params``."""
    return hint_with_flags(getattr(exc, "hint", None), getattr(exc, "params", ()), flags or {})


def friendly_errors(
    *expected: type[BaseException],
    flags: Mapping[str, str] | None = None,
    describe: Mapping[type[BaseException], Callable[[Any], str]] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Turn the listed (expected) exception types into :func:`fail` instead of a traceback.

    Exceptions may carry a ``hint`` attribute with what to try next and ``params`` naming the
    API parameters concerned, which ``flags`` maps to this command group's options. What failed
    (the first line) is what ``describe`` says for the exception's type (those types are expected
    too), else ``str(exc)``.
    """
    told = dict(describe or {})
    caught = (*expected, *told)

    def what_failed(exc: BaseException) -> str:
        for kind, say in told.items():
            if isinstance(exc, kind):
                return say(exc)
        return str(exc) or type(exc).__name__

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return func(*args, **kwargs)
            except (click.exceptions.Exit, click.ClickException, SystemExit):
                raise
            except KeyboardInterrupt:
                fail("interrupted", code=130)
            except caught as exc:
                fail(what_failed(exc), error_hint(exc, flags))

        return wrapper

    return decorate


def existing_parent(_ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Click callback for output files: their directory must exist (as curl -o and openssl -out
    want), checked before anything is sent, so a typo never costs an issued certificate."""
    if value is None or str(value) == "-":
        return value
    parent = Path(value).parent
    if not parent.is_dir():
        raise click.BadParameter(
            f"the directory {parent} does not exist; create it first "
            "(estkit does not create directories for output files)",
            param=param,
        )
    return value
