"""The suite's default settings, apart from the code that uses them.

Why a module of their own: ``estkit test-server --help`` shows these defaults, and importing
:mod:`.target` for them would load the whole suite (DNS, TLS probes, every case: about 0.2 s),
where the help should answer in a few tens of milliseconds (issue 23).
"""

from __future__ import annotations

DEFAULT_TIMEOUT_SECONDS = 10.0
"""Per connection; a local server answers in milliseconds, a remote one within a few seconds."""

DEFAULT_DOMAIN = "example.com"
"""DNS domain of the names put in test CSRs (BCP-003-03 C7 wants names of the current domain)."""

__all__ = ["DEFAULT_DOMAIN", "DEFAULT_TIMEOUT_SECONDS"]
