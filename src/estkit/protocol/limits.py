"""Every limit the wire layer enforces, in one place, each with the precedent behind its value.

Why named constants: a limit buried in code is a limit nobody can review or tune. Like h11's
``DEFAULT_MAX_INCOMPLETE_EVENT_SIZE``, each value here says where it comes from.
"""

from __future__ import annotations

# A PKCS#10 CSR with an RSA-4096 key, a dozen SANs and a few attributes is under 4 KiB of DER and
# ~6 KiB base64. 64 KiB is generous headroom yet small enough that a flood of oversized bodies
# cannot exhaust memory (h11 uses 16 KiB for headers; nginx's client_body_buffer_size is 8-16 KiB).
MAX_REQUEST_BODY_BYTES = 64 * 1024

# A /cacerts reply during a root rollover carries up to ~5 certificates (OldWithOld, NewWithNew,
# OldWithNew, NewWithOld, intermediates): ~20 KiB. 1 MiB leaves room for odd servers that return
# long bundles while bounding what a client buffers from an untrusted (bootstrap) server.
MAX_RESPONSE_BODY_BYTES = 1024 * 1024

# OpenSSL's default verify depth is 100 and real chains are 2-4 deep; 64 certificates in one
# certs-only structure is far more than any legitimate EST response and caps parsing work.
MAX_CERTS_IN_PKCS7 = 64

# An EST label is one URL path segment naming a CA profile (RFC 7030 §3.2.2). DNS labels are at
# most 63 octets (RFC 1035 §2.3.4); 64 keeps labels human-sized and log lines short.
MAX_LABEL_LENGTH = 64

# NIST SP 800-131A Rev. 2 and the CA/Browser Forum Baseline Requirements §6.1.5: RSA keys of at
# least 2048 bits. BCP-003-01 likewise requires 2048-bit RSA at minimum.
MIN_RSA_BITS = 2048

# The NIST prime curves that TLS 1.2/1.3 stacks and BCP-003-01 support (RFC 8422 §5.1.1).
ALLOWED_CURVES = ("secp256r1", "secp384r1", "secp521r1")

# MD5 (RFC 6151) and SHA-1 (RFC 9155, CA/B Forum BR §7.1.3.2) signatures are forbidden; the SHA-2
# family of at least 256 bits is what every current profile requires.
ALLOWED_SIGNATURE_HASHES = ("sha256", "sha384", "sha512")

# RFC 7030 §4.2.3 lets the server choose; 10 s matches libest's default retry period and keeps a
# manual-approval round trip responsive without hammering the server.
DEFAULT_RETRY_AFTER_SECONDS = 10

# A client should never sleep unboundedly on a server's say-so: an hour covers operator approval
# windows while keeping a misconfigured "Retry-After: 86400" from silently parking a device a day.
MAX_RETRY_AFTER_SECONDS = 3600

# Bounded retries for 202/503 polling: enough for a short operator approval at the default
# interval, bounded so a device reports failure instead of polling forever.
DEFAULT_MAX_ATTEMPTS = 5

# Multipart boundaries are at most 70 characters (RFC 2046 §5.1.1).
MAX_BOUNDARY_LENGTH = 70

# A Content-Type header value longer than this is not a media type but an attack or a bug; HTTP
# servers commonly cap a whole header line at 8 KiB (nginx large_client_header_buffers).
MAX_MEDIA_TYPE_LENGTH = 1024

# Number of CsrAttrs elements we accept: RFC 7030 examples have 4; libest caps at ~100 entries.
MAX_CSRATTRS_ITEMS = 256

__all__ = [
    "ALLOWED_CURVES",
    "ALLOWED_SIGNATURE_HASHES",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_RETRY_AFTER_SECONDS",
    "MAX_BOUNDARY_LENGTH",
    "MAX_CERTS_IN_PKCS7",
    "MAX_CSRATTRS_ITEMS",
    "MAX_LABEL_LENGTH",
    "MAX_MEDIA_TYPE_LENGTH",
    "MAX_REQUEST_BODY_BYTES",
    "MAX_RESPONSE_BODY_BYTES",
    "MAX_RETRY_AFTER_SECONDS",
    "MIN_RSA_BITS",
]
