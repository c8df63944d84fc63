"""The enrollment decision: may this client have this certificate, now, under this label?

Runs on the store thread (see ``state.py``): it reads and writes the store and signs. Everything
is committed before it returns, so when the HTTP layer answers, the certificate or the decision is
already on disk (and visible to `estkit server certs` and every worker process).

The order of checks is the order in which a person would want to hear about problems: is the
request readable and acceptable (CSR policy, proof of possession), who is asking (client
certificate, revocation, HTTP user), is it allowed to ask for this (re-enrollment rules), and
does an operator need to approve it first (S4).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Literal, TypeGuard, get_args

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estkit.ca.authority import CaError
from estkit.ca.issuance import IssuedNames, certificate_name_set, describe_names
from estkit.ca.profiles import Profile
from estkit.ca.store import DuplicateSerialError, PendingRequest, RequestStateError
from estkit.protocol.certs import key_identifier
from estkit.protocol.csr import CsrInfo, check_csr_policy, describe_csr
from estkit.protocol.errors import CsrError, CsrPolicyError
from estkit.protocol.keys import (
    PrivateKey,
    generate_private_key,
    private_key_to_der,
)
from estkit.protocol.pop import TLS_EXPORTER, PopResult, binding_type_of, check_pop
from estkit.protocol.serverkeygen import (
    KeyEncryptionRequest,
    can_encrypt_to,
    encrypt_private_key_for,
    key_encryption_request,
)
from estkit.server.approval import client_trust_of
from estkit.server.clientauth import ClientCertificateStatus
from estkit.server.public_url import pointer_extensions_for
from estkit.server.queue_limits import check_queue_limits
from estkit.server.refusal import NeedsHttpAuthentication, Refusal
from estkit.server.state import ServerState
from estkit.server.upstream import check_forwardable_subject

logger = logging.getLogger("estkit.server")

Operation = Literal["simpleenroll", "simplereenroll", "serverkeygen"]


def is_operation(name: str) -> TypeGuard[Operation]:
    """True when ``name`` is one of the enrolling operations (:data:`Operation`)."""
    return name in get_args(Operation)


# Serials are 64+ random bits, so a clash is astronomically rare; the store's PRIMARY KEY makes
# it impossible, and we simply draw again a few times before giving up with a 500.
MAX_SERIAL_ATTEMPTS = 5


@dataclass(frozen=True)
class EnrollmentRequest:
    """Everything the HTTP layer learned about one enrollment request."""

    operation: Operation
    label: str | None
    profile: Profile
    csr: x509.CertificateSigningRequest
    client_certificate: x509.Certificate | None
    http_user: str | None
    peer: str
    tls_unique: bytes | None
    tls_version: str | None
    # Already judged by the HTTP layer (rfc7030 labels authenticate before reading the CSR).
    client_status: ClientCertificateStatus | None = None
    # Set when a trusted registration authority forwards this request ("ra:<fingerprint>",
    # see ra.py): the RA checked PoP and the device's identity; the names are vetted here too.
    forwarded_by: str | None = None
    # RFC 9266 tls-exporter of a TLS 1.3 connection (estkit.tlsbind), None otherwise.
    tls_exporter: bytes | None = None


@dataclass(frozen=True)
class Issued:
    """A certificate to return (and, for serverkeygen, the key part to return with it)."""

    certificate: x509.Certificate
    serial: str
    key_part: bytes | None = None
    key_encrypted: bool = False


@dataclass(frozen=True)
class Queued:
    """The request waits for an operator: answer 202 with Retry-After."""

    request_id: int
    retry_after_seconds: int
    new: bool


@dataclass(frozen=True)
class Forward:
    """RA mode (issue 21): every check passed; the CSR goes to the upstream (``upstream.py``)."""

    requester: str
    request_id: int | None
    wants_encrypted_key: bool = False


Outcome = Issued | Queued | Forward


def _label_text(label: str | None) -> str:
    return f"label {label!r}" if label else "the default label"


def _csr_refusal(exc: CsrError, label: str | None) -> Refusal:
    """The 400 for a CSR that the label's policy refuses or that cannot be used at all."""
    if isinstance(exc, CsrPolicyError):
        return Refusal(400, f"CSR refused by the policy of {_label_text(label)}: {exc}")
    return Refusal(400, f"CSR not usable: {exc}")


# ------------------------------------------------------------------------------------------------
# individual checks


