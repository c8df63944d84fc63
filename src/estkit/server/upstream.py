"""Registration-authority mode: forward vetted enrollments to an upstream EST server (issue 21).

Why a separate module: the RA decides exactly like a CA (``enroll.py``: who asks, PoP on *its*
TLS session, label policy, approval queue, vetted names), and only the last step differs: instead
of signing, the device's CSR, unchanged (it is signed by the device key; the RA cannot re-sign
it), goes to the upstream over a verified TLS connection authenticated with the RA certificate
(RFC 7030 §1, §3.2.3). The upstream is spoken to with estkit's own client library, so only
RFC 7030 is assumed (client certificate plus optional HTTP Basic/Digest); its 401-then-close,
Retry-After and deadline handling come with it.

The RA holds no CA keys. What it knows about the upstream CA is ``DIR/upstream/cacerts.pem``
(fetched at init over the verified connection): it is what devices' re-enrollment certificates
chain to, which names are reserved, and the last good ``/cacerts`` when the upstream is down.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from estkit.ca.authority import POINTER_FILE, CaError, CertificateAuthority
from estkit.ca.issuance import IssuedNames, vet_request
from estkit.ca.profiles import CLIENT_SUBJECT_ATTRIBUTES, Profile
from estkit.ca.store import DuplicateSerialError, normalize_serial_hex
from estkit.client import (
    AsyncEstClient,
    ClientCredentials,
    EstConnectionError,
    EstError,
    EstHttpError,
    EstProtocolResponseError,
    EstRetryLaterError,
    EstTlsError,
    RetryPolicy,
    flows,
    submit,
)
from estkit.client.issued import interpret_serverkeygen
from estkit.client.models import CsrAttrsResult
from estkit.protocol.certs import is_self_signed, load_pem_certificates, sha256_fingerprint
from estkit.protocol.csr import CsrInfo
from estkit.protocol.csrattrs import CHALLENGE_PASSWORD_OID, TLS_EXPORTER_POP_OID, CsrAttrs
from estkit.protocol.errors import CsrPolicyError, EncodingError
from estkit.protocol.keys import private_key_to_der
from estkit.protocol.retry import format_retry_after
from estkit.protocol.serverkeygen import encrypt_private_key_for
from estkit.server.config import ConfigError, ServerConfig, UpstreamConfig
from estkit.server.refusal import Refusal
from estkit.tlsbind import exporter_support

logger = logging.getLogger("estkit.server")

# id-kp-cmcRA (RFC 6402 §2.10): the EKU by which a CA recognises an RA certificate.
ID_KP_CMC_RA = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.28")
# Where the RA keeps what it knows about the upstream CA, inside its data directory.
UPSTREAM_DIR_NAME = "upstream"
UPSTREAM_CACERTS_FILE = "cacerts.pem"
# /cacerts and /csrattrs answers of the upstream are reused this long: short enough that a CA
# rollover upstream reaches devices within a minute, long enough that a burst of devices
# bootstrapping does not become a burst at the upstream.
UPSTREAM_CACHE_SECONDS = 60.0
# One upstream exchange (connect, TLS, a possible 401 challenge round, the answer) must finish in
# this time: a device waits for it on its own connection, and its own EST client gives up after
# about a minute (estkit's default deadline is 60 s).
UPSTREAM_TIMEOUT_SECONDS = 20.0
# Retry-After sent to a device when the upstream cannot be reached: the outage is not the
# device's fault and nothing was decided, so it may come back soon; not so soon that a rack of
# devices hammers a CA that is restarting.
UPSTREAM_DOWN_RETRY_AFTER_SECONDS = 30
# Upper bound on a Retry-After passed through from the upstream (a 202 or 503 there): a hostile
# or misconfigured upstream must not park devices for days (RFC 7030 §4.2.3 leaves it open).
MAX_PASSED_RETRY_AFTER_SECONDS = 3600
# A password file longer than this is not a password (an operator pointed at the wrong file).
MAX_PASSWORD_FILE_BYTES = 4096


class UpstreamError(ConfigError):
    """The RA configuration cannot work (missing or expired RA certificate, unreadable trust)."""


# ------------------------------------------------------------------------------------------------
# what the RA knows about the upstream CA (stands in for CertificateAuthority)


class UpstreamCa:
    """The upstream CA's certificates, as fetched at init; duck-types the parts of
    :class:`estkit.ca.authority.CertificateAuthority` a server reads (it signs nothing)."""

    def __init__(self, directory: Path, certificates: list[x509.Certificate]) -> None:
        self._directory = directory
        self.cacerts = certificates
        self.root_certificates = [c for c in certificates if is_self_signed(c)] or certificates[:1]
        self.root_certificate = self.root_certificates[0]
        self.previous_issuers: list[x509.Certificate] = []
        # No CRLs here: the upstream CA publishes them (dispatch answers /crl with 404).
        self.issuers_by_generation: dict[str, x509.Certificate] = {}
        self.chain = [c for c in certificates if not is_self_signed(c)]
        self.rollover_certificates: list[x509.Certificate] = []
        self.generation = "upstream-" + sha256_fingerprint(self.root_certificate)[7:19]

    @classmethod
    def load(cls, directory: Path) -> UpstreamCa:
        path = directory / UPSTREAM_CACERTS_FILE
        try:
            certificates = load_pem_certificates(path.read_bytes())
        except (OSError, EncodingError, ValueError) as exc:
            raise UpstreamError(
                f"the upstream CA certificates {path} cannot be read: {exc}",
                hint="re-create the RA data directory (server init with the upstream options)",
            ) from None
        return cls(directory, certificates)

    @property
    def cacerts_path(self) -> Path:
        return self._directory / UPSTREAM_CACERTS_FILE

    @property
    def root_path(self) -> Path:
        return self.cacerts_path

    @property
    def reserved_names(self) -> frozenset[str]:
        names = set()
        for cert in self.cacerts:
            for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
                value = attr.value if isinstance(attr.value, str) else attr.value.decode()
                names.add(value.lower().rstrip("."))
        return frozenset(names)

    def vet(
        self, info: CsrInfo, profile: Profile, *, client_subject: x509.Name | None = None
    ) -> IssuedNames:
        """The RA's own policy on the names (the upstream vets again)."""
        return vet_request(
            info, profile, reserved_names=self.reserved_names, client_subject=client_subject
        )

    def issue(self, *args: Any, **kwargs: Any) -> x509.Certificate:
        """Never: a registration authority has no CA key (enroll.py forwards instead)."""
        raise CaError("this server is a registration authority and signs nothing")

    def build_crl(self, *args: Any, **kwargs: Any) -> bytes:
        """Never: the upstream CA publishes the CRL."""
        raise CaError("this server is a registration authority: the upstream CA publishes the CRL")


