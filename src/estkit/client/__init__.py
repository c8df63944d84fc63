"""estkit.client: an EST client (RFC 7030 + RFC 8951) people can rely on against any server.

Sync (:class:`EstClient`) and asyncio (:class:`AsyncEstClient`) clients share one sans-I/O model
(:mod:`.flows`, :mod:`.responses`), so both behave identically. Trust is explicit; talking to a
server that is not verified exists only in :mod:`.bootstrap`, under names that say so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from estkit._lazy import lazy_exports

if TYPE_CHECKING:
    from ._base import renewal_spec
    from ._transport import DEFAULT_TIMEOUT_SECONDS
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

# name -> submodule: each name's module is imported the first time the name is read.
_EXPORTS: dict[str, str] = {
    "DEFAULT_TIMEOUT_SECONDS": "_transport",
    "AsyncEstClient": "aio",
    "CaCertsResult": "models",
    "CandidateCertificate": "bootstrap",
    "ChallengeAuth": "auth",
    "ClientCredentials": "trust",
    "CsrAttrsResult": "models",
    "CsrSpec": "models",
    "DEFAULT_MAX_ATTEMPTS": "retry",
    "DEFAULT_RETRY_AFTER_SECONDS": "retry",
    "EnrollResult": "models",
    "EstAuthError": "errors",
    "EstBootstrapError": "errors",
    "EstClient": "sync",
    "EstConnectionError": "errors",
    "EstError": "errors",
    "EstHttpError": "errors",
    "EstIssuedCertificateError": "errors",
    "EstNotFoundError": "errors",
    "EstPopError": "errors",
    "EstProtocolResponseError": "errors",
    "EstRedirectError": "errors",
    "EstRetryLaterError": "errors",
    "EstTimeoutError": "errors",
    "EstTlsError": "errors",
    "MAX_RETRY_AFTER_SECONDS": "retry",
    "POP_WHEN_POSSIBLE": "submit",
    "PopMode": "submit",
    "RetryPolicy": "retry",
    "ServerKeygenResult": "models",
    "TrustAnchors": "trust",
    "UnconfirmedCaCertificates": "bootstrap",
    "WaitDecision": "retry",
    "apply_csrattrs": "apply",
    "validate_issued_certificate": "issued",
    "async_bootstrap_cacerts": "bootstrap",
    "async_fetch_cacerts_unverified_for_manual_confirmation": "bootstrap",
    "bootstrap_cacerts": "bootstrap",
    "fetch_cacerts_unverified_for_manual_confirmation": "bootstrap",
    "key_type_for": "apply",
    "renewal_spec": "_base",
}


__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_RETRY_AFTER_SECONDS",
    "DEFAULT_TIMEOUT_SECONDS",
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

if not TYPE_CHECKING:  # type checkers read the imports above; Python runs this
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
