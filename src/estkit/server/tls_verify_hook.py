"""Let every client certificate through the TLS handshake, so the application can judge it.

Why this exists (and why it uses ctypes): BCP-003-03 S3/S4 want a rogue, expired or revoked client
certificate to get a clear answer (an HTTP 403 naming the reason, or a place in the manual-approval
queue), not a bare TLS alert the device owner cannot interpret. Python 3.11's ``ssl`` module has no
certificate-verify callback, and with ``CERT_OPTIONAL`` OpenSSL aborts the handshake as soon as a
presented certificate fails to verify. No library we depend on offers a hook on the stdlib
``SSLContext`` that aiohttp needs, so we install OpenSSL's own verify callback on the context's
``SSL_CTX`` with ctypes: the callback accepts every certificate and the server verifies the chain
afterwards with ``cryptography`` (see ``clientauth.py``).

Since nothing in the handshake acts on OpenSSL's chain verdict, the context also gets an
application verification callback (``SSL_CTX_set_cert_verify_callback``) that accepts the presented
chain without running ``X509_verify_cert``: that skips building the chain, checking each
signature (a manufacturer's P-384 root sent along costs a P-384 verification) and calling the
per-certificate callback (a GIL round trip each) on every handshake, 0.05-0.1 ms of server CPU
per handshake with a two-certificate client chain (issue 16). The handshake still checks the
client's CertificateVerify, so the peer holds the key of the certificate it presented.

The pointer to the ``SSL_CTX`` is read from the ``PySSLContext`` object (the field right after
``PyObject_HEAD``). That layout is a CPython implementation detail, so every step is checked: the
pointer is only trusted if ``SSL_CTX_get_verify_mode`` on it returns exactly what Python set, and on
any failure :func:`install_accept_all_verify_callback` returns False so the caller can fall back to
verification inside the handshake (and log that it did).

The same guarded pointer is used to set the TLS 1.3 suite order (BCP-003-01 T2 puts
AES_128_GCM_SHA256 first; OpenSSL's default puts AES_256 first and Python 3.11 has no setter).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import ssl
import sys

logger = logging.getLogger("estkit.server")

# OpenSSL's SSL_VERIFY_PEER: ask for a certificate, do not fail when none is sent (= CERT_OPTIONAL).
_SSL_VERIFY_PEER = 1
# The shared library the stdlib ``_ssl`` module is linked against on OpenSSL 3 systems.
_LIBSSL_NAMES = ("libssl.so.3", "libssl.3.dylib")

_VERIFY_CALLBACK_TYPE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
# int (*)(X509_STORE_CTX *, void *arg): replaces X509_verify_cert for the context's handshakes.
_CERT_VERIFY_CALLBACK_TYPE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


def _accept_any_certificate(preverify_ok: int, store_ctx: int | None) -> int:
    """OpenSSL verify callback: 1 = carry on with the handshake, whatever the chain looks like."""
    return 1


def _accept_any_chain(store_ctx: int | None, arg: int | None) -> int:
    """OpenSSL certificate-verify callback: 1 = the chain is accepted, without X509_verify_cert."""
    return 1


# Module-level references: OpenSSL keeps the raw function pointers, so the ctypes thunks must never
# be garbage-collected while any SSL_CTX may still call them.
_ACCEPT_CALLBACK = _VERIFY_CALLBACK_TYPE(_accept_any_certificate)
_ACCEPT_CHAIN_CALLBACK = _CERT_VERIFY_CALLBACK_TYPE(_accept_any_chain)

_libssl: ctypes.CDLL | None = None


def _load_libssl() -> ctypes.CDLL | None:
    global _libssl
    if _libssl is not None:
        return _libssl
    if not ssl.OPENSSL_VERSION.startswith("OpenSSL 3."):
        logger.warning("TLS verify hook: unexpected %s; expected OpenSSL 3", ssl.OPENSSL_VERSION)
        return None
    candidates = list(_LIBSSL_NAMES)
    found = ctypes.util.find_library("ssl")
    if found:
        candidates.append(found)
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_get_verify_mode.restype = ctypes.c_int
        lib.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        lib.SSL_CTX_set_verify.restype = None
        lib.SSL_CTX_set_cert_verify_callback.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.SSL_CTX_set_cert_verify_callback.restype = None
        lib.SSL_CTX_set_ciphersuites.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.SSL_CTX_set_ciphersuites.restype = ctypes.c_int
        _libssl = lib
        return lib
    return None


def _ssl_ctx_pointer(context: ssl.SSLContext, lib: ctypes.CDLL) -> int | None:
    """Return the SSL_CTX* of ``context``, or None unless it provably is one."""
    if sys.implementation.name != "cpython":
        return None
    # PySSLContext starts with PyObject_HEAD (refcount + type pointer), then ``SSL_CTX *ctx``.
    offset = 2 * ctypes.sizeof(ctypes.c_void_p)
    pointer = ctypes.c_void_p.from_address(id(context) + offset).value
    if not pointer:
        return None
    if lib.SSL_CTX_get_verify_mode(pointer) != _SSL_VERIFY_PEER:
        return None
    return pointer


def install_accept_all_verify_callback(context: ssl.SSLContext) -> bool:
    """Make ``context`` request a client certificate and accept any, for checking in the app.

    Returns True when installed. Returns False (and changes nothing the caller relies on) when the
    hook cannot be installed safely; the caller must then verify inside the handshake.
    """
    try:
        # Set through Python first: that proves the pointer (mode must read back as VERIFY_PEER).
        context.verify_mode = ssl.CERT_OPTIONAL
        lib = _load_libssl()
        if lib is None:
            return False
        pointer = _ssl_ctx_pointer(context, lib)
        if pointer is None:
            logger.warning("TLS verify hook: could not locate the SSL_CTX safely")
            return False
        callback = ctypes.cast(_ACCEPT_CALLBACK, ctypes.c_void_p)
        lib.SSL_CTX_set_verify(pointer, _SSL_VERIFY_PEER, callback)
        chain_callback = ctypes.cast(_ACCEPT_CHAIN_CALLBACK, ctypes.c_void_p)
        lib.SSL_CTX_set_cert_verify_callback(pointer, chain_callback, None)
        return True
    except (OSError, AttributeError, ValueError, ctypes.ArgumentError) as exc:
        logger.warning("TLS verify hook: not installed (%s)", exc)
        return False


def set_tls13_ciphersuites(context: ssl.SSLContext, suites: str) -> bool:
    """Set the TLS 1.3 suite list (OpenSSL syntax, ``:``-separated); False if not possible."""
    try:
        lib = _load_libssl()
        if lib is None:
            return False
        pointer = _ssl_ctx_pointer(context, lib)
        if pointer is None:
            return False
        status: int = lib.SSL_CTX_set_ciphersuites(pointer, suites.encode("ascii"))
        return status == 1
    except (OSError, AttributeError, ValueError, ctypes.ArgumentError) as exc:
        logger.warning("TLS 1.3 suite order not set (%s)", exc)
        return False
