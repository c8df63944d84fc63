"""The TLS profile of AMWA BCP-003-01 as names: which suites, in which order (T2, T3).

Why here: the server's context, the client's contexts and the conformance suite's expectations
must list the same suites in the same order, so the list has one home in the wire-format layer.
Only names live here (OpenSSL's for TLS 1.2, IANA's for TLS 1.3); building ``ssl`` contexts is
I/O policy and belongs to the client and server.
"""

from __future__ import annotations

# BCP-003-01 T3: the TLS 1.2 suites, exactly these and in this order (OpenSSL names).
BCP_003_01_TLS12_CIPHERS: tuple[str, ...] = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-SHA256",
    "ECDHE-RSA-AES256-SHA384",
    "DHE-RSA-AES128-SHA256",
    "DHE-RSA-AES256-SHA256",
)

# BCP-003-01 T2: TLS 1.3 suites in its order (AES_128_GCM_SHA256 is the SHALL).
BCP_003_01_TLS13_SUITES: tuple[str, ...] = (
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
)

__all__ = ["BCP_003_01_TLS12_CIPHERS", "BCP_003_01_TLS13_SUITES"]
