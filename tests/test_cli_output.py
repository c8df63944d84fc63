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
