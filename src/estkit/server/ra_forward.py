"""The RA's last step (issue 21): forward an enrollment that passed every check, record the answer.

Kept apart from ``upstream.py`` (which the server state imports) because it needs the
enrollment types of ``enroll.py``, which import the state.
"""

from __future__ import annotations

from estkit.server.enroll import EnrollmentRequest, Forward, Issued
from estkit.server.refusal import Refusal
from estkit.server.state import ServerState
from estkit.server.upstream import UpstreamPending, forward_request, record_answer


async def forward_enrollment(
    state: ServerState, request: EnrollmentRequest, decision: Forward
) -> Issued | UpstreamPending:
    """Send the device's CSR to the upstream; keep what it answered in the RA's store and log.

    Raises :class:`Refusal` (502/503 and the upstream's own 4xx) when nothing was issued.
    """
    upstream = state.config.upstream
    assert upstream is not None
    label = request.label or ""
    if decision.wants_encrypted_key:
        # The CSR (signed by the device) names the device certificate as the key's recipient;
        # the upstream sees the RA's certificate and cannot honour it.
        raise Refusal(
            501,
            "serverkeygen: an encrypted server-generated key is not available through this "
            "registration authority; ask for the key without encryption (it travels over TLS)",
        )
    answer = await forward_request(upstream, request.operation, request.csr)
    if isinstance(answer, UpstreamPending):
        await state.run(
            lambda: state.store.log_event(
                "upstream",
                f"upstream queued the request of {decision.requester}; the device was told to "
                f"retry after {answer.retry_after_seconds} s",
                upstream=upstream.url,
                operation=request.operation,
                label=label,
                requester=decision.requester,
                status=202,
                peer=request.peer,
            )
        )
        return answer
    serial = await state.run(
        lambda: record_answer(
            state.store,
            answer.certificate,
            operation=request.operation,
            label=label,
            requester=decision.requester,
            request_id=decision.request_id,
            upstream_url=upstream.url,
        )
    )
    return Issued(answer.certificate, serial, key_part=answer.private_key_der)


__all__ = ["forward_enrollment"]