def load_authority(config: ServerConfig) -> CertificateAuthority | UpstreamCa:
    """This server's CA, or in RA mode what it knows of the upstream CA."""
    if config.upstream is not None:
        return UpstreamCa.load(config.ca_directory)
    return CertificateAuthority.load(config.ca_directory)


def authority_stamp_file(config: ServerConfig) -> Path:
    """The file whose change means the CA (or the upstream's certificates) must be reloaded."""
    if config.upstream is not None:
        return config.ca_directory / UPSTREAM_CACERTS_FILE
    return config.ca_directory / POINTER_FILE


def check_forwardable_subject(csr: x509.CertificateSigningRequest, names: IssuedNames) -> None:
    """An upstream takes a trusted RA's word for the subject attributes it would otherwise copy
    from the device's certificate (serialNumber, BCP-003-03 C7), and the only place it can read
    them is the CSR. So the CSR must carry exactly what this RA's policy vouched for: nothing the
    device certificate does not back, nothing it backs left out. Raises ``CsrPolicyError``."""
    vouched = dict(names.extra_attributes)
    for name, oid in CLIENT_SUBJECT_ATTRIBUTES.items():
        values = csr.subject.get_attributes_for_oid(oid)
        asked = values[0].value if values else None
        wanted = vouched.get(name)
        if asked == wanted:
            continue
        if wanted is None:
            raise CsrPolicyError(
                f"the CSR's subject {name} {asked!r} is not backed by the client certificate, "
                "and the upstream CA of this registration authority would issue it; leave it "
                "out of the CSR"
            )
        raise CsrPolicyError(
            f"the CSR must carry subject {name} {wanted!r} (from the client certificate), not "
            f"{asked!r}: this registration authority forwards the CSR unchanged and the "
            "upstream CA takes the subject from it"
        )


