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
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estkit.ca.authority import CaError
from estkit.ca.issuance import leaf_subject_alt_names, requested_general_names
from estkit.ca.profiles import Profile
from estkit.ca.store import DuplicateSerialError, PendingRequest, RequestStateError
from estkit.protocol.certs import key_identifier
from estkit.protocol.csr import CsrInfo, check_csr_policy, describe_csr
from estkit.protocol.errors import CsrError, CsrPolicyError
from estkit.protocol.keys import (
    KEY_TYPES,
    PrivateKey,
    generate_private_key,
    private_key_to_der,
    signature_hash_for,
)
from estkit.protocol.pop import PopResult, check_pop
from estkit.protocol.serverkeygen import (
    KeyEncryptionRequest,
    can_encrypt_to,
    encrypt_private_key_for,
    key_encryption_request,
)
from estkit.server.clientauth import ClientCertificateStatus
from estkit.server.public_url import pointer_extensions_for
from estkit.server.refusal import NeedsHttpAuthentication, Refusal
from estkit.server.state import ServerState

logger = logging.getLogger("estkit.server")

Operation = Literal["simpleenroll", "simplereenroll", "serverkeygen"]

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


Outcome = Issued | Queued


def _label_text(label: str | None) -> str:
    return f"label {label!r}" if label else "the default label"


# ------------------------------------------------------------------------------------------------
# individual checks


def _check_csr(request: EnrollmentRequest) -> CsrInfo:
    try:
        info = describe_csr(request.csr)
        check_csr_policy(info, request.profile.csr_policy())
    except CsrPolicyError as exc:
        raise Refusal(
            400, f"CSR refused by the policy of {_label_text(request.label)}: {exc}"
        ) from None
    except CsrError as exc:
        raise Refusal(400, f"CSR not usable: {exc}") from None
    return info


def _check_pop(request: EnrollmentRequest, info: CsrInfo) -> None:
    """RFC 7030 §3.5 linking; tls-unique is only ever used under TLS 1.2 (E14)."""
    result = check_pop(info.challenge_password, request.tls_unique)
    required = request.profile.require_pop
    if result is PopResult.MISMATCH:
        raise Refusal(
            400,
            "the CSR's challengePassword does not match this TLS session's tls-unique value; "
            "build the CSR on the same TLS connection that sends it (RFC 7030 section 3.5)",
        )
    if required and result is PopResult.ABSENT:
        raise Refusal(
            400,
            f"{_label_text(request.label)} requires proof-of-possession: put base64(tls-unique) "
            "of this TLS 1.2 session into the CSR's challengePassword (RFC 7030 section 3.5; "
            "see /csrattrs)",
        )
    if required and result is PopResult.UNAVAILABLE:
        raise Refusal(
            400,
            f"{_label_text(request.label)} requires proof-of-possession via tls-unique, which "
            f"exists only in TLS 1.2 and this connection uses {request.tls_version or 'no TLS'}; "
            "connect with TLS 1.2",
        )
    if result is PopResult.UNAVAILABLE and info.challenge_password is not None:
        logger.info(
            "challengePassword not checked: %s has no tls-unique", request.tls_version or "TLS"
        )


def _general_name_text(name: x509.GeneralName) -> str:
    kind = type(name).__name__.replace("Name", "").replace("Address", "")
    return f"{kind}:{name.value}"


def _check_reenroll(
    request: EnrollmentRequest, client: ClientCertificateStatus
) -> x509.Certificate:
    """E3: the presented certificate is one we issued, valid, not revoked; names unchanged."""
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
    current = client.certificate
    if request.csr.subject != current.subject:
        raise Refusal(
            400,
            "simplereenroll: the CSR subject differs from the certificate being renewed: CSR "
            f"has {request.csr.subject.rfc4514_string()!r}, certificate has "
            f"{current.subject.rfc4514_string()!r} (RFC 7030 section 4.2.2)",
        )
    try:
        wanted = leaf_subject_alt_names(request.csr, request.csr.subject, request.profile)
    except CsrError as exc:
        raise Refusal(400, f"simplereenroll: {exc}") from None
    try:
        existing = list(
            current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        )
    except x509.ExtensionNotFound:
        existing = []
    wanted_set = {_general_name_text(name) for name in wanted}
    existing_set = {_general_name_text(name) for name in existing}
    if wanted_set != existing_set:
        raise Refusal(
            400,
            "simplereenroll: the CSR subjectAltName differs from the certificate being renewed: "
            f"CSR asks for {sorted(wanted_set)}, certificate has {sorted(existing_set)} "
            "(RFC 7030 section 4.2.2)",
        )
    return current


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
    if info.key.family in profile.key_families:
        wished = (
            f"rsa{info.key.size}"
            if info.key.family == "rsa"
            else {"secp256r1": "p256", "secp384r1": "p384", "secp521r1": "p521"}.get(
                info.key.curve or "", ""
            )
        )
        if wished in KEY_TYPES:
            return wished
    return profile.serverkeygen_key_type


def _csr_for_generated_key(
    csr: x509.CertificateSigningRequest, key: PrivateKey
) -> x509.CertificateSigningRequest:
    """The client's CSR re-signed with the server-generated key (same subject and extensions),
    so the CA's normal issuing path (and its policy checks) applies unchanged."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(csr.subject)
    for extension in csr.extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    return builder.sign(key, signature_hash_for(key))


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


def _requested_names(csr: x509.CertificateSigningRequest) -> list[str]:
    return sorted(_general_name_text(name) for name in requested_general_names(csr))


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
    wanted, queued_names = _requested_names(repeated), _requested_names(queued)
    if wanted != queued_names:
        differences.append(f"subjectAltName {wanted} instead of {queued_names}")
    return differences


def _issue(
    state: ServerState,
    request: EnrollmentRequest,
    csr: x509.CertificateSigningRequest,
    requester: str,
    request_id: int | None,
) -> tuple[x509.Certificate, str]:
    authority = state.authority
    for _ in range(MAX_SERIAL_ATTEMPTS):
        try:
            certificate = authority.issue(
                csr,
                request.profile,
                extensions=pointer_extensions_for(
                    state.config, request.label, authority.generation, state.public_port
                ),
            )
        except CsrPolicyError as exc:
            raise Refusal(
                400, f"CSR refused by the policy of {_label_text(request.label)}: {exc}"
            ) from None
        except CsrError as exc:
            raise Refusal(400, f"CSR not usable: {exc}") from None
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
    _check_pop(request, info)
    client = request.client_status or state.trust.check(request.client_certificate, now)
    if client.revoked:
        raise Refusal(403, f"client certificate refused: {client.reason}")
    if request.operation == "simplereenroll":
        _check_reenroll(request, client)
    encryption = None
    if request.operation == "serverkeygen":
        encryption = _check_key_encryption(request, client)

    profile = request.profile
    authenticated = client.trusted or request.http_user is not None
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

    requester = _requester(client, request.http_user)
    request_id: int | None = None
    if queue:
        pending = _queue(state, request, info, client, requester)
        if isinstance(pending, Queued):
            return pending
        if pending.status == "issued":
            return _redeliver(state, pending)
        request_id = pending.id  # approved: issue now

    csr = request.csr
    generated: PrivateKey | None = None
    if request.operation == "serverkeygen":
        generated = generate_private_key(_serverkeygen_key_type(info, profile))
        csr = _csr_for_generated_key(request.csr, generated)
    try:
        certificate, serial = _issue(state, request, csr, requester, request_id)
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
    "Issued",
    "Queued",
    "enroll",
    "would_queue",
]
