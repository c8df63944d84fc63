"""What policy says about a queued request *now*, and approving only what policy still allows.

Why again at approval time: a request can wait in the queue for days. Meanwhile the label may be
removed or tightened, the client certificate it came with may be revoked, a manufacturer CA may be
dropped. An operator's "approve" must not sign what the server would refuse today, so approving
re-runs the checks that do not need the client's TLS connection (issue 24, item 6); the client's
next poll runs the whole enrollment pipeline once more before anything is signed.

Used by `estkit server requests/approve` and by the console, so both show and enforce the same.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509

from estkit.ca.authority import CaError, CertificateAuthority
from estkit.ca.store import CertificateStore, PendingRequest, RequestStateError
from estkit.protocol.csr import check_csr_policy, describe_csr
from estkit.protocol.errors import CsrError, CsrPolicyError
from estkit.server.clientauth import ClientCertificateStatus
from estkit.server.config import ServerConfig
from estkit.server.state import build_client_trust, store_revocation
from estkit.server.upstream import UpstreamCa, load_authority


@dataclass(frozen=True)
class Verdict:
    """``allowed``: approving would lead to a certificate; ``reason``: why (or why not)."""

    allowed: bool
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"allowed": self.allowed, "reason": self.reason}


class PolicyRefusedApproval(RequestStateError):
    """Approving was refused because policy would not issue for this request now."""


def client_trust_of(client: ClientCertificateStatus) -> str:
    """The queue's ``client_trust`` word for a client certificate verdict."""
    if client.revoked:
        return "revoked"
    if client.certificate is None:
        return "none"
    if client.expired_accepted:
        return "expired"
    return "trusted" if client.trusted else "untrusted"


def _label_text(label: str | None) -> str:
    return f"label {label!r}" if label else "the default label"


def judge(
    config: ServerConfig,
    authority: CertificateAuthority | UpstreamCa,
    store: CertificateStore,
    request: PendingRequest,
    now: dt.datetime | None = None,
) -> Verdict:
    """What policy would say about issuing for ``request`` at ``now``."""
    now = now or dt.datetime.now(dt.UTC)
    profile = config.profile_for(request.label)
    if profile is None:
        return Verdict(False, f"{_label_text(request.label)} is no longer configured")
    try:
        check_csr_policy(describe_csr(request.csr), profile.csr_policy())
    except CsrPolicyError as exc:
        label = _label_text(request.label)
        return Verdict(False, f"the CSR is refused by the policy of {label}: {exc}")
    except (CsrError, ValueError) as exc:
        return Verdict(False, f"the CSR is not usable: {exc}")
    if request.client_trust == "revoked":
        return Verdict(False, "the client certificate was revoked when the request arrived")
    if request.client_certificate_pem:
        try:
            certificate = x509.load_pem_x509_certificate(request.client_certificate_pem.encode())
        except ValueError:
            return Verdict(False, "the recorded client certificate cannot be read")
        client = build_client_trust(config, authority, store_revocation(store)).check(
            certificate, now
        )
        if client.revoked:
            return Verdict(False, f"the client certificate is revoked now: {client.reason}")
    if request.status != "pending":
        return Verdict(request.status in ("approved", "issued"), f"already {request.status}")
    why = {
        "trusted": "the client was authenticated by a trusted certificate",
        "expired": "the client presented an expired certificate its manufacturer CA allows",
        "untrusted": "the client certificate is not trusted; approving vouches for it",
        "none": "no client certificate was presented; approving vouches for the requester",
    }.get(request.client_trust or "", "how the client authenticated was not recorded")
    if request.http_user:
        why += f" (HTTP user {request.http_user!r})"
    return Verdict(True, f"would issue on approval: {why}")


def approve_if_allowed(
    config: ServerConfig,
    store: CertificateStore,
    request_id: int,
    *,
    by: str,
    note: str = "",
    now: dt.datetime | None = None,
) -> PendingRequest:
    """Approve ``request_id`` only if :func:`judge` allows it now; else raise
    :class:`PolicyRefusedApproval` (and log the refusal). ``KeyError`` for an unknown id."""
    request = store.get_request(request_id)
    if request is None:
        raise KeyError(f"no request with id {request_id} in the store {store.url}")
    if request.status == "pending":
        try:
            authority = load_authority(config)  # an RA has the upstream's certificates (issue 21)
        except (CaError, OSError, ValueError) as exc:
            raise PolicyRefusedApproval(f"cannot check request {request_id}: {exc}") from None
        verdict = judge(config, authority, store, request, now)
        if not verdict.allowed:
            store.log_event(
                "approval-refused",
                f"approving request {request_id} refused: {verdict.reason}",
                request_id=request_id,
                by=by,
                reason=verdict.reason,
            )
            raise PolicyRefusedApproval(
                f"request {request_id} was not approved: policy would refuse it now: "
                f"{verdict.reason}. Reject it, or fix the configuration and approve again"
            )
    return store.decide_request(request_id, True, by=by, note=note, now=now)


__all__ = [
    "PolicyRefusedApproval",
    "Verdict",
    "approve_if_allowed",
    "client_trust_of",
    "judge",
]
