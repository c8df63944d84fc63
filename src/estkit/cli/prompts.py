"""Asking for a secret (a password) on the terminal or reading it from a pipe.

Why: ``click.prompt(hide_input=True)`` goes through :func:`getpass.getpass`, which without a
terminal prints "GetPassWarning: Can not control echo on the terminal" and "Password input may be
echoed" to stderr. A script that pipes the password in sees that noise, and a log shows a Python
warning. Without a terminal there is nothing to hide, so the secret is read as one line.
"""

from __future__ import annotations

import sys

import click

# A password is a line a person types or a script pipes; more than this is not a password but a
# file sent by mistake, and is refused instead of being stored.
MAX_SECRET_CHARS = 1024


def read_secret(prompt: str, *, confirm: bool = False) -> str:
    """The secret typed at a hidden prompt (asked twice with ``confirm``), or the first line of
    standard input when it is not a terminal (asked once: a pipe does not mistype). Raises
    ValueError for an empty or oversized one."""
    if sys.stdin.isatty():
        value = str(click.prompt(prompt, hide_input=True, confirmation_prompt=confirm, err=True))
    else:
        # The prompt still says what is read (a script's log shows it); one line, no confirmation.
        click.echo(f"{prompt}: ", err=True, nl=False)
        value = sys.stdin.readline(MAX_SECRET_CHARS + 2).rstrip("\r\n")
    if not value:
        raise ValueError(f"no {prompt.lower()} given: standard input was empty")
    if len(value) > MAX_SECRET_CHARS:
        raise ValueError(f"the {prompt.lower()} is longer than {MAX_SECRET_CHARS} characters")
    return value


__all__ = ["MAX_SECRET_CHARS", "read_secret"]
