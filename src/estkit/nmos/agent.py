"""The renewal agent: keeps a node's root CA and certificates valid, for months, unattended.

Why a loop of small steps with a state file: a device reboots, loses its network, gets moved to
another studio. Each :meth:`RenewalAgent.run_once` looks at what is on disk and in
``state.json``, does what is due (root check, revocation check, provisioning, renewal), records
the outcome and the next due time, and returns. A restart resumes from the file; tests drive
``run_once`` with a manual clock through months of renewals in milliseconds.

Timing rules (BCP-003-03): rediscover and re-check ``/cacerts`` on start-up (D5, C15); renew at
``renewal_fraction`` of the lifetime, never before 50% (C13); on a failed renewal keep the current
certificate and retry after half the remaining validity, or with exponential backoff from 1 s when
under a day remains (C13); initial provisioning failures back off exponentially from 1 s (C12);
the root is renewed by the same rule, and the same root coming back means "ask again after half
its remaining life" (C14); revoked certificates are dropped at once and replaced (C16).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from estkit.client.deadline import RequestCancelled
from estkit.nmos.anchors import TrustChange
from estkit.nmos.errors import NmosError, ProvisioningError
from estkit.nmos.is04 import certprov_tag
from estkit.nmos.node import NmosNode, pending_retry_seconds
from estkit.nmos.schedule import (
    MIN_RENEWAL_FRACTION,
    SHORT_REMAINING_VALIDITY,
    Action,
    Plan,
    backoff_delay,
    plan_certificate,
    renewal_due_at,
    retry_after_failed_renewal,
    retry_after_same_root,
)
from estkit.protocol.certs import dns_names, sha256_fingerprint

# Never sleep longer than this in one go, so a changed clock or configuration is noticed and
# status stays fresh even when the next renewal is weeks away.
MAX_SLEEP_SECONDS = 6 * 3600.0


@dataclass
class AgentStep:
    """What one :meth:`RenewalAgent.run_once` did and when the next one is due."""

    next_at: datetime | None
    actions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


class RenewalAgent:
    """Runs :class:`NmosNode` on a schedule. ``stop()`` is safe from a signal handler."""

    def __init__(self, node: NmosNode) -> None:
        self.node = node
        self.config = node.config
        self.clock = node.clock
        self.store = node.store
        self._stop = threading.Event()
        self._started = False
        # The first revocation check of this process is done whatever the schedule says (C16):
        # a certificate may have been revoked while the node was off.
        self._revocation_checked = False

    # --- control -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish (SIGTERM): the EST exchange in flight is abandoned at its next
        socket operation (see :func:`estkit.client.deadline.interrupt_blocking_io` for one that
        is blocked), no new one starts, and the step ends without counting it as a failure."""
        self._stop.set()
        self.node.cancel()
        self.clock.wake()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, *, max_steps: int | None = None) -> int:
        """Loop until :meth:`stop` (or ``max_steps``); returns the number of steps run."""
        steps = 0
        while not self.stopping and (max_steps is None or steps < max_steps):
            try:
                step = self.run_once()
            except RequestCancelled:
                break  # stopped mid-exchange: the state of the previous step stays on disk
            steps += 1
            if self.stopping or (max_steps is not None and steps >= max_steps):
                break
            if step.next_at is None:
                delay = MAX_SLEEP_SECONDS
            else:
                delay = (step.next_at - self.clock.now()).total_seconds()
            self.clock.sleep(min(max(delay, 0.0), MAX_SLEEP_SECONDS))
        return steps

    # --- one step ------------------------------------------------------------------------------

    def run_once(self) -> AgentStep:
        """Do whatever is due now; persist the state; say when to come back."""
        state = self.store.load_state()
        now = self.clock.now()
        step = AgentStep(next_at=None)
        state["last_run_at"] = _iso(now)
        if not self.config.est_enabled:
            state.update(next_action="nothing: EST is disabled (C2)", next_action_at=None)
            self.store.save_state(state)
            step.actions.append("EST disabled")
            return step

        root_next = self._root_step(state, now, step)
        self._started = True
        if not self.node.trust_anchors():
            self._finish(state, step, [("fetch the root CA from /cacerts", root_next)])
            return step

        candidates: list[tuple[str, datetime | None]] = [("check the root CA", root_next)]
        if self.config.check_revocation:
            candidates.append(
                ("check revocation (CRL/OCSP)", self._revocation_step(state, now, step))
            )
        for slot in self.config.slots:
            candidates.append(self._certificate_step(slot, state, self.clock.now(), step))
        self._finish(state, step, candidates)
        return step

    def _finish(
        self, state: dict[str, Any], step: AgentStep, candidates: list[tuple[str, datetime | None]]
    ) -> None:
        dated = [(when, what) for what, when in candidates if when is not None]
        if dated:
            when, what = min(dated)
            step.next_at = when
            state["next_action"], state["next_action_at"] = what, _iso(when)
        else:
            state["next_action"], state["next_action_at"] = "nothing scheduled", None
        if step.errors:
            state["last_error"], state["last_error_at"] = step.errors[-1], _iso(self.clock.now())
        if self.node.server_in_use is not None:
            server = self.node.server_in_use
            state["server"] = {"host": server.host, "port": server.port, "label": server.label}
        self.store.save_state(state)

    def _fail(self, step: AgentStep, message: str) -> None:
        step.errors.append(message)
        self.node.emit("failure", "agent", message)
        # D5: rediscover after failures (unless the server is configured by hand).
        self.node.forget_servers()

    # --- root CA (C5, C14, C15) ----------------------------------------------------------------

    def _root_step(self, state: dict[str, Any], now: datetime, step: AgentStep) -> datetime | None:
        root_state: dict[str, Any] = state.setdefault("root", {"failures": 0})
        roots = self.node.trust_anchors()
        due_at = _parse(root_state.get("next_check_at"))
        renewal_due = roots and now >= self._root_renewal_due(roots[0])
        # Start-up always re-checks /cacerts: the node may have moved to another network (C15).
        if roots and self._started and (due_at is None or now < due_at):
            return due_at
        try:
            decision = self.node.fetch_root_ca(rounds=1)
        except (NmosError, OSError) as exc:
            failures = int(root_state.get("failures", 0)) + 1
            root_state.update(failures=failures, last_error=str(exc))
            self._fail(step, f"root CA check failed: {exc}")
            if not roots:
                retry = now + timedelta(seconds=backoff_delay(failures))  # C12
            elif renewal_due:
                retry = retry_after_failed_renewal(now, roots[0].not_valid_after_utc, failures)
            else:
                retry = self._root_renewal_due(roots[0])  # a start-up check: the root still works
            root_state["next_check_at"] = _iso(retry)
            return retry
        root = decision.current_root
        root_state.update(failures=0, last_error=None, fingerprint=sha256_fingerprint(root))
        step.actions.append(f"root CA: {decision.change.value}")
        if decision.change is TrustChange.NEW_DOMAIN:
            # C15: the node re-provisioned every slot under the new root (NmosNode did it, and
            # swapped only once all were in hand): the old schedule no longer applies.
            state["certificates"] = {
                slot: {"failures": 0, "installed_at": _iso(self.clock.now())}
                for slot in self.config.slots
                if self.node.installed(slot) is not None
            }
            for slot, entry in state["certificates"].items():
                installed = self.node.installed(slot)
                assert installed is not None
                entry["serial"] = format(installed.certificate.serial_number, "x")
        due = self._root_renewal_due(root)
        if now >= due:
            # C14: the server handed back a root that is itself due; ask again later.
            due = retry_after_same_root(now, root.not_valid_after_utc)
        root_state["next_check_at"] = _iso(due)
        if decision.change in (TrustChange.ROLLOVER, TrustChange.RENEWED):
            # Move the certificates to the new root's issuer soon, while the old root (still
            # trusted) keeps them valid meanwhile: no trust gap.
            for slot in self.config.slots:
                state.setdefault("certificates", {}).setdefault(slot, {})["reissue"] = True
        return due

    def _root_renewal_due(self, root: Any) -> datetime:
        return renewal_due_at(
            root.not_valid_before_utc, root.not_valid_after_utc, self.config.renewal_fraction
        )

    # --- revocation (C16) ----------------------------------------------------------------------

    def _revocation_step(
        self, state: dict[str, Any], now: datetime, step: AgentStep
    ) -> datetime | None:
        rev: dict[str, Any] = state.setdefault("revocation", {})
        if not self.node.revocation_sources():
            # Nothing names a CRL or OCSP responder: there is nothing to poll.
            rev.update(next_check_at=None, checked_at=None, results={})
            rev["note"] = "no certificate names an OCSP responder or CRL distribution point"
            return None
        due = _parse(rev.get("next_check_at"))
        if self._revocation_checked and due is not None and now < due:
            return due
        self._revocation_checked = True
        try:
            results = self.node.check_revocation()
        except (NmosError, OSError) as exc:
            self._fail(step, f"revocation check failed: {exc}")
            results = {}
        rev.pop("note", None)
        rev["checked_at"] = _iso(now)
        rev["results"] = {
            name: {**r.to_json(), "detail": r.describe()} for name, r in results.items()
        }
        revoked = [name for name, r in results.items() if r.revoked]
        for name in revoked:
            # C16: replaced at once; the renewal floor does not apply to a revoked certificate.
            state.setdefault("certificates", {})[name] = {"failures": 0, "revoked": True}
        if revoked:
            step.actions.append(f"revoked, dropped: {', '.join(revoked)}")
        following = now + timedelta(seconds=self.config.revocation_check_seconds)
        rev["next_check_at"] = _iso(following)
        return following

    # --- certificates (C9, C12, C13) -----------------------------------------------------------

    def _plan(self, slot: str, cert_state: dict[str, Any], now: datetime) -> Plan:
        installed = self.node.installed(slot)
        retry_at = _parse(cert_state.get("retry_at"))
        if installed is None:
            return plan_certificate(now, None, None, retry_at=retry_at)
        cert = installed.certificate
        wanted = {name.lower() for name in self.config.hostnames}
        if {name.lower() for name in dns_names(cert)} != wanted:
            at = retry_at if retry_at is not None and retry_at > now else now
            return Plan(Action.PROVISION, at, "the configured hostnames changed")
        plan = plan_certificate(
            now,
            lifetime_start(cert, cert_state),
            cert.not_valid_after_utc,
            fraction=self.config.renewal_fraction,
            retry_at=retry_at,
        )
        if plan.action is Action.WAIT and cert_state.get("reissue"):
            at = retry_at if retry_at is not None and retry_at > now else now
            plan = Plan(Action.RENEW, at, "the root CA rolled over")
        if plan.action is Action.RENEW and not self.config.auto_renew:
            return Plan(Action.WAIT, cert.not_valid_after_utc, "automatic renewal is disabled (C2)")
        return self._apply_floor(plan, cert, cert_state)

    def _apply_floor(self, plan: Plan, cert: Any, cert_state: dict[str, Any]) -> Plan:
        """Renewal floor (issue 20, C13): a certificate on disk is re-enrolled no sooner than
        ``min_renewal_interval_seconds`` after it was installed and, unless a verified root
        rollover asks for it, no sooner than half its lifetime, whatever the server's validity.
        Only a revoked certificate (removed from disk, so not seen here) is replaced at once."""
        if plan.action is Action.WAIT:
            return plan
        start = lifetime_start(cert, cert_state)
        half = start + (cert.not_valid_after_utc - start) * MIN_RENEWAL_FRACTION
        installed_at = _parse(cert_state.get("installed_at")) or cert.not_valid_before_utc
        floor = installed_at + timedelta(seconds=self.config.min_renewal_interval_seconds)
        if plan.action is Action.RENEW and not cert_state.get("reissue"):
            # A root rollover (verified from the installed root, C5) moves the certificate to
            # the new issuer early, so peers that know only the new root accept it; the
            # minimum interval still applies.
            floor = max(floor, half)
        if plan.at >= floor:
            return plan
        if plan.action is Action.PROVISION and floor > cert.not_valid_after_utc:
            self.node.emit(
                "warning",
                "schedule",
                f"the server issues certificates valid for less than the renewal floor "
                f"({self.config.min_renewal_interval_seconds} s): not enrolling again before "
                f"{floor:%Y-%m-%d %H:%M:%S} UTC",
            )
        return Plan(Action.WAIT, floor, f"renewal floor: not before {floor.isoformat()}")

    def _certificate_step(
        self, slot: str, state: dict[str, Any], now: datetime, step: AgentStep
    ) -> tuple[str, datetime | None]:
        cert_state: dict[str, Any] = state.setdefault("certificates", {}).setdefault(slot, {})
        plan = self._plan(slot, cert_state, now)
        if plan.action is not Action.WAIT and plan.at <= now:
            installed = self.node.installed(slot)
            try:
                if plan.action is Action.RENEW:
                    outcome = self.node.renew(slot, rounds=1)
                else:
                    outcome = self.node.enroll(slot, rounds=1)
            except (NmosError, OSError) as exc:
                failures = int(cert_state.get("failures", 0)) + 1
                cert_state.update(failures=failures, last_error=str(exc))
                pending = isinstance(exc, ProvisioningError) and exc.pending
                cert_state["pending"] = pending
                if pending and isinstance(exc, ProvisioningError):
                    retry = now + timedelta(seconds=pending_retry_seconds(exc))  # C10
                elif plan.action is Action.RENEW and installed is not None:
                    # C13: keep the current certificate; retry after half its remaining life,
                    # or back off from 1 s when under a day remains. The backoff counts only
                    # the failures since entering that last day, so it really starts at 1 s.
                    not_after = installed.certificate.not_valid_after_utc
                    short = int(cert_state.get("short_failures", 0))
                    short = short + 1 if not_after - now < SHORT_REMAINING_VALIDITY else 0
                    cert_state["short_failures"] = short
                    retry = retry_after_failed_renewal(now, not_after, max(short, 1))
                else:
                    retry = now + timedelta(seconds=backoff_delay(failures))  # C12
                cert_state["retry_at"] = _iso(retry)
                self._fail(step, f"{slot}: {plan.action.value} failed: {exc}")
            else:
                cert_state.clear()
                cert_state.update(
                    failures=0,
                    installed_at=_iso(self.clock.now()),
                    serial=format(outcome.certificate.serial_number, "x"),
                )
                step.actions.append(f"{slot}: {'renewed' if outcome.renewed else 'provisioned'}")
            now = self.clock.now()
            plan = self._plan(slot, cert_state, now)
        verb = {Action.PROVISION: "provision", Action.RENEW: "renew", Action.WAIT: "renew"}
        return f"{verb[plan.action]} the {slot} certificate", plan.at

    # --- status (C17) --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What ``estkit nmos status`` shows: files, expiry, next action, last error, IS-04 tag.

        Reads only local files: it works while the network or the server is down.
        """
        return node_status(self.node)


def lifetime_start(cert: Any, cert_state: dict[str, Any]) -> datetime:
    """When the certificate's useful life began: notBefore, or when the agent installed it if
    later (for this very certificate).

    Why: CAs backdate notBefore for clock skew (estkit by 5 minutes). For a 90-day certificate
    that is noise, but for short-lived ones it would put "80% of the lifetime" in the past on
    arrival and renew in a loop. Never earlier than notBefore, so the 50% floor (C13) holds.
    """
    start: datetime = cert.not_valid_before_utc
    installed_at = _parse(cert_state.get("installed_at"))
    if installed_at is not None and cert_state.get("serial") == format(cert.serial_number, "x"):
        start = max(start, min(installed_at, cert.not_valid_after_utc))
    return start


def node_status(node: NmosNode) -> dict[str, Any]:
    """See :meth:`RenewalAgent.status`."""
    config = node.config
    state = node.store.load_state()
    now = node.clock.now()
    roots = node.trust_anchors()
    root_info: dict[str, Any] | None = None
    if roots:
        root = roots[0]
        root_info = {
            "path": str(node.store.root_ca_path),
            "subject": root.subject.rfc4514_string(),
            "fingerprint": sha256_fingerprint(root),
            "not_after": _iso(root.not_valid_after_utc),
            "anchors": len(roots),
            "next_check_at": state.get("root", {}).get("next_check_at"),
        }
    certificates: list[dict[str, Any]] = []
    for slot, key_type in config.slots.items():
        installed = node.installed(slot)
        cert_state = state.get("certificates", {}).get(slot, {})
        entry: dict[str, Any] = {
            "key_type": slot,
            "key_algorithm": key_type,
            "certificate": str(node.store.cert_path(slot)),
            "key": str(node.store.key_path(slot)),
            "failures": cert_state.get("failures", 0),
            "last_error": cert_state.get("last_error"),
            "pending_approval": bool(cert_state.get("pending", False)),
        }
        if installed is None:
            entry.update(state="missing", subject=None, not_after=None, renew_at=None)
        else:
            cert = installed.certificate
            expired = cert.not_valid_after_utc <= now
            entry.update(
                state="expired" if expired else "valid",
                subject=cert.subject.rfc4514_string(),
                issuer=cert.issuer.rfc4514_string(),
                dns_names=dns_names(cert),
                serial=format(cert.serial_number, "x"),
                revocation=_revocation_of_slot(state, slot, format(cert.serial_number, "x")),
                not_before=_iso(cert.not_valid_before_utc),
                not_after=_iso(cert.not_valid_after_utc),
                renew_at=_iso(
                    renewal_due_at(
                        lifetime_start(cert, cert_state),
                        cert.not_valid_after_utc,
                        config.renewal_fraction,
                    )
                ),
            )
        certificates.append(entry)
    manufacturer = node.manufacturer_status(check_revocation_online=False)
    return {
        "est_enabled": config.est_enabled,
        "auto_renew": config.auto_renew,
        "explicit_trust": config.explicit_trust,
        "tags": certprov_tag(config.est_enabled),
        "output_dir": str(config.output_dir),
        "root_ca": root_info,
        "certificates": certificates,
        "manufacturer_certificate": {"state": manufacturer.state, "detail": manufacturer.detail},
        "server": state.get("server"),
        "next_action": state.get("next_action"),
        "next_action_at": state.get("next_action_at"),
        "last_error": state.get("last_error"),
        "last_error_at": state.get("last_error_at"),
        "last_run_at": state.get("last_run_at"),
        "revocation": revocation_summary(state),
    }


def revocation_summary(state: dict[str, Any]) -> dict[str, Any]:
    """The last revocation check (C16) as ``estkit nmos status`` shows it: when, when next, and
    per certificate the status, the method (ocsp/crl) and where the answer came from."""
    rev = state.get("revocation", {})
    results = rev.get("results")
    return {
        "checked_at": rev.get("checked_at"),
        "next_check_at": rev.get("next_check_at"),
        "note": rev.get("note"),
        # A state file of an older version holds one line of text per certificate.
        "results": {
            name: result if isinstance(result, dict) else {"status": None, "detail": str(result)}
            for name, result in (results if isinstance(results, dict) else {}).items()
        },
    }


def _revocation_of_slot(state: dict[str, Any], slot: str, serial: str) -> dict[str, Any] | None:
    """The last check's answer for ``slot`` if it was about this very certificate."""
    result = revocation_summary(state)["results"].get(slot)
    if result is None or result.get("serial") != serial:
        return None
    return {key: result.get(key) for key in ("status", "method", "source", "checked_at")}