def _check_csr(request: EnrollmentRequest) -> CsrInfo:
    try:
        info = describe_csr(request.csr)
        check_csr_policy(info, request.profile.csr_policy())
    except CsrError as exc:
        raise _csr_refusal(exc, request.label) from None
    return info


def _check_pop(request: EnrollmentRequest, info: CsrInfo) -> None:
    """RFC 7030 §3.5 linking: tls-unique under TLS 1.2, tls-exporter under TLS 1.3 (E14)."""
    result = check_pop(info.challenge_password, request.tls_unique, request.tls_exporter)
    required = request.profile.require_pop
    version = request.tls_version or "no TLS"
    if result is PopResult.MISMATCH:
        binding = binding_type_of(info.challenge_password or "")
        if binding == TLS_EXPORTER and request.tls_exporter is None:
            raise Refusal(
                400,
                "proof-of-possession failed: the CSR's challengePassword is a tls-exporter "
                f"value, but this connection uses {version}: tls-exporter linking is accepted "
                "only under TLS 1.3; under TLS 1.2 put base64(tls-unique) there (RFC 7030 "
                "section 3.5)",
            )
        raise Refusal(
            400,
            f"proof-of-possession failed: the CSR's challengePassword does not match this TLS "
            f"session's {binding} value; build the CSR on the same TLS connection that sends it "
            "(RFC 7030 section 3.5)",
        )
    if required and result is PopResult.ABSENT:
        how = (
            '"tls-exporter:" + base64(tls-exporter) of this TLS 1.3 session (RFC 9266'
            if request.tls_exporter is not None
            else "base64(tls-unique) of this TLS 1.2 session (RFC 7030 section 3.5"
        )
        raise Refusal(
            400,
            f"{_label_text(request.label)} requires proof-of-possession: put {how}) into the "
            "CSR's challengePassword (see /csrattrs)",
        )
    if required and result is PopResult.UNAVAILABLE:
        raise Refusal(
            400,
            f"{_label_text(request.label)} requires proof-of-possession, and this connection "
            f"({version}) offers no channel binding the CSR's challengePassword can be checked "
            "against: tls-unique exists only in TLS 1.2"
            + (
                '; under TLS 1.3 put "tls-exporter:" + base64(tls-exporter) there'
                if request.tls_exporter is not None
                else ", and this server cannot read tls-exporter; connect with TLS 1.2"
            ),
        )
    if result is PopResult.UNAVAILABLE and info.challenge_password is not None:
        logger.info("challengePassword not checked: %s offers no binding for it", version)


def _vet(
    state: ServerState,
    request: EnrollmentRequest,
    info: CsrInfo,
    client: ClientCertificateStatus,
) -> IssuedNames:
    """The names a certificate would carry (policy of the label, CA names reserved)."""
    client_subject = None
    if request.forwarded_by is not None:
        # The RA's certificate describes the RA, not the device; the RA vouched for the CSR's
        # subject attributes instead (upstream.check_forwardable_subject on the RA).
        client_subject = request.csr.subject
    elif client.trusted and client.certificate is not None:
        client_subject = client.certificate.subject
    try:
        return state.authority.vet(info, request.profile, client_subject=client_subject)
    except CsrError as exc:
        raise _csr_refusal(exc, request.label) from None


def _client_names(client: ClientCertificateStatus) -> frozenset[str]:
    assert client.certificate is not None
    try:
        return certificate_name_set(client.certificate)
    except CsrError as exc:
        raise Refusal(403, f"client certificate refused: {exc}") from None


def _check_reenroll(
    request: EnrollmentRequest, client: ClientCertificateStatus, names: IssuedNames
) -> x509.Certificate:
    """E3: the presented certificate is one we issued, valid, not revoked; names unchanged.

    "Names" is the full set, CN and every subjectAltName: a change of any one of them is a
    new certificate, not a renewal (RFC 7030 §4.2.2), and is refused with 409.
    """
    if client.certificate is None:
        raise Refusal(
            403,
            "simplereenroll needs the certificate being renewed as the TLS client certificate; "
            "none was presented",
        )
    if client.revoked or client.source != "own":
        raise Refusal(
            403,
            f"simplereenroll needs a valid certificate issued by this CA: {client.reason}",
        )
    if client.issued_serial is None:
        raise Refusal(
            403,
            "simplereenroll: the client certificate was not issued through this EST server "
            "(it is not in the certificate store); use simpleenroll",
        )
    wanted, existing = names.name_set(), _client_names(client)
    if wanted != existing:
        raise Refusal(
            409,
            "simplereenroll: the CSR's names (subject CN and subjectAltName) differ from the "
            f"certificate being renewed: CSR asks for {describe_names(wanted)}, certificate has "
            f"{describe_names(existing)}. Re-enrollment keeps the names (RFC 7030 section "
            "4.2.2); for new names, enroll with the manufacturer certificate",
        )
    return client.certificate


