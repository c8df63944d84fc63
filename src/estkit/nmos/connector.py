"""The node's only door to the network: EST operations and CRL/OCSP fetches.

Why an interface: the node's logic (which server, which trust, when, what to install) is tested
over months of simulated time against a real CA whose clock is simulated too; that needs the
transport to be swappable. :class:`ClientConnector`, the real one, is a thin layer over
:mod:`estkit.client` (``EstClient`` and its bootstrap module) and adds nothing to the protocol.

Inside :meth:`ClientConnector.session` (the workflow's run) the steps share what does not change
between them: one ``EstClient``, so one kept-alive TLS connection, per server, trust anchors,
client certificate and thread (a client is not thread-safe, and the workflow enrolls its
certificates from one thread each). Each enrollment asks ``/csrattrs`` once, and that request
also opens the connection its CSR is linked to (:mod:`estkit.client.submit`, issue 23).
"""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections.abc import Iterator, Sequence
from typing import Protocol

from cryptography import x509

from estkit.client.bootstrap import fetch_cacerts_unverified_for_manual_confirmation
from estkit.client.deadline import cancellable
from estkit.client.models import CsrSpec, EnrollResult
from estkit.client.retry import RetryPolicy, WaitCallback
from estkit.client.status import MAX_CRL_BYTES, HttpFetcher
from estkit.client.submit import POP_WHEN_POSSIBLE, PopMode
from estkit.client.sync import EstClient
from estkit.client.trust import ClientCredentials, TrustAnchors, build_ssl_context
from estkit.nmos.clock import Clock
from estkit.nmos.discovery import ServerAdvert
from estkit.protocol.certs import sha256_fingerprint
from estkit.protocol.limits import DEFAULT_MAX_ATTEMPTS

# The trust anchors that verify an https CRL or OCSP URL.
Trust = Sequence[x509.Certificate]
# CRL and OCSP fetches, for the whole exchange (connect to last byte): a responder that needs
# longer is as good as down for this check.
FETCH_TIMEOUT_SECONDS = 10.0
# One EST exchange, connect to last byte; generous because a manual-approval server may be slow
# to accept, and an overall bound so a trickling server cannot hold the node (issue 20).
EST_TIMEOUT_SECONDS = 30.0


class EstConnector(Protocol):
    """What the node asks of the network. Every method raises ``estkit.client.EstError``.

    A connector may also offer ``session()``, a context manager inside which it may share
    connections and server answers between calls (see :meth:`ClientConnector.session`); the node
    uses it when present. One that may be called from several threads at once says so with a
    true ``concurrent`` attribute: only then does the workflow enroll its certificates at once
    (:mod:`estkit.nmos.lanes`); any other connector is called from one thread at a time.
    """

    def cacerts(
        self, server: ServerAdvert, trust: Sequence[x509.Certificate]
    ) -> list[x509.Certificate]:
        """``/cacerts`` over a connection verified against ``trust``."""
        ...

    def cacerts_with_explicit_trust(self, server: ServerAdvert) -> list[x509.Certificate]:
        """``/cacerts`` trusting the server WITHOUT verifying it (C4 "explicit trust")."""
        ...

    def enroll(
        self,
        server: ServerAdvert,
        spec: CsrSpec,
        *,
        trust: Sequence[x509.Certificate],
        credentials: ClientCredentials | None,
        renewal: bool,
    ) -> EnrollResult:
        """``/simpleenroll`` (or ``/simplereenroll`` when ``renewal``) for ``spec``."""
        ...

    def fetch(self, url: str, trust: Trust, *, limit: int = MAX_CRL_BYTES) -> bytes:
        """GET a CRL (http, or https verified against ``trust``), at most ``limit`` bytes."""
        ...

    def post(
        self, url: str, body: bytes, content_type: str, trust: Trust, *, limit: int = MAX_CRL_BYTES
    ) -> bytes:
        """POST an OCSP request; the answer is at most ``limit`` bytes."""
        ...


# What makes two EST exchanges able to share one client (one TLS connection): the server's URL
# and label, the trust anchors that verify it, the client certificate presented (by
# fingerprint: a renewed certificate at the same path is another identity), and the thread (an
# EstClient sends one request at a time; the workflow's enrollments run in a thread each).
_ClientKey = tuple[str, str | None, tuple[str, ...], tuple[str, str] | None, int]


class _Session:
    """What the steps of one :meth:`ClientConnector.session` share."""

    def __init__(self) -> None:
        self.clients: dict[_ClientKey, EstClient] = {}

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.clients.clear()


