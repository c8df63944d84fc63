"""The root of every error estkit raises on purpose (modelled on certbot's ``acme.errors``).

Why one root: a program embedding estkit catches :class:`EstkitError` to tell "estkit refused or
could not do this, and says why" from a bug, without listing a dozen classes. Each package keeps
its own subclasses carrying the context its callers need (an HTTP status, a URL, a field name),
and ``str(error)`` alone is a sentence a person can act on, so a log line needs nothing else.

    EstkitError
    ├── EstProtocolError   estkit.protocol  bytes or text that do not follow the EST wire format
    ├── EstError           estkit.client    an exchange with an EST server failed
    ├── CaError            estkit.ca        the CA cannot be created, loaded or used
    ├── StoreError         estkit.ca, nmos  persisted state is unreadable, unwritable or busy
    ├── NmosError          estkit.nmos      something the NMOS node could not do
    └── the server's, conformance suite's and console's own errors (config, limits, refusals)

Every error may carry:

- ``hint``: what a person should try next, in the API's words (never a command-line flag);
- ``params``: the names of the API parameters or configuration settings the hint is about
  (e.g. ``("trust", "bootstrap_fingerprint")``). The library never names command-line flags; the
  CLI maps these names to its own flags (``estkit.cli.output.friendly_errors``), so a person at
  the terminal still reads which option to change.

Subclasses keep the builtin base they had (``ValueError`` for bad input, ``FileExistsError`` ...),
so code that catches those still does.
"""

from __future__ import annotations

from collections.abc import Iterable


class EstkitError(Exception):
    """Base of every error estkit raises on purpose; ``str()`` reads as a sentence."""

    hint: str | None = None
    params: tuple[str, ...] = ()

    def __init__(self, *args: object, hint: str | None = None, params: Iterable[str] = ()) -> None:
        super().__init__(*args)
        if hint is not None:
            self.hint = hint
        if params:
            self.params = tuple(params)


class StoreError(EstkitError):
    """A store of persisted state is unreadable, unwritable, inconsistent or unreachable: the
    CA's certificate database (:mod:`estkit.ca.store`) or the node's credential files
    (:mod:`estkit.nmos.store`). One class, so ``except StoreError`` catches both."""


__all__ = ["EstkitError", "StoreError"]