def _check_bound_names(
    request: EnrollmentRequest, client: ClientCertificateStatus, names: IssuedNames
) -> None:
    """Issue 24: a client that authenticates only with a certificate this CA issued may ask
    for exactly that certificate's names (re-key keeps names), on every operation.

    An HTTP user (rfc7030 labels) is an authenticator of its own that may ask for any name,
    so a request carrying one is not bound; neither is a label that turns the setting off.
    """
    if not request.profile.bind_names_to_client_certificate:
        return
    if client.source != "own" or client.certificate is None or request.http_user is not None:
        return
    wanted, existing = names.name_set(), _client_names(client)
    if wanted != existing:
        raise Refusal(
            403,
            f"{request.operation}: a client authenticated with a certificate of this CA may "
            f"only ask for that certificate's names: CSR asks for {describe_names(wanted)}, "
            f"the client certificate has {describe_names(existing)}. New names need the "
            "device's manufacturer certificate"
            + (" or an HTTP user" if request.profile.auth_mode == "rfc7030" else ""),
        )


def _check_key_encryption(
    request: EnrollmentRequest, client: ClientCertificateStatus
) -> KeyEncryptionRequest | None:
    """RFC 7030 §4.4.1.2: only asymmetric encryption to the authenticating certificate.

    RSA certificates get key transport, EC (P-256/P-384/P-521) ones ECDH key agreement; a 501
    remains for what cannot be done (symmetric keys we do not share, a key identifier naming
    another certificate, a key type neither path handles).
    """
    try:
        wanted = key_encryption_request(request.csr)
    except ValueError as exc:
        raise Refusal(
            400, f"serverkeygen: the key-encryption attribute is malformed: {exc}"
        ) from None
    if wanted is None:
        return None
    supported = (
        "this server can encrypt the generated key only to the RSA or EC (P-256, P-384, P-521) "
        "TLS client certificate the request is authenticated with (AsymmetricDecryptKeyIdentifier "
        "= that certificate's subject key identifier), or return it unencrypted over TLS when "
        "the CSR asks for no encryption"
    )
    if wanted.kind == "symmetric":
        raise Refusal(
            501,
            "serverkeygen: symmetric key encryption (DecryptKeyIdentifier) is not supported; "
            + supported,
        )
    certificate = client.certificate
    if certificate is None or not client.trusted:
        raise Refusal(
            501, f"serverkeygen: no trusted client certificate to encrypt the key to; {supported}"
        )
    if wanted.identifier != key_identifier(certificate):
        raise Refusal(
            501,
            "serverkeygen: AsymmetricDecryptKeyIdentifier does not name the client certificate "
            f"of this connection; {supported}",
        )
    if not can_encrypt_to(certificate):
        raise Refusal(
            501,
            "serverkeygen: the client certificate's key is neither RSA nor EC on P-256, P-384 "
            f"or P-521, so the key cannot be encrypted to it; {supported}",
        )
    return wanted


def _serverkeygen_key_type(info: CsrInfo, profile: Profile) -> str:
    """Use the CSR's key type as the client's wish when the profile allows it."""
    wished = info.key.key_type  # None: a size or curve estkit does not generate
    if info.key.family in profile.key_families and wished is not None:
        return wished
    return profile.serverkeygen_key_type


# ------------------------------------------------------------------------------------------------
# the pipeline


def would_queue(profile: Profile, *, authenticated: bool) -> bool:
    """S4: "manual" queues everything, "untrusted" queues unauthenticated requests."""
    return profile.approval == "manual" or (profile.approval == "untrusted" and not authenticated)


def _requester(client: ClientCertificateStatus, http_user: str | None) -> str:
    if client.trusted and client.fingerprint:
        return client.fingerprint
    if http_user:
        return f"user:{http_user}"
    if client.fingerprint:
        return client.fingerprint
    return "anonymous"


