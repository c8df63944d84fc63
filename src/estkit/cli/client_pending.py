"""Pending enrollments survive between runs of ``estkit client enroll`` (issue 15, item 2).

Why: under manual approval (BCP-003-03 S4) the server answers 202 until an operator approves. The
server knows the request by its public key and requester, so the certificate approved for a
request can only be collected by sending the same request again, with the same key. If the client
forgot the key when it gave up, every run made a new key and a new queued request, and an approved
certificate could never be collected.

So before the first POST the key and what the CSR asks for (subject CN, DNS SANs, serialNumber)
go into a state file beside ``--out-key`` (``KEY.pending.json``, mode 0600, written atomically);
a later run with the same options sends the same request again (same key, same names; the CSR is
rebuilt from them, so a proof-of-possession link still fits its own connection), and once a
certificate comes back the state file is removed. A run for other names, another server or another
label refuses instead of silently riding on (or discarding) the pending request.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from estkit.client import CsrSpec, EstConnectionError, EstError, EstRetryLaterError
from estkit.errors import EstkitError
from estkit.fileio import write_private_file_atomic
from estkit.protocol import describe_public_key, load_private_key, private_key_to_pem

PENDING_SUFFIX = ".pending.json"
PENDING_FORMAT = "estkit-pending-enrollment/1"
# The file holds one private key PEM (RSA-4096 is about 3.3 KB) plus a few names; anything larger
# is not a file this command wrote, and is refused before it is parsed.
MAX_PENDING_STATE_BYTES = 64 * 1024


class PendingStateError(EstkitError, ValueError):
    """The state file exists but cannot be used for this run."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass
class PendingEnrollment:
    """One enrollment kept across runs: where it lives and what it asks for."""

    path: Path
    spec: CsrSpec
    server: str
    label: str | None
    created_now: bool

    def forget(self) -> None:
        """The certificate arrived (or nothing was ever queued): the state has done its job."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def pending_path(out_key: Path) -> Path:
    """``KEY.pending.json`` beside ``--out-key`` (same directory, so the same permissions)."""
    return out_key.with_name(out_key.name + PENDING_SUFFIX)


def _key_type_name(key: Any) -> str:
    info = describe_public_key(key.public_key())
    return f"p{info.size}" if info.family == "ec" else f"rsa{info.size}"


def _same_server(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def _start_over(path: Path) -> str:
    return f"run the command as before, or delete {path} to start over with a new key"


def load_pending(
    out_key: Path,
    *,
    server: str,
    label: str | None,
    common_name: str | None,
    dns_names: tuple[str, ...],
    serial_number: str | None,
    key_type: str | None,
) -> PendingEnrollment | None:
    """The pending enrollment for ``out_key``, checked against this run's options, or None."""
    path = pending_path(out_key)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_PENDING_STATE_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(raw) > MAX_PENDING_STATE_BYTES:
        raise PendingStateError(
            f"{path} is larger than {MAX_PENDING_STATE_BYTES} bytes: not a pending-request file",
            f"move it away; it is where the pending request for {out_key} is kept",
        )
    try:
        document = json.loads(raw)
        if document.get("format") != PENDING_FORMAT:
            raise ValueError(f"format is {document.get('format')!r}, not {PENDING_FORMAT!r}")
        key = load_private_key(document["key_pem"].encode("ascii"))
        stored = CsrSpec(
            key=key,
            common_name=document["common_name"],
            dns_names=tuple(document["dns_names"]),
            serial_number=document["serial_number"],
        )
        stored_server = str(document["server"])
        stored_label = document["label"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PendingStateError(
            f"cannot read the pending-request file {path}: {exc}",
            f"delete {path} to start over with a new key",
        ) from None
    differences = []
    if not _same_server(stored_server, server):
        differences.append(f"server {stored_server}")
    if stored_label != label:
        differences.append(f"label {stored_label or '(none)'}")
    if stored.common_name != common_name:
        differences.append(f"CN {stored.common_name or '(none)'}")
    if stored.dns_names != dns_names:
        differences.append(f"SANs {', '.join(stored.dns_names) or '(none)'}")
    if stored.serial_number != serial_number:
        differences.append(f"serial number {stored.serial_number or '(none)'}")
    if key_type is not None and _key_type_name(key) != key_type:
        differences.append(f"key type {_key_type_name(key)}")
    if differences:
        raise PendingStateError(
            f"a request for {out_key} is still pending with other options "
            f"({'; '.join(differences)}), kept in {path}",
            _start_over(path),
        )
    return PendingEnrollment(path, stored, stored_server, stored_label, created_now=False)


def save_pending(
    out_key: Path, spec: CsrSpec, *, server: str, label: str | None
) -> PendingEnrollment:
    """Keep ``spec`` (with its private key) before it is sent, so no outcome can lose the key."""
    path = pending_path(out_key)
    document = {
        "format": PENDING_FORMAT,
        "server": server,
        "label": label,
        "common_name": spec.common_name,
        "dns_names": list(spec.dns_names),
        "serial_number": spec.serial_number,
        "key_pem": private_key_to_pem(spec.key).decode("ascii"),
    }
    write_private_file_atomic(
        path, (json.dumps(document, indent=2) + "\n").encode("ascii"), create_parents=False
    )
    return PendingEnrollment(path, spec, server, label, created_now=True)


def explain_failure(pending: PendingEnrollment, error: EstError) -> None:
    """Decide what happens to the state when the enrollment did not produce a certificate.

    Still pending (202/503) or the server unreachable: keep it, and say how to collect. Any other
    refusal of a request made in this run: nothing waits on the server for this key, so the key is
    dropped. A refusal of a request from an earlier run (rejected by the operator, wrong
    credentials): keep it, and say how to start over.
    """
    if isinstance(error, EstRetryLaterError) and error.status == 202:
        error.hint = (
            f"the key and request are kept in {pending.path}; once an operator has approved "
            "it, run this same command again to collect the certificate"
        )
    elif isinstance(error, EstRetryLaterError | EstConnectionError):
        error.hint = (
            f"{error.hint + '; ' if error.hint else ''}the key and request are kept in "
            f"{pending.path} for the next run"
        )
    elif pending.created_now:
        pending.forget()
    else:
        error.hint = (
            f"{error.hint + '; ' if error.hint else ''}the request sent is kept in "
            f"{pending.path}: {_start_over(pending.path)}"
        )


__all__ = [
    "MAX_PENDING_STATE_BYTES",
    "PendingEnrollment",
    "PendingStateError",
    "explain_failure",
    "load_pending",
    "pending_path",
    "save_pending",
]
