"""CLI failures print server and config texts verbatim: brackets are not rich markup."""

from __future__ import annotations

import pytest

from estkit.cli.output import fail


def test_fail_prints_brackets_verbatim_and_never_raises_a_markup_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A server's refusal text with "[/]" once crashed the CLI with rich.errors.MarkupError.
    with pytest.raises(SystemExit) as stopped:
        fail("server said: [/] request rejected", hint="set [est] renewal_fraction = 0.8")
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert "server said: [/] request rejected" in err
    assert "set [est] renewal_fraction = 0.8" in err


def test_the_cli_names_its_flags_for_the_parameters_an_error_is_about(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The library says "trust" (its parameter); the command group's table says which flag sets it.
    from estkit.cli.client import CLIENT_FLAGS
    from estkit.cli.output import friendly_errors
    from estkit.client.errors import EstAuthError

    @friendly_errors(EstAuthError, flags=CLIENT_FLAGS)
    def command() -> None:
        raise EstAuthError(
            "GET /cacerts needs authentication (401)",
            status=401,
            hint="give a user name and password",
            params=("username", "password", "nonsense"),
        )

    with pytest.raises(SystemExit):
        command()
    err = capsys.readouterr().err
    assert "give a user name and password (on the command line: --user, --password)" in err
    assert "nonsense" not in err


def test_each_command_group_says_in_its_own_words_what_failed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The client's and the server's command wrappers are friendly_errors with a per-type
    # description: an EstError's first line is its message (its hint gets a line of its own, not
    # both), a KeyError loses its quotes; other expected errors read as str().
    from estkit.cli.client import _est_command
    from estkit.cli.server import _command
    from estkit.client.errors import EstNotFoundError

    @_est_command
    def client_command() -> None:
        raise EstNotFoundError("no label 'x' on the server", status=404, hint="check the label")

    @_command
    def server_command() -> None:
        raise KeyError("no certificate with serial 12")

    @_command
    def server_bad_value() -> None:
        raise ValueError("validity must be positive")

    with pytest.raises(SystemExit) as stopped:
        client_command()
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert "error: no label 'x' on the server\n" in err
    assert "(check the label)" not in err  # str(exc) would repeat the hint on the first line
    assert "hint: check the label" in err

    with pytest.raises(SystemExit):
        server_command()
    err = capsys.readouterr().err
    assert "error: no certificate with serial 12\n" in err
    assert "'no certificate" not in err

    with pytest.raises(SystemExit):
        server_bad_value()
    assert "error: validity must be positive" in capsys.readouterr().err


# Texts the commands print, and the corners of rich's markup: escaped tags, backslashes,
# unmatched and meta tags, control characters, tabs, long and non-ASCII lines, emoji codes.
_SAMPLES = (
    "",
    "plain line",
    "[bold cyan]→[/] RSA: requesting a certificate for node1.example.com (/simpleenroll)",
    "[green] ✓[/] installed rsa-cert.pem (serial 7b99, valid until 2027-03-06 05:42:04 UTC)",
    "[bold red]error:[/] server said: \\[/] request rejected",
    "[dim]hint:[/] set \\[est] renewal_fraction = 0.8",
    "[bold]estkit[/bold] and [Bold Red]shouting[/bold red] and [red bold]swapped[/bold red]",
    "back\\\\[bold]slashes[/] and \\\\\\[escaped] and a trailing \\",
    "[link=https://example.com]a link[/link] [#ff0000]hex[/]",
    "[@click]meta[/]",
    "closing nothing [/]",
    "closing the wrong one [bold]x[/italic]",
    "[unclosed tag stays open",
    "bell\x07 back\x08 vt\x0b ff\x0c cr\r esc\x1b[31m",
    "a\ttab",
    "two\nlines",
    "ends with a newline\n",
    ":smile: :x: sha256:ab:cd: 05:42:05",
    "x" * 79,
    "x" * 80,
    "x" * 81,
    "word " * 30,
    "é" * 70,
    "→ " + "non-ascii " * 10,
)


@pytest.mark.parametrize("soft_wrap", [True, False])
@pytest.mark.parametrize("markup", [True, False])
@pytest.mark.parametrize("text", _SAMPLES)
def test_plain_output_is_what_rich_writes(
    text: str, markup: bool, soft_wrap: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not on a terminal, ``console`` writes some lines itself, without importing rich (issue
    23): each must be exactly what rich writes, or be handed to rich (which then decides, and
    raises its MarkupError where it would)."""
    import io

    from rich.console import Console
    from rich.errors import MarkupError

    from estkit.cli.output import _Output

    for variable in ("FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS"):
        monkeypatch.delenv(variable, raising=False)
    expected = io.StringIO()
    try:
        Console(file=expected, highlight=False, emoji=False).print(
            text, markup=markup, soft_wrap=soft_wrap
        )
    except MarkupError:
        expected.write("MarkupError")
    ours = io.StringIO()
    monkeypatch.setattr("sys.stdout", ours)
    try:
        _Output(stderr=False).print(text, markup=markup, soft_wrap=soft_wrap)
    except MarkupError:
        ours.write("MarkupError")
    assert ours.getvalue() == expected.getvalue()


def test_plain_output_writes_itself_and_a_terminal_gets_rich(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fast path is taken (no rich Console made) for a pipe, and not for a terminal or
    FORCE_COLOR, where colours are wanted."""
    import io

    from estkit.cli.output import _Output

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    pipe = io.StringIO()
    monkeypatch.setattr("sys.stdout", pipe)
    output = _Output(stderr=False)
    output.print("[green]done[/] \\[est]", soft_wrap=True)
    assert pipe.getvalue() == "done [est]\n"
    assert output._rich is None

    terminal = Terminal()
    monkeypatch.setattr("sys.stdout", terminal)
    output.print("[green]done[/]", soft_wrap=True)
    assert output._rich is not None
    assert "\x1b[" in terminal.getvalue()  # rich coloured it
    # Server and certificate texts are printed as they are: no ":name:" becomes an emoji.
    output.print("CN=:warning: :smile:", soft_wrap=True, markup=False)
    assert "CN=:warning: :smile:" in terminal.getvalue()

    colour = _Output(stderr=False)
    monkeypatch.setattr("sys.stdout", io.StringIO())
    monkeypatch.setenv("FORCE_COLOR", "1")
    colour.print("[green]done[/]", soft_wrap=True)
    assert colour._rich is not None


def test_escape_is_riches_escape() -> None:
    from rich.markup import escape as rich_escape

    from estkit.cli.output import escape

    for text in (*_SAMPLES, "[/]", "\\[x]", "a\\", "a\\\\", "[est] [/est] [@x]"):
        assert escape(text) == rich_escape(text)


def test_a_table_is_plain_lines_in_a_pipe_and_escaped_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    import estkit.cli.output as output

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for variable in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR"):
        monkeypatch.delenv(variable, raising=False)
    rows = [["RSA (renewed)", "[bold]node1", "rsa-cert.pem\nrsa-key.pem"], ["ECDSA", "n2", "e"]]
    pipe = io.StringIO()
    monkeypatch.setattr("sys.stdout", pipe)
    output.print_table("NMOS node certificates", ("key type", "subject", "files"), rows)
    assert pipe.getvalue().splitlines() == [
        "NMOS node certificates",
        "key type       subject      files",
        "RSA (renewed)  [bold]node1  rsa-cert.pem, rsa-key.pem",
        "ECDSA          n2           e",
    ]
    terminal = Terminal()
    monkeypatch.setattr("sys.stdout", terminal)
    monkeypatch.setattr(output, "console", output._Output(stderr=False))
    output.print_table("NMOS node certificates", ("key type", "subject", "files"), rows)
    shown = terminal.getvalue()
    assert "┃" in shown or "│" in shown  # rich's table
    assert "[bold]node1" in shown  # a name is text, not markup
