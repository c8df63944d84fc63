"""estkit.client: an EST client (RFC 7030 + RFC 8951) people can rely on against any server.

Sync (:class:`EstClient`) and asyncio (:class:`AsyncEstClient`) clients share one sans-I/O model
(:mod:`.flows`, :mod:`.responses`), so both behave identically. Trust is explicit; talking to a
server that is not verified exists only in :mod:`.bootstrap`, under names that say so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from estkit._lazy import lazy_exports

if TYPE_CHECKING:
    from ._base import renewal_spec as renewal_spec
    from ._transport import DEFAULT_TIMEOUT_SECONDS as DEFAULT_TIMEOUT_SECONDS
    from .aio import AsyncEstClient as AsyncEstClient
    from .apply import apply_csrattrs as apply_csrattrs
    from .apply import key_type_for as key_type_for
    from .auth import ChallengeAuth as ChallengeAuth
    from .bootstrap import CandidateCertificate as CandidateCertificate
    from .bootstrap import UnconfirmedCaCertificates as UnconfirmedCaCertificates
    from .bootstrap import async_bootstrap_cacerts as async_bootstrap_cacerts
    from .bootstrap import (
        async_fetch_cacerts_unverified_for_manual_confirmation as async_fetch_cacerts_unverified_for_manual_confirmation,  # noqa: E501 (a name longer than half a line, twice)
    )
    from .bootstrap import bootstrap_cacerts as bootstrap_cacerts
    from .bootstrap import (
        fetch_cacerts_unverified_for_manual_confirmation as fetch_cacerts_unverified_for_manual_confirmation,  # noqa: E501 (a name longer than half a line, twice)
    )
    from .errors import EstAuthError as EstAuthError
    from .errors import EstBootstrapError as EstBootstrapError
    from .errors import EstConnectionError as EstConnectionError
    from .errors import EstError as EstError
    from .errors import EstHttpError as EstHttpError
    from .errors import EstIssuedCertificateError as EstIssuedCertificateError
    from .errors import EstNotFoundError as EstNotFoundError
    from .errors import EstPopError as EstPopError
    from .errors import EstProtocolResponseError as EstProtocolResponseError
    from .errors import EstRedirectError as EstRedirectError
    from .errors import EstRetryLaterError as EstRetryLaterError
    from .errors import EstTimeoutError as EstTimeoutError
    from .errors import EstTlsError as EstTlsError
    from .issued import validate_issued_certificate as validate_issued_certificate
    from .models import CaCertsResult as CaCertsResult
    from .models import CsrAttrsResult as CsrAttrsResult
    from .models import CsrSpec as CsrSpec
    from .models import EnrollResult as EnrollResult
    from .models import ServerKeygenResult as ServerKeygenResult
    from .retry import DEFAULT_MAX_ATTEMPTS as DEFAULT_MAX_ATTEMPTS
    from .retry import DEFAULT_RETRY_AFTER_SECONDS as DEFAULT_RETRY_AFTER_SECONDS
    from .retry import MAX_RETRY_AFTER_SECONDS as MAX_RETRY_AFTER_SECONDS
    from .retry import RetryPolicy as RetryPolicy
    from .retry import WaitDecision as WaitDecision
    from .submit import POP_WHEN_POSSIBLE as POP_WHEN_POSSIBLE
    from .submit import PopMode as PopMode
    from .sync import EstClient as EstClient
    from .trust import ClientCredentials as ClientCredentials
    from .trust import TrustAnchors as TrustAnchors

if not TYPE_CHECKING:  # Python reads the names from the imports above, lazily
    __getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
