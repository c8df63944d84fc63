"""Configuration shared by :class:`EstClient` and :class:`AsyncEstClient`.

Why a common base: both clients must accept the same arguments, refuse the same mistakes and build
the same flows; only running the flows differs (blocking vs ``await``).
"""

from __future__ import annotations

import functools
import inspect
import os
import ssl
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from cryptography import x509

from estkit.protocol import describe_public_key, generate_private_key

from . import flows, submit
from ._transport import DEFAULT_TIMEOUT_SECONDS, HttpClientOptions, http_client_options
from .auth import AuthScheme, ChallengeAuth
from .endpoint import EstEndpoint
from .issued import order_chain
from .models import CaCertsResult, CsrAttrsResult, CsrSpec, EnrollResult, ServerKeygenResult
from .responses import RequestContext
from .retry import RetryPolicy, WaitCallback, utc_now
from .submit import PopMode
from .trust import (
    BCP_003_01_TLS12_CIPHERS,
    ClientCredentials,
    TrustAnchors,
    build_ssl_context,
)

if TYPE_CHECKING:
    from .aio import AsyncEstClient
    from .sync import EstClient

TrustInput = TrustAnchors | Sequence[str | os.PathLike[str] | x509.Certificate] | str | Path | None

# Key used only to sign a /serverkeygen request: the server ignores its public key (RFC 7030
# §4.4.1) and P-256 is the cheapest key that every server accepts.
SERVERKEYGEN_SIGNING_KEY_TYPE = "p256"


def coerce_trust(trust: TrustInput, use_system_trust: bool) -> TrustAnchors:
    """Accept anchors as a :class:`TrustAnchors`, PEM path(s) or certificate objects."""
    if isinstance(trust, TrustAnchors):
        if use_system_trust and not trust.use_system_trust:
            return TrustAnchors(trust.certificates, True, trust.sources)
        return trust
    if trust is None:
        return TrustAnchors((), use_system_trust, ())
    if isinstance(trust, (str, Path)):
        return TrustAnchors.from_files([trust], use_system_trust=use_system_trust)
    items = list(trust)
    if all(isinstance(item, x509.Certificate) for item in items):
        return TrustAnchors.from_certificates(
            [item for item in items if isinstance(item, x509.Certificate)],
            use_system_trust=use_system_trust,
        )
    if any(isinstance(item, x509.Certificate) for item in items):
        raise TypeError("give trust anchors either as PEM paths or as certificates, not both")
    return TrustAnchors.from_files(
        [item for item in items if not isinstance(item, x509.Certificate)],
        use_system_trust=use_system_trust,
    )


def renewal_spec(credentials: ClientCredentials, *, reuse_key: bool = False) -> CsrSpec:
    """A re-enrollment CSR description: subject and SANs of the current certificate, and a new
    key of the same type unless ``reuse_key`` (BCP-003-03 C13 wants a new key pair)."""
    if reuse_key:
        key = credentials.key
    else:
        info = describe_public_key(credentials.key.public_key())
        if info.key_type is None:
            raise ValueError(f"cannot make a new key like the current one ({info.description})")
        key = generate_private_key(info.key_type)
    return CsrSpec.for_renewal(credentials.certificate, key)


Http = TypeVar("Http")
P = ParamSpec("P")
T = TypeVar("T")


