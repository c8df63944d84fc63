"""Errors of the NMOS node, each carrying a ``hint`` a person can act on.

Why a separate hierarchy: a device vendor embedding :class:`estkit.nmos.NmosNode` needs to tell
"the network has no EST server" from "the server refused us" from "our own files are broken"
without parsing messages, and the CLI turns every one of them into a short message plus hint
(``estkit.cli.output.friendly_errors`` reads the ``hint`` attribute).
"""

from __future__ import annotations

from collections.abc import Iterable

from estkit.client.errors import printable
from estkit.errors import EstkitError


class NmosError(EstkitError):
    """Base class: something the node could not do, with what to check next."""

    def __init__(
        self, message: str, hint: str | None = None, *, params: Iterable[str] = ()
    ) -> None:
        # Messages quote servers and certificates: no control character reaches a terminal.
        super().__init__(printable(message, keep="\n"), params=params)
        self.hint = printable(hint, keep="\n") if hint is not None else None


class NodeConfigError(NmosError, ValueError):
    """The node configuration (TOML file or options) is missing something or is invalid."""


class DiscoveryError(NmosError):
    """DNS-SD found no usable EST server advert (D1-D5)."""


class TrustError(NmosError):
    """The EST server could not be authenticated, or its CA certificates are unusable (C4, C5)."""


class ManufacturerCredentialError(NmosError):
    """The manufacturer certificate is missing, unreadable, expired or revoked (C1)."""


class CertificateValidationError(NmosError):
    """A certificate returned by the server fails the checks of C9 and must not be installed."""


class ProvisioningError(NmosError):
    """Enrollment or re-enrollment failed on every server and attempt allowed (C10, C12)."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        attempts: int = 0,
        pending: bool = False,
        params: Iterable[str] = (),
    ) -> None:
        super().__init__(message, hint, params=params)
        self.attempts = attempts
        # True when the last answer was 202/503: the request waits for an operator (S4), so the
        # node should simply ask again later rather than treat the server as broken.
        self.pending = pending