# ------------------------------------------------------------------------------------------------
# the RA credentials


def read_password(upstream: UpstreamConfig) -> str | None:
    if upstream.password_file is None:
        return None
    try:
        data = upstream.password_file.read_bytes()[: MAX_PASSWORD_FILE_BYTES + 1]
    except OSError as exc:
        raise UpstreamError(f"the upstream password file cannot be read: {exc}") from None
    if len(data) > MAX_PASSWORD_FILE_BYTES:
        raise UpstreamError(f"{upstream.password_file} is too long to be a password")
    return data.decode("utf-8", "replace").rstrip("\r\n")


def check_ra_credentials(
    upstream: UpstreamConfig, now: dt.datetime | None = None
) -> ClientCredentials:
    """Load the RA certificate and key; refuse (at start, with the reason) an expired, not yet
    valid or unusable one, or one without clientAuth/id-kp-cmcRA."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        credentials = ClientCredentials.from_files(upstream.certificate, upstream.key)
    except (OSError, ValueError) as exc:
        raise UpstreamError(f"the RA certificate or key cannot be used: {exc}") from None
    cert = credentials.chain[0]
    subject = cert.subject.rfc4514_string()
    if cert.not_valid_after_utc <= now:
        raise UpstreamError(
            f"the RA certificate {upstream.certificate} ({subject}) expired on "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; the upstream would refuse every "
            "forwarded request",
            hint="get a new RA certificate from the upstream CA and replace the file",
        )
    if cert.not_valid_before_utc > now:
        raise UpstreamError(
            f"the RA certificate {upstream.certificate} ({subject}) is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (check the clock)"
        )
    try:
        ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        ekus = None
    if ekus is not None and ID_KP_CMC_RA not in ekus:
        logger.warning(
            "the RA certificate %s has no id-kp-cmcRA EKU (1.3.6.1.5.5.7.3.28); an estkit "
            "upstream will treat it as an ordinary client",
            subject,
        )
    if ekus is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in ekus:
        raise UpstreamError(
            f"the RA certificate {upstream.certificate} ({subject}) has no clientAuth EKU, so "
            "it cannot authenticate a TLS connection to the upstream"
        )
    return credentials


def upstream_client(
    upstream: UpstreamConfig, *, timeout: float = UPSTREAM_TIMEOUT_SECONDS
) -> AsyncEstClient:
    """An estkit client for the upstream: verified TLS, the RA certificate, one attempt (a
    202/503 is passed on to the device rather than waited for here)."""
    password = read_password(upstream)
    return AsyncEstClient(
        upstream.url,
        label=upstream.label,
        trust=[upstream.trust],
        credentials=check_ra_credentials(upstream),
        username=upstream.user if password is not None else None,
        password=password if upstream.user else None,
        timeout=timeout,
        retry=RetryPolicy(max_attempts=1),
    )


# ------------------------------------------------------------------------------------------------
# forwarding


@dataclass(frozen=True)
class UpstreamAnswer:
    """What the upstream issued for one forwarded request."""

    certificate: x509.Certificate
    chain: list[x509.Certificate]
    private_key_der: bytes | None = None


@dataclass(frozen=True)
class UpstreamPending:
    """The upstream queued the request (202): pass its Retry-After to the device."""

    retry_after_seconds: int
    text: str


def _retry_after(value: float | None) -> int:
    if value is None:
        return UPSTREAM_DOWN_RETRY_AFTER_SECONDS
    return max(1, min(int(value), MAX_PASSED_RETRY_AFTER_SECONDS))


def _serverkeygen_flow(
    settings: flows.FlowSettings, csr: x509.CertificateSigningRequest
) -> Generator[Any, Any, Any]:
    """``POST /serverkeygen`` of a finished CSR (the device's), key returned unencrypted to the
    RA over the verified TLS connection."""
    reply, _attempts, _state, _csr = yield from submit._submission(
        settings, "serverkeygen", csr, False
    )
    names = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return interpret_serverkeygen(
        reply,
        credentials=None,
        requested_common_name=str(names[0]) if names else None,
        requested_dns_names=(),
        now=settings.now(),
    )


def _retry_later(reason: str, seconds: str) -> Refusal:
    """503 with Retry-After: the upstream decided nothing, so the device may simply try again."""
    return Refusal(
        503,
        f"{reason}; nothing was issued, retry after {seconds} seconds",
        headers=[("Retry-After", seconds)],
    )


def _refusal_for(exc: EstError, url: str) -> Refusal:
    """The device's answer for an upstream failure: 503 when nothing was decided and a retry may
    work, 502 when the upstream answered something unusable, the upstream's 4xx when it refused
    the request itself (the device can act on that)."""
    retry = format_retry_after(UPSTREAM_DOWN_RETRY_AFTER_SECONDS)
    if isinstance(exc, EstRetryLaterError):
        seconds = format_retry_after(_retry_after(exc.retry_after))
        return _retry_later(f"the upstream CA is busy (it answered {exc.status})", seconds)
    if isinstance(exc, EstTlsError):
        return Refusal(
            502,
            f"the upstream CA {url} failed TLS verification: {exc.message}; nothing was "
            "forwarded (operator: check the upstream trust anchor and the RA certificate)",
        )
    if isinstance(exc, EstConnectionError):
        return _retry_later(f"the upstream CA cannot be reached: {exc.message}", retry)
    if isinstance(exc, EstHttpError):
        text = exc.server_text or exc.message
        if exc.status == 401:
            return Refusal(
                502,
                "the upstream CA refused the RA's credentials (401): "
                f"{text}; operator: check the RA certificate and upstream user",
            )
        if 400 <= exc.status < 500 and exc.status not in (404, 405, 415):
            return Refusal(exc.status, f"the upstream CA refused the request: {text}")
        if exc.status == 503:
            return _retry_later(f"the upstream CA is unavailable: {text}", retry)
        return Refusal(502, f"the upstream CA answered {exc.status}: {text}")
    if isinstance(exc, EstProtocolResponseError):
        return Refusal(502, f"the upstream CA answered something unusable: {exc.message}")
    return Refusal(502, f"the upstream CA exchange failed: {exc.message}")


async def forward_request(
    upstream: UpstreamConfig,
    operation: str,
    csr: x509.CertificateSigningRequest,
) -> UpstreamAnswer | UpstreamPending:
    """Send the device's CSR, unchanged, to the upstream; raise :class:`Refusal` on failure."""
    try:
        client = upstream_client(upstream)
    except UpstreamError as exc:
        raise Refusal(503, f"the RA cannot reach its upstream: {exc}") from None
    try:
        async with client:
            if operation == "serverkeygen":
                result = await client._run(_serverkeygen_flow(client.settings, csr))
                return UpstreamAnswer(
                    result.certificate, result.chain, private_key_to_der(result.private_key)
                )
            if operation == "simplereenroll":
                enrolled = await client.simplereenroll(csr, pop=False)
            else:
                enrolled = await client.simpleenroll(csr, pop=False)
            return UpstreamAnswer(enrolled.certificate, enrolled.chain)
    except EstRetryLaterError as exc:
        if exc.status == 202:
            return UpstreamPending(_retry_after(exc.retry_after), exc.server_text)
        raise _refusal_for(exc, upstream.url) from None
    except EstError as exc:
        raise _refusal_for(exc, upstream.url) from None


def encrypt_for_device(key_der: bytes, device_certificate: x509.Certificate) -> bytes:
    """RFC 7030 §4.4.1.2 on the RA side: the upstream sent the key to the RA in the clear over
    verified TLS; the device asked for it encrypted to its own certificate."""
    return encrypt_private_key_for(key_der, device_certificate)


def record_answer(
    store: Any,
    certificate: x509.Certificate,
    *,
    operation: str,
    label: str,
    requester: str,
    request_id: int | None,
    upstream_url: str,
) -> str:
    """Keep what the upstream issued in the RA's own store (``estkit server certs`` lists it);
    returns the serial. The same certificate delivered twice is recorded once."""
    try:
        record = store.record_issued(
            certificate,
            operation=operation,
            label=label,
            requester=requester,
            request_id=request_id,
        )
        serial = record.serial
    except DuplicateSerialError:
        serial = normalize_serial_hex(certificate.serial_number)
    store.log_event(
        "upstream",
        f"upstream issued {serial} to {certificate.subject.rfc4514_string()}",
        upstream=upstream_url,
        operation=operation,
        label=label,
        requester=requester,
        serial=serial,
        status=200,
    )
    return serial


# ------------------------------------------------------------------------------------------------
# /cacerts and /csrattrs from the upstream, cached briefly


class UpstreamCache:
    """The upstream's /cacerts and /csrattrs, reused for :data:`UPSTREAM_CACHE_SECONDS`."""

    def __init__(self) -> None:
        self._cacerts: tuple[float, list[x509.Certificate]] | None = None
        self._csrattrs: tuple[float, CsrAttrs] | None = None
        self._lock = asyncio.Lock()

    def _fresh(self, entry: tuple[float, Any] | None) -> bool:
        return entry is not None and time.monotonic() - entry[0] < UPSTREAM_CACHE_SECONDS

    async def cacerts(
        self, upstream: UpstreamConfig, fallback: list[x509.Certificate]
    ) -> list[x509.Certificate]:
        """Fresh from the upstream; its last known copy (from init) when it cannot be reached:
        those are the certificates this RA itself trusts for the upstream."""
        async with self._lock:
            if self._cacerts is not None and self._fresh(self._cacerts):
                return self._cacerts[1]
            try:
                async with upstream_client(upstream) as client:
                    result = await client.cacerts()
            except (EstError, UpstreamError) as exc:
                logger.warning("upstream /cacerts failed, serving the copy from init: %s", exc)
                return fallback
            self._cacerts = (time.monotonic(), list(result.certificates))
            return self._cacerts[1]

    async def csrattrs(self, upstream: UpstreamConfig, profile: Profile) -> CsrAttrs:
        """The upstream's wishes, with challengePassword as *this* RA's label asks (PoP is
        checked here, on the device's TLS session, not upstream)."""
        async with self._lock:
            if not (self._csrattrs is not None and self._fresh(self._csrattrs)):
                try:
                    async with upstream_client(upstream) as client:
                        result: CsrAttrsResult = await client.csrattrs()
                except (EstError, UpstreamError) as exc:
                    raise (
                        _refusal_for(exc, upstream.url)
                        if isinstance(exc, EstError)
                        else Refusal(503, str(exc))
                    ) from None
                self._csrattrs = (time.monotonic(), result.attrs)
            attrs = self._csrattrs[1]
        pop = x509.ObjectIdentifier(CHALLENGE_PASSWORD_OID)
        # PoP is checked on the device's connection to this RA, so the RA's own abilities
        # decide what is advertised, never the upstream's (tls-exporter: docs/tls13-pop.md).
        exporter = x509.ObjectIdentifier(TLS_EXPORTER_POP_OID)
        oids = tuple(oid for oid in attrs.oids if oid not in (pop, exporter))
        if exporter_support().available:
            oids = (exporter, *oids)
        if profile.require_pop:
            oids = (pop, *oids)
        return CsrAttrs(oids=oids, attributes=attrs.attributes)


__all__ = [
    "ID_KP_CMC_RA",
    "UPSTREAM_CACHE_SECONDS",
    "UPSTREAM_DIR_NAME",
    "UpstreamAnswer",
    "UpstreamCa",
    "UpstreamCache",
    "UpstreamError",
    "UpstreamPending",
    "check_forwardable_subject",
    "check_ra_credentials",
    "forward_request",
    "record_answer",
    "upstream_client",
]