def _queue(
    state: ServerState,
    request: EnrollmentRequest,
    info: CsrInfo,
    client: ClientCertificateStatus,
    requester: str,
) -> PendingRequest | Queued:
    """Find this request in the queue; a new one is added and reported as :class:`Queued`."""
    store = state.store
    label = request.label or ""
    check_queue_limits(state, request, info, requester)  # caps and expiry (issue 14)
    existing = store.find_request(
        label=label,
        operation=request.operation,
        public_key_sha256=info.public_key_sha256,
        requester=requester,
    )
    retry = request.profile.retry_after_seconds
    if existing is None:
        added = store.add_request(
            label=label,
            operation=request.operation,
            csr_pem=request.csr.public_bytes(serialization.Encoding.PEM),
            common_name=info.common_name,
            dns_names=list(info.dns_names),
            key_type=info.key.description,
            public_key_sha256=info.public_key_sha256,
            client_subject=client.subject,
            client_issuer=client.issuer,
            client_fingerprint=client.fingerprint,
            peer_address=request.peer,
            requester=requester,
            client_trust=client_trust_of(client),
            http_user=request.http_user,
            client_certificate_pem=(
                client.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
                if client.certificate is not None
                else None
            ),
            verdict=_queue_verdict(request, client),
        )
        return Queued(added.id, retry, new=True)
    if existing.status == "rejected":
        by = f" {existing.decided_by}" if existing.decided_by else ""
        note = f": {existing.note}" if existing.note else ""
        raise Refusal(403, f"request {existing.id} was rejected by the operator{by}{note}")
    # The queue knows a request by its key and requester; what the operator decides on is the
    # names. A repeat that asks for other names must not ride on that decision (S4).
    differences = _name_differences(existing.csr, request.csr)
    if differences:
        raise Refusal(
            409,
            f"request {existing.id} for this key pair is {existing.status} for other names: "
            f"this CSR has {'; '.join(differences)}. Repeat the identical CSR, or make a new "
            "key pair for a new request",
        )
    if existing.status == "pending":
        return Queued(existing.id, retry, new=False)
    return existing


def _queue_verdict(request: EnrollmentRequest, client: ClientCertificateStatus) -> str:
    """What policy said when the request was queued (shown to the operator as recorded)."""
    if request.profile.approval == "manual":
        return "queued: the label approves every request manually (approval=manual)"
    return (
        "queued: the requester is not authenticated (approval=untrusted): "
        f"{client.reason if client.certificate is not None else 'no client certificate'}"
    )


def _name_differences(
    queued: x509.CertificateSigningRequest, repeated: x509.CertificateSigningRequest
) -> list[str]:
    """What the repeated CSR asks for that the queued one did not (subject, SAN)."""
    differences = []
    if repeated.subject != queued.subject:
        differences.append(
            f"subject {repeated.subject.rfc4514_string()!r} instead of "
            f"{queued.subject.rfc4514_string()!r}"
        )
    try:
        wanted, queued_names = describe_csr(repeated), describe_csr(queued)
    except CsrError as exc:
        raise Refusal(400, f"CSR not usable: {exc}") from None
    wanted_san = sorted([*wanted.dns_names, *wanted.ip_addresses, *wanted.other_names])
    queued_san = sorted(
        [*queued_names.dns_names, *queued_names.ip_addresses, *queued_names.other_names]
    )
    if wanted_san != queued_san:
        differences.append(f"subjectAltName {wanted_san} instead of {queued_san}")
    return differences


def _issue(
    state: ServerState,
    request: EnrollmentRequest,
    info: CsrInfo,
    names: IssuedNames,
    requester: str,
    request_id: int | None,
    generated: PrivateKey | None,
) -> tuple[x509.Certificate, str]:
    authority = state.authority
    public_key = generated.public_key() if generated is not None else None
    for _ in range(MAX_SERIAL_ATTEMPTS):
        try:
            certificate = authority.issue(
                info,
                request.profile,
                names=names,
                public_key=public_key,
                extensions=pointer_extensions_for(
                    state.config,
                    request.label,
                    authority.generation,
                    state.public_port,
                    state.revocation_port,
                ),
            )
        except CsrError as exc:
            raise _csr_refusal(exc, request.label) from None
        except CaError as exc:
            raise Refusal(503, f"the CA cannot issue right now: {exc}") from None
        try:
            record = state.store.record_issued(
                certificate,
                operation=request.operation,
                label=request.label or "",
                requester=requester,
                request_id=request_id,
            )
        except DuplicateSerialError:
            logger.warning("serial collision, drawing a new serial")
            continue
        return certificate, record.serial
    raise RuntimeError(f"no unique serial after {MAX_SERIAL_ATTEMPTS} attempts")


