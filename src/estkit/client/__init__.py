"""estkit.client: an EST client (RFC 7030 + RFC 8951) people can rely on against any server.

Sync (:class:`EstClient`) and asyncio (:class:`AsyncEstClient`) clients share one sans-I/O model
(:mod:`.flows`, :mod:`.responses`), so both behave identically. Trust is explicit; talking to a
server that is not verified exists only in :mod:`.bootstrap`, under names that say so.
"""

from __future__ import annotations

from ._base import renewal_spec
from .aio import AsyncEstClient
from .apply import apply_csrattrs, key_type_for
from .auth import ChallengeAuth
from .bootstrap import (
    CandidateCertificate,
    UnconfirmedCaCertificates,
    async_bootstrap_cacerts,
    async_fetch_cacerts_unverified_for_manual_confirmation,
    bootstrap_cacerts,
    fetch_cacerts_unverified_for_manual_confirmation,
)
from .errors import (
    EstAuthError,
    EstBootstrapError,
    EstConnectionError,
    EstError,
    EstHttpError,
    EstIssuedCertificateError,
    EstNotFoundError,
    EstPopError,
    EstProtocolResponseError,
    EstRedirectError,
    EstRetryLaterError,
    EstTimeoutError,
    EstTlsError,
)
from .issued import validate_issued_certificate
from .models import CaCertsResult, CsrAttrsResult, CsrSpec, EnrollResult, ServerKeygenResult
from .retry import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RETRY_AFTER_SECONDS,
    MAX_RETRY_AFTER_SECONDS,
    RetryPolicy,
    WaitDecision,
)
from .submit import POP_WHEN_POSSIBLE, PopMode
from .sync import EstClient
from .trust import ClientCredentials, TrustAnchors

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_RETRY_AFTER_SECONDS",
    "MAX_RETRY_AFTER_SECONDS",
    "POP_WHEN_POSSIBLE",
    "AsyncEstClient",
    "CaCertsResult",
    "CandidateCertificate",
    "ChallengeAuth",
    "ClientCredentials",
    "CsrAttrsResult",
    "CsrSpec",
    "EnrollResult",
    "EstAuthError",
    "EstBootstrapError",
    "EstClient",
    "EstConnectionError",
    "EstError",
    "EstHttpError",
    "EstIssuedCertificateError",
    "EstNotFoundError",
    "EstPopError",
    "EstProtocolResponseError",
    "EstRedirectError",
    "EstRetryLaterError",
    "EstTimeoutError",
    "EstTlsError",
    "PopMode",
    "RetryPolicy",
    "ServerKeygenResult",
    "TrustAnchors",
    "UnconfirmedCaCertificates",
    "WaitDecision",
    "apply_csrattrs",
    "async_bootstrap_cacerts",
    "async_fetch_cacerts_unverified_for_manual_confirmation",
    "bootstrap_cacerts",
    "fetch_cacerts_unverified_for_manual_confirmation",
    "key_type_for",
    "renewal_spec",
    "validate_issued_certificate",
]
