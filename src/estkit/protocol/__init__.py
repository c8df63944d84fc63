"""estkit.protocol: the EST wire format (RFC 7030, RFC 8951) as pure functions, no I/O.

Why one flat namespace: the client, server, NMOS node and conformance suite all speak the same
wire format, so they import it from one place (``from estkit.protocol import decode_body``) and
can never drift apart. Nothing here opens a socket or a file; see docs/internal-api.md.
"""

from __future__ import annotations

from .certs import *  # noqa: F403
from .certs import __all__ as _certs_all
from .csr import *  # noqa: F403
from .csr import __all__ as _csr_all
from .csrattrs import *  # noqa: F403
from .csrattrs import __all__ as _csrattrs_all
from .encoding import *  # noqa: F403
from .encoding import __all__ as _encoding_all
from .errors import *  # noqa: F403
from .errors import __all__ as _errors_all
from .keys import *  # noqa: F403
from .keys import __all__ as _keys_all
from .limits import *  # noqa: F403
from .limits import __all__ as _limits_all
from .media import *  # noqa: F403
from .media import __all__ as _media_all
from .paths import *  # noqa: F403
from .paths import __all__ as _paths_all
from .pkcs7 import *  # noqa: F403
from .pkcs7 import __all__ as _pkcs7_all
from .pop import *  # noqa: F403
from .pop import __all__ as _pop_all
from .retry import *  # noqa: F403
from .retry import __all__ as _retry_all
from .rollover import *  # noqa: F403
from .rollover import __all__ as _rollover_all
from .serverkeygen import *  # noqa: F403
from .serverkeygen import __all__ as _serverkeygen_all

__all__ = [
    *_certs_all,
    *_csr_all,
    *_csrattrs_all,
    *_encoding_all,
    *_errors_all,
    *_keys_all,
    *_limits_all,
    *_media_all,
    *_paths_all,
    *_pkcs7_all,
    *_pop_all,
    *_retry_all,
    *_rollover_all,
    *_serverkeygen_all,
]
