"""The server's TLS policy: AMWA BCP-003-01 (T1–T3, T5) expressed as one ``ssl.SSLContext``.

Why one function: the same context serves ``estkit server serve``, the test fixtures and the
benchmark, so what the tests check (TLS 1.1 refused, AES128-SHA refused, both certificate types
presented) is what users run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from estkit.protocol.tlsprofile import BCP_003_01_TLS12_CIPHERS, BCP_003_01_TLS13_SUITES
from estkit.server.config import CertificatePair, ConfigError
from estkit.server.tls_verify_hook import (
    install_accept_all_verify_callback,
    set_tls13_ciphersuites,
)

logger = logging.getLogger("estkit.server")

# How often (at most) a handshake looks at the certificate files' mtimes: a rollover's new
# certificates are presented within this time, and a busy server stats its files once a second
# instead of on every handshake.
RELOAD_CHECK_SECONDS = 1.0

# RFC 7919 ffdhe2048, the named finite-field group, for the DHE-RSA suites of T3. Embedded because
# Python 3.11 can only load DH parameters from a file and OpenSSL 3's automatic DH selection is not
# reachable from the stdlib. Generated with `openssl genpkey -genparam -algorithm DH -pkeyopt
# group:ffdhe2048` (a fixed, published group: nothing secret here).
FFDHE2048_PEM = b"""-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""


@dataclass(frozen=True)
class ServerTlsContext:
    """The context plus how client certificates are checked.

    ``verify_in_app`` True: the handshake accepts any client certificate and the application
    verifies it (clear HTTP refusals). False: the hook could not be installed, OpenSSL verifies in
    the handshake against ``fallback_roots_pem`` and bad certificates end with a TLS alert.
    """

    context: ssl.SSLContext
    verify_in_app: bool


def _load_dh_params(context: ssl.SSLContext) -> None:
    fd, name = tempfile.mkstemp(prefix="estkit-ffdhe2048-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(FFDHE2048_PEM)
        context.load_dh_params(name)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


# TLS 1.3 session tickets per handshake (see build_server_context).
TLS13_TICKETS = 1


def build_server_context(
    pairs: Sequence[CertificatePair],
    *,
    fallback_roots_pem: str | None = None,
    reload: bool = False,
) -> ServerTlsContext:
    """Build the BCP-003-01 server context presenting every certificate in ``pairs`` at once.

    Loading an RSA and an ECDSA certificate into the same context lets OpenSSL pick by the
    negotiated suite, so ECDHE-ECDSA and the mandatory ECDHE-RSA-AES128-GCM-SHA256 both work (T5).
    ``reload``: present changed certificate files from the next handshake on (a running server).
    """
    if not pairs:
        raise ValueError("no server certificate configured: run `estkit server init DIR` first")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # T1: no SSL, TLS 1.0 or 1.1
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_ciphers(":".join(BCP_003_01_TLS12_CIPHERS))
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_NO_RENEGOTIATION
    # No stateless session tickets: OpenSSL 3.0 re-encodes and re-decodes the whole session,
    # client certificate included, to make each one (about 0.25 ms of CPU per TLS 1.2 handshake,
    # 0.45 ms per TLS 1.3 handshake with its two tickets; issue 16), and their key is random per
    # worker process, so a ticket only ever resumed on the worker that made it. TLS 1.2 clients
    # resume by session ID from the server's cache instead. TLS 1.3 gets one stateful ticket:
    # not none, because the ticket is the server's only flight after the client's Finished, and
    # without it a client that sends its request in a second small segment with Nagle on waits
    # for the server's delayed ACK, about 40 ms per connection (seen with `num_tickets = 0`);
    # not two, because OpenSSL then keeps the session in the cache, about 11 KB per handshake,
    # where one ticket leaves the cache empty (tests/server/test_tls.py checks both).
    context.options |= ssl.OP_NO_TICKET
    context.num_tickets = TLS13_TICKETS
    _load_dh_params(context)
    for pair in pairs:
        try:
            context.load_cert_chain(pair.certificate, pair.key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load the server certificate {pair.certificate} with key {pair.key}: {exc}",
                "re-create them: initialise the data directory again, forcing it",
                params=("force_init",),
            ) from exc
    verify_in_app = install_accept_all_verify_callback(context)
    if not verify_in_app:
        logger.warning(
            "client certificates are verified in the TLS handshake (fallback): untrusted "
            "certificates get a TLS alert instead of an HTTP 403 or the approval queue"
        )
        context.verify_mode = ssl.CERT_OPTIONAL
        if fallback_roots_pem:
            context.load_verify_locations(cadata=fallback_roots_pem)
    if not set_tls13_ciphersuites(context, ":".join(BCP_003_01_TLS13_SUITES)):
        logger.warning("TLS 1.3 suites keep OpenSSL's default order")
    if reload:
        context.sni_callback = _CertificateReloader(
            pairs, lambda: build_server_context(pairs, fallback_roots_pem=fallback_roots_pem)
        )
    return ServerTlsContext(context=context, verify_in_app=verify_in_app)


def _stamp(pairs: Sequence[CertificatePair]) -> tuple[tuple[int, int], ...] | None:
    try:
        stats = [os.stat(path) for pair in pairs for path in (pair.certificate, pair.key)]
    except OSError:
        return None
    return tuple((stat.st_mtime_ns, stat.st_size) for stat in stats)


class _CertificateReloader:
    """Presents the current certificate files from the next handshake on (no restart).

    Why: ``estkit server rollover`` issues the server's certificates again under the new root
    (:mod:`estkit.server.tls_certs`); a running server must present them, or devices given only
    the new root cannot connect. Run as the context's SNI callback, which OpenSSL calls for every
    ClientHello (with ``server_name`` None when the client sent none): when the files changed it
    builds a context from them with the same policy and moves the handshake onto it. A set of
    files that does not load (caught between the two renames of a pair) keeps the previous
    certificates and is tried again at the next check.
    """

    def __init__(
        self, pairs: Sequence[CertificatePair], build: Callable[[], ServerTlsContext]
    ) -> None:
        self._pairs = tuple(pairs)
        self._build = build
        self._stamp = _stamp(pairs)
        self._checked = time.monotonic()
        self._current: ssl.SSLContext | None = None

    def __call__(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: object
    ) -> None:
        now = time.monotonic()
        if now - self._checked >= RELOAD_CHECK_SECONDS:
            self._checked = now
            stamp = _stamp(self._pairs)
            if stamp is not None and stamp != self._stamp:
                try:
                    self._current = self._build().context
                    self._stamp = stamp
                    logger.info("TLS server certificates reloaded from their files")
                except ValueError as exc:
                    logger.error("keeping the TLS certificates in use: %s", exc)
        if self._current is not None:
            connection.context = self._current