class operation(Generic[P, T]):
    """A client operation, declared once in :class:`ClientBase` by the flow it runs.

    On an :class:`EstClient` it is a method returning the flow's result, on an
    :class:`AsyncEstClient` a coroutine method: each client's ``_operation`` says how it runs a
    flow. Signature and documentation are those of ``build``.
    """

    def __init__(self, build: Callable[Concatenate[ClientBase, P], flows.Flow[T]]) -> None:
        self.build = build
        self.__doc__ = build.__doc__
        self.__wrapped__ = build
        # What ``inspect.signature`` (and so ``help``) shows for the method of a client.
        signature = inspect.signature(build)
        self._bound_signature = signature.replace(
            parameters=list(signature.parameters.values())[1:],
            return_annotation=inspect.Signature.empty,
        )

    @overload
    def __get__(self, instance: None, owner: type) -> operation[P, T]: ...
    @overload
    def __get__(self, instance: EstClient, owner: type) -> Callable[P, T]: ...
    @overload
    def __get__(
        self, instance: AsyncEstClient, owner: type
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...
    def __get__(self, instance: ClientBase | None, owner: type) -> Any:
        if instance is None:
            return self
        run: Any = instance._operation(self.build)  # a function: it takes the attributes below
        functools.update_wrapper(run, self.build)
        run.__name__ = self.build.__name__.lstrip("_")
        run.__qualname__ = f"{owner.__qualname__}.{run.__name__}"
        run.__signature__ = self._bound_signature  # read by inspect.signature and help()
        return run

    def __call__(self, client: ClientBase, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Called on the class, as ``EstClient.cacerts(client)``, like a method."""
        return client._operation(self.build)(*args, **kwargs)


class OperationConnection(Generic[Http]):
    """Which HTTP client one operation sends each request on (the same for both clients).

    Proof-of-possession requests (``Send.dedicated``) need one connection for the operation:
    ``shared`` when it holds one connection only (``own_when_unpinned`` False) or, once the flow
    pinned TLS 1.2 (see :mod:`.submit`), a one-connection client made by ``make(pinned)`` for this
    operation. The flow checks that the linked request really travelled on the connection it was
    linked to. The caller closes what :meth:`pin` hands back and, at the end, :attr:`own`.
    """

    def __init__(
        self, shared: Http, make: Callable[[bool], Http], *, own_when_unpinned: bool
    ) -> None:
        self.shared = shared
        self.own: Http | None = None
        self.pinned = False
        self._make = make
        self._own_when_unpinned = own_when_unpinned

    def client_for(self, action: flows.Send) -> Http:
        if not action.dedicated or not (self.pinned or self._own_when_unpinned):
            return self.shared
        if self.own is None:
            self.own = self._make(self.pinned)
        return self.own

    def pin(self) -> Http | None:
        """From now on TLS 1.2 at most; returns the operation's client to close, if any."""
        previous, self.own = self.own, None
        self.pinned = True
        return previous


class ClientBase:
    """Everything but the I/O: validated settings, TLS contexts, auth, flow construction."""

    def __init__(
        self,
        url: str,
        *,
        label: str | None = None,
        trust: TrustInput = None,
        use_system_trust: bool = False,
        credentials: ClientCredentials | None = None,
        username: str | None = None,
        password: str | None = None,
        auth_scheme: AuthScheme = "any",
        preemptive_basic: bool = False,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        retry: RetryPolicy | None = None,
        on_wait: WaitCallback | None = None,
        clock: Callable[[], datetime] = utc_now,
        pin_tls12_for_pop: bool = True,
        ciphers: str = BCP_003_01_TLS12_CIPHERS,
    ) -> None:
        self.endpoint = EstEndpoint.parse(url, label)
        self.trust = coerce_trust(trust, use_system_trust)
        if self.trust.empty:
            raise ValueError(
                "no trust anchors for the EST server: pass trust= (PEM file(s) or certificates), "
                "use_system_trust=True, or first run bootstrap_cacerts(...) with the expected "
                "fingerprint"
            )
        if (username is None) != (password is None):
            raise ValueError("HTTP authentication needs both a user name and a password")
        self._trust_description = self.trust.describe()  # for error messages, made once
        self.credentials = credentials
        self.timeout = timeout
        self.on_wait = on_wait
        self.clock = clock
        self._ciphers = ciphers
        if preemptive_basic and not username:
            raise ValueError("sending Basic credentials up front needs a user name and password")
        self._auth = (
            ChallengeAuth(username, password, auth_scheme, preemptive=preemptive_basic)
            if username and password is not None
            else None
        )
        self._ssl_context = build_ssl_context(self.trust, credentials=credentials, ciphers=ciphers)
        self._pinned_context: ssl.SSLContext | None = None
        self.settings = flows.FlowSettings(
            endpoint=self.endpoint,
            retry=retry or RetryPolicy(),
            clock=clock,
            context=RequestContext(
                label=self.endpoint.label,
                has_http_credentials=self._auth is not None,
                has_client_certificate=credentials is not None,
            ),
            credentials=credentials,
            pin_tls12_for_pop=pin_tls12_for_pop,
        )

    @property
    def url(self) -> str:
        return str(self.endpoint)

    def _context(self, pinned: bool) -> ssl.SSLContext:
        if not pinned:
            return self._ssl_context
        if self._pinned_context is None:
            self._pinned_context = build_ssl_context(
                self.trust, credentials=self.credentials, max_tls12=True, ciphers=self._ciphers
            )
        return self._pinned_context

    def _http_options(self) -> HttpClientOptions:
        return http_client_options(self.timeout)

    # --- the operations, each written once as the flow it runs ------------------------------
    # EstClient runs each flow blocking, AsyncEstClient awaits it (see :class:`operation`): the
    # signatures and documentation below are the public ones of both clients.

    def _cacerts(self) -> flows.Flow[CaCertsResult]:
        """``GET /cacerts``: the CA certificates, classified (roots, rollover, intermediates)."""
        return flows.cacerts_flow(self.settings)

    def _csrattrs(self) -> flows.Flow[CsrAttrsResult]:
        """``GET /csrattrs``: what the server wants in a CSR (empty when it has no wishes)."""
        return flows.csrattrs_flow(self.settings)

    def _simpleenroll(
        self,
        request: x509.CertificateSigningRequest | CsrSpec,
        *,
        pop: PopMode = None,
        apply_csrattrs: bool = False,
        csrattrs: CsrAttrsResult | None = None,
    ) -> flows.Flow[EnrollResult]:
        """``POST /simpleenroll`` with a finished CSR or a :class:`CsrSpec` to build one from.

        ``pop``: True links the CSR to the TLS connection (RFC 7030 §3.5); None does so when the
        server's ``/csrattrs`` asks for it (spec only); False never does. ``apply_csrattrs``
        adjusts the spec to what ``/csrattrs`` asks for and reports what it cannot fulfil.
        ``csrattrs``: this server's ``/csrattrs`` answer, when already fetched (not asked again).
        """
        return self._enroll_flow(request, "simpleenroll", pop, apply_csrattrs, csrattrs)

    def _simplereenroll(
        self,
        request: x509.CertificateSigningRequest | CsrSpec | None = None,
        *,
        pop: PopMode = None,
        reuse_key: bool = False,
        apply_csrattrs: bool = False,
        csrattrs: CsrAttrsResult | None = None,
    ) -> flows.Flow[EnrollResult]:
        """``POST /simplereenroll``, authenticated with the certificate being renewed.

        Without ``request`` the subject and SANs are copied from the client certificate and a new
        key of the same type is made (unless ``reuse_key``).
        """
        chosen = self._reenroll_request(request, reuse_key)
        return self._enroll_flow(chosen, "simplereenroll", pop, apply_csrattrs, csrattrs)

    def _serverkeygen(
        self,
        spec: CsrSpec | None = None,
        *,
        common_name: str | None = None,
        dns_names: Sequence[str] = (),
        serial_number: str | None = None,
        encrypt_key: bool = False,
        pop: PopMode = None,
        apply_csrattrs: bool = False,
    ) -> flows.Flow[ServerKeygenResult]:
        """``POST /serverkeygen``: the server makes the key pair and returns key + certificate.

        ``encrypt_key`` asks for the key encrypted to the client certificate (RSA, or EC P-256,
        P-384 and P-521 by key agreement).
        """
        chosen = self._serverkeygen_spec(spec, common_name, dns_names, serial_number)
        return submit.serverkeygen_flow(
            self.settings, chosen, encrypt_key=encrypt_key, pop=pop, apply_attrs=apply_csrattrs
        )

    def _chain_for(self, certificate: x509.Certificate) -> flows.Flow[list[x509.Certificate]]:
        """The issuer-first chain of ``certificate`` built from ``/cacerts``.

        For servers whose enrollment answer holds only the issued certificate (RFC 7030 allows
        that), so that a certificate file can carry the certificate followed by its chain.
        """
        result = yield from flows.cacerts_flow(self.settings)
        chain, _unused = order_chain(certificate, result.certificates)
        return chain

    cacerts = operation(_cacerts)
    csrattrs = operation(_csrattrs)
    simpleenroll = operation(_simpleenroll)
    simplereenroll = operation(_simplereenroll)
    serverkeygen = operation(_serverkeygen)
    chain_for = operation(_chain_for)

    def _operation(self, build: Callable[..., flows.Flow[Any]]) -> Callable[..., Any]:
        """A method running the flows ``build`` makes: blocking, or as a coroutine."""
        raise NotImplementedError  # pragma: no cover - each client has its own

    # --- building the flows -------------------------------------------------------------------

    def _enroll_flow(
        self,
        request: x509.CertificateSigningRequest | CsrSpec,
        operation: str,
        pop: PopMode,
        apply_csrattrs: bool,
        csrattrs: CsrAttrsResult | None = None,
    ) -> flows.Flow[EnrollResult]:
        return submit.enroll_flow(
            self.settings,
            request,
            operation=operation,
            pop=pop,
            apply_attrs=apply_csrattrs,
            csrattrs=csrattrs,
        )

    def _reenroll_request(
        self, request: x509.CertificateSigningRequest | CsrSpec | None, reuse_key: bool
    ) -> x509.CertificateSigningRequest | CsrSpec:
        if self.credentials is None:
            raise ValueError(
                "re-enrollment authenticates with the certificate being renewed: create the "
                "client with credentials=ClientCredentials.from_files(cert, key)"
            )
        if request is None:
            return renewal_spec(self.credentials, reuse_key=reuse_key)
        return request

    def _serverkeygen_spec(
        self,
        spec: CsrSpec | None,
        common_name: str | None,
        dns_names: Sequence[str],
        serial_number: str | None,
    ) -> CsrSpec:
        if spec is not None:
            return spec
        if common_name is None and not dns_names:
            raise ValueError("serverkeygen needs a common name or at least one DNS name")
        return CsrSpec(
            key=generate_private_key(SERVERKEYGEN_SIGNING_KEY_TYPE),
            common_name=common_name,
            dns_names=tuple(dns_names),
            serial_number=serial_number,
        )
