"""Shared CLI plumbing: human output with rich, machine output with --json, and clean failures.

Why one place: every command must fail the same way (one or two lines saying what failed and what
to try, exit status non-zero, never a traceback) and print JSON the same way.

Why rich is imported only when needed (issue 23): importing it costs ~25 ms, a tenth of a short
command's run, and most runs are scripts and timers whose output goes to a pipe or a log, not a
terminal. :data:`console` and :data:`err_console` write a text line themselves when the stream
is not a terminal and rich would write exactly the same characters (markup removed, no colour, no
wrapping needed); anything else (a terminal, a table, a line rich would wrap) goes to a real rich
``Console``, created at first use. tests/test_cli_output.py compares both ways line by line.
Neither console turns ``:name:`` into an emoji: printed text quotes servers and certificates.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import click

if TYPE_CHECKING:
    from rich.console import Console

P = ParamSpec("P")
R = TypeVar("R")

# rich's markup tags (rich.markup.RE_TAGS) and its escaping of text that is not markup.
_MARKUP_TAG = re.compile(r"((\\*)\[([a-z#/@][^[]*?)])")
_ESCAPABLE = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")
# The control characters rich removes from printed text (rich.control.STRIP_CONTROL_CODES).
_STRIPPED_CONTROLS = dict.fromkeys((7, 8, 11, 12, 13))
# rich's width when it cannot ask a terminal (and COLUMNS is not set).
_DEFAULT_WIDTH = 80


def escape(markup: str) -> str:
    """Text that prints as itself through :data:`console` (``rich.markup.escape``, same result:
    ``[bold]`` becomes ``\\[bold]``), for quoting servers, files and certificates in markup."""

    def _escape_backslashes(match: re.Match[str]) -> str:
        backslashes, text = match.groups()
        return f"{backslashes}{backslashes}\\{text}"

    markup = _ESCAPABLE.sub(_escape_backslashes, markup)
    if markup.endswith("\\") and not markup.endswith("\\\\"):
        return markup + "\\"
    return markup


def _markup_text(markup: str) -> str | None:
    """The characters rich prints for ``markup`` without colour; None where rich would do more
    than drop the tags (meta tags, or a closing tag rich refuses with a MarkupError)."""
    if "[" not in markup:
        return markup
    out: list[str] = []
    open_tags: list[str] = []
    position = 0
    for match in _MARKUP_TAG.finditer(markup):
        full, escapes, tag = match.groups()
        start, end = match.span()
        if start > position:
            out.append(markup[position:start].replace("\\[", "["))
        position = end
        if escapes:
            backslashes, escaped = divmod(len(escapes), 2)
            out.append("\\" * backslashes)
            if escaped:
                out.append(full[len(escapes) :])  # an escaped tag is text
                continue
        name = " ".join(tag.partition("=")[0].lower().split())
        if name.startswith("@"):
            return None
        if not name.startswith("/"):
            open_tags.append(name)
        elif name == "/":
            if not open_tags:
                return None
            open_tags.pop()
        elif name[1:].strip() in open_tags:
            del open_tags[len(open_tags) - 1 - open_tags[::-1].index(name[1:].strip())]
        else:
            return None
    if position < len(markup):
        out.append(markup[position:].replace("\\[", "["))
    return "".join(out)


def _width() -> int:
    """rich's console width when it writes to something that is not a terminal."""
    columns = os.environ.get("COLUMNS")
    if columns is not None and columns.isdigit():
        return int(columns)
    for descriptor in (0, 1, 2):
        try:
            return os.get_terminal_size(descriptor).columns or _DEFAULT_WIDTH
        except (AttributeError, ValueError, OSError):
            continue
    return _DEFAULT_WIDTH


def _is_plain(stream: Any) -> bool:
    """True when rich would write to ``stream`` without colour: not a terminal, and no
    environment variable that makes rich treat it as one."""
    if "FORCE_COLOR" in os.environ or "TTY_COMPATIBLE" in os.environ:
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return isatty is None or not isatty()
    except ValueError:
        return True


class _Output:
    """``console``/``err_console``: rich's ``Console.print`` interface, rich imported on demand.

    Plain text is written directly only when rich would write the very same characters; any other
    call, and every other attribute, goes to the rich ``Console``.
    """

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._rich: Console | None = None

    @property
    def file(self) -> Any:
        # Looked up at each call, as rich does: tests and click swap sys.stdout.
        return sys.stderr if self._stderr else sys.stdout

    @property
    def rich(self) -> Console:
        """The rich ``Console`` itself (rich is imported now), for what needs one: ``Live``."""
        return self._console()

    def _console(self) -> Console:
        if self._rich is None:
            from rich.console import Console

            self._rich = Console(stderr=self._stderr, highlight=False, emoji=False)
        return self._rich

    def _plain(self, objects: tuple[Any, ...], markup: bool, soft_wrap: bool) -> str | None:
        if not objects or not all(isinstance(o, str) for o in objects) or not _is_plain(self.file):
            return None
        joined = " ".join(objects)
        text = _markup_text(joined) if markup else joined
        if text is None or "\t" in text:
            return None
        text = text.translate(_STRIPPED_CONTROLS)
        if not soft_wrap:
            # rich wraps at its width: write directly only lines that need no wrapping.
            width = _width()
            if not text.isascii() or any(len(line) > width for line in text.split("\n")):
                return None
        return text

    def print(
        self,
        *objects: Any,
        markup: bool | None = None,
        soft_wrap: bool = False,
        end: str = "\n",
        **options: Any,
    ) -> None:
        text = None if options else self._plain(objects, markup is not False, soft_wrap)
        if text is None:
            self._console().print(*objects, markup=markup, soft_wrap=soft_wrap, end=end, **options)
            return
        stream = self.file
        stream.write(text + end)
        stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._console(), name)


console = _Output(stderr=False)
err_console = _Output(stderr=True)

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


def print_table(
    title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], *, no_wrap: int = -1
) -> None:
    """A table on stdout: rich's, on a terminal; else plain aligned columns (a pipe or a log gets
    one line per row, whatever its width, and rich is not imported for it).

    Cells are text, never markup; a cell's lines are joined with ", " in plain text.
    ``no_wrap``: the index of a column rich must not fold (file names), if any.
    """
    rows = [list(row) for row in rows]
    if not _is_plain(console.file):
        from rich.table import Table

        table = Table(title=title, show_lines=True)
        for index, column in enumerate(columns):
            table.add_column(column, no_wrap=index == no_wrap)
        for row in rows:
            table.add_row(*(escape(cell) for cell in row))
        console.print(table)
        return
    lines = [list(columns), *([cell.replace("\n", ", ") for cell in row] for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    console.print(title, markup=False, soft_wrap=True)
    for line in lines:
        text = "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        console.print(text.rstrip(), markup=False, soft_wrap=True)