def _redeliver(state: ServerState, pending: PendingRequest) -> Issued:
    """The identical request came back after its certificate was issued: send it again.

    A server-generated key is never stored, so a repeated serverkeygen request cannot be
    answered again: it gets a 409 saying to send a new request.
    """
    if pending.operation == "serverkeygen":
        raise Refusal(
            409,
            f"request {pending.id} was already answered with a server-generated key, which is "
            "not kept; send a new serverkeygen request",
        )
    record = state.store.get_issued(pending.serial or "")
    if record is None:
        raise Refusal(
            409,
            f"request {pending.id} was already issued but its certificate is no longer in the "
            "store; send a new request with a new key",
        )
    certificate = x509.load_pem_x509_certificate(record.certificate_pem.encode())
    return Issued(certificate=certificate, serial=record.serial)


def enroll(state: ServerState, request: EnrollmentRequest, now: dt.datetime) -> Outcome:
    """Decide and, when allowed, issue. Raises :class:`Refusal` or
    :class:`NeedsHttpAuthentication`; commits everything before returning."""
    info = _check_csr(request)
    forwarded = request.forwarded_by is not None
    if not forwarded:  # an RA checked PoP on its own TLS session (RFC 7030 §3.2.3)
        _check_pop(request, info)
    client = request.client_status or state.trust.check(request.client_certificate, now)
    if client.revoked:
        raise Refusal(403, f"client certificate refused: {client.reason}")
    names = _vet(state, request, info, client)
    if forwarded:
        pass  # the RA checked what the device's certificate allows; names are vetted above
    elif request.operation == "simplereenroll":
        _check_reenroll(request, client, names)
    else:
        _check_bound_names(request, client, names)
    encryption = None
    if request.operation == "serverkeygen":
        encryption = _check_key_encryption(request, client)

    profile = request.profile
    authenticated = client.trusted or request.http_user is not None or forwarded
    queue = profile.approval == "manual" or (profile.approval == "untrusted" and not authenticated)
    if not authenticated and not queue:
        if profile.auth_mode == "rfc7030":
            raise NeedsHttpAuthentication(
                f"{client.reason}; authenticate with a trusted TLS client certificate or an HTTP "
                "user of this server"
            )
        if client.certificate is None:
            raise Refusal(
                403,
                "a TLS client certificate is required (BCP-003-03): present the device's "
                "manufacturer certificate or a certificate issued by this CA",
            )
        raise Refusal(403, f"client certificate not trusted: {client.reason}")

    requester = request.forwarded_by or _requester(client, request.http_user)
    request_id: int | None = None
    if queue:
        pending = _queue(state, request, info, client, requester)
        if isinstance(pending, Queued):
            return pending
        if pending.status == "issued":
            return _redeliver(state, pending)
        request_id = pending.id  # approved: issue now

    if state.config.upstream is not None:
        try:
            check_forwardable_subject(request.csr, names)
        except CsrPolicyError as exc:
            raise Refusal(
                400, f"CSR refused by the policy of {_label_text(request.label)}: {exc}"
            ) from None
        return Forward(requester, request_id, wants_encrypted_key=encryption is not None)
    generated: PrivateKey | None = None
    if request.operation == "serverkeygen":
        generated = generate_private_key(_serverkeygen_key_type(info, profile))
    try:
        certificate, serial = _issue(state, request, info, names, requester, request_id, generated)
    except RequestStateError:
        # A concurrent repeat of this approved request got its certificate first.
        again = state.store.get_request(request_id) if request_id is not None else None
        if again is None or again.status != "issued":
            raise
        return _redeliver(state, again)

    logger.info(
        "issued %s to %s (%s, %s) for %s via %s",
        serial,
        certificate.subject.rfc4514_string(),
        request.label or "default label",
        request.operation,
        request.peer,
        requester,
    )
    if generated is None:
        return Issued(certificate=certificate, serial=serial)
    key_der = private_key_to_der(generated)
    if encryption is not None and request.client_certificate is not None:
        envelope = encrypt_private_key_for(key_der, request.client_certificate)
        return Issued(certificate, serial, key_part=envelope, key_encrypted=True)
    return Issued(certificate, serial, key_part=key_der)


__all__ = [
    "EnrollmentRequest",
    "Forward",
    "Issued",
    "Queued",
    "enroll",
    "would_queue",
]