class ClientConnector:
    """:class:`EstConnector` over :class:`estkit.client.EstClient`."""

    # Safe to call from several threads at once: each thread gets its own client (one
    # connection each) in a session, and a new one per call outside a session.
    concurrent = True

    def __init__(
        self,
        clock: Clock,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        on_wait: WaitCallback | None = None,
        timeout: float = EST_TIMEOUT_SECONDS,
        pop: PopMode = POP_WHEN_POSSIBLE,
        cancel: threading.Event | None = None,
    ) -> None:
        self.clock = clock
        # Set when the node stops (SIGTERM): exchanges in flight are abandoned, none start.
        self.cancel = cancel
        self.retry = RetryPolicy(max_attempts=max_attempts)
        self.on_wait = on_wait
        self.timeout = timeout
        # C7 "TLS-session linking SHOULD be included": link whenever the TLS version has a
        # tls-unique (1.2); under TLS 1.3 only when /csrattrs requires it (then pinned to 1.2).
        self.pop = pop
        self._session: _Session | None = None

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Share clients (kept-alive connections) between the calls made inside; all closed at
        the end. Nested sessions join the outermost one.

        Nothing about trust is shared loosely: a client is reused only for the same server,
        the same trust anchors and the same client certificate (and thread), so every exchange
        is verified exactly as if it had its own connection. Explicit-trust ``/cacerts`` never
        joins.
        """
        if self._session is not None:
            yield
            return
        self._session = _Session()
        try:
            yield
        finally:
            session, self._session = self._session, None
            session.close()

    @contextlib.contextmanager
    def _client(
        self,
        server: ServerAdvert,
        trust: Sequence[x509.Certificate],
        credentials: ClientCredentials | None = None,
    ) -> Iterator[EstClient]:
        """A client for one exchange: the session's (kept open) or a new one (closed after)."""
        session = self._session
        if session is None:
            with self._new_client(server, trust, credentials) as client:
                yield client
            return
        identity = (
            (sha256_fingerprint(credentials.certificate), str(credentials.key_file))
            if credentials is not None
            else None
        )
        key: _ClientKey = (
            server.base_url,
            server.label,
            tuple(sha256_fingerprint(cert) for cert in trust),
            identity,
            threading.get_ident(),
        )
        # Only this thread uses this key, so no other can create the same client meanwhile.
        if key not in session.clients:
            session.clients[key] = self._new_client(server, trust, credentials)
        yield session.clients[key]

    def _new_client(
        self,
        server: ServerAdvert,
        trust: Sequence[x509.Certificate],
        credentials: ClientCredentials | None = None,
    ) -> EstClient:
        return EstClient(
            server.base_url,
            label=server.label,
            trust=TrustAnchors.from_certificates(trust),
            credentials=credentials,
            retry=self.retry,
            on_wait=self.on_wait,
            sleep=self.clock.sleep,
            clock=self.clock.now,
            timeout=self.timeout,
        )

    def cacerts(
        self, server: ServerAdvert, trust: Sequence[x509.Certificate]
    ) -> list[x509.Certificate]:
        with cancellable(self.cancel), self._client(server, trust) as client:
            return list(client.cacerts().certificates)

    def cacerts_with_explicit_trust(self, server: ServerAdvert) -> list[x509.Certificate]:
        # BCP-003-03 C4 "explicit trust of the EST server": the operator (through the node's
        # configuration, default on) has decided that whatever server the network points at is
        # the one to trust for this first request. The client library keeps such answers
        # unusable until confirmed; the configuration switch is that confirmation.
        with cancellable(self.cancel):
            unconfirmed = fetch_cacerts_unverified_for_manual_confirmation(
                server.base_url,
                label=server.label,
                timeout=self.timeout,
                retry=self.retry,
                sleep=self.clock.sleep,
                clock=self.clock.now,
            )
        return list(unconfirmed.confirm().certificates)

    def enroll(
        self,
        server: ServerAdvert,
        spec: CsrSpec,
        *,
        trust: Sequence[x509.Certificate],
        credentials: ClientCredentials | None,
        renewal: bool,
    ) -> EnrollResult:
        with cancellable(self.cancel), self._client(server, trust, credentials) as client:
            if renewal:
                return client.simplereenroll(spec, pop=self.pop)
            return client.simpleenroll(spec, pop=self.pop)

    def _fetcher(self, url: str, trust: Trust) -> HttpFetcher:
        verify: ssl.SSLContext | bool = True
        if url.lower().startswith("https://"):
            verify = build_ssl_context(TrustAnchors.from_certificates(trust))
        return HttpFetcher(verify, FETCH_TIMEOUT_SECONDS)

    def fetch(self, url: str, trust: Trust, *, limit: int = MAX_CRL_BYTES) -> bytes:
        with cancellable(self.cancel), contextlib.closing(self._fetcher(url, trust)) as fetcher:
            return fetcher.get(url, limit)

    def post(
        self, url: str, body: bytes, content_type: str, trust: Trust, *, limit: int = MAX_CRL_BYTES
    ) -> bytes:
        with cancellable(self.cancel), contextlib.closing(self._fetcher(url, trust)) as fetcher:
            return fetcher.post(url, body, content_type, limit)
