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
