"""The NMOS node's certificate provisioning as a library object (BCP-003-03 client side).

Why an object a vendor embeds: a device already has a process that serves the NMOS APIs; it wants
to call "make sure I have a root and valid certificates" from its own code, get progress as
events, and never have the library print or exit. :class:`NmosNode` does each step once and
raises typed errors; the scheduling (when to renew, how long to back off) lives in
:mod:`estkit.nmos.agent`, the command line in :mod:`estkit.cli.nmos`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from cryptography import x509
from cryptography.x509.oid import NameOID

from estkit.client.errors import EstError, EstRetryLaterError, EstTlsError, printable
from estkit.client.models import CsrSpec, EnrollResult
from estkit.client.status import CertificateStatus, crl_urls, ocsp_urls
from estkit.client.trust import ClientCredentials
from estkit.fileio import LoadedPairs, file_identity
from estkit.nmos.anchors import TrustChange, TrustDecision, decide_trust
from estkit.nmos.clock import Clock, SystemClock
from estkit.nmos.config import NodeConfig
from estkit.nmos.connector import ClientConnector, EstConnector
from estkit.nmos.discovery import (
    DiscoveryResult,
    ServerAdvert,
    discover_mdns,
    discover_unicast,
    manual_advert,
)
from estkit.nmos.errors import (
    CertificateValidationError,
    DiscoveryError,
    NmosError,
    ProvisioningError,
    TrustError,
)
from estkit.nmos.revocation import certificate_status
from estkit.nmos.schedule import backoff_delay
from estkit.nmos.store import CredentialStore, InstalledCredential
from estkit.nmos.validation import validate_issued_certificate
from estkit.protocol.certs import is_signed_by, sha256_fingerprint
from estkit.protocol.keys import (
    PrivateKey,
    describe_public_key,
    generate_private_key,
    supported_private_key,
)
from estkit.protocol.limits import DEFAULT_RETRY_AFTER_SECONDS

if TYPE_CHECKING:
    from estkit.nmos.hooks import HookResult

T = TypeVar("T")

# Where the node records in which network its trust anchor was obtained (C15 evidence).
TRUST_ORIGIN_FILENAME = "trust-origin.json"


@dataclass(frozen=True)
class NodeEvent:
    """Progress for a person or a log: ``kind`` is step, info, warning, success or failure."""

    kind: str
    step: str
    message: str
    slot: str | None = None


EventSink = Callable[[NodeEvent], None]
Discoverer = Callable[[], DiscoveryResult]


@dataclass(frozen=True)
class CertificateOutcome:
    """One certificate installed by :meth:`NmosNode.enroll` or :meth:`NmosNode.renew`."""

    slot: str
    key_type: str
    certificate: x509.Certificate
    chain: list[x509.Certificate]
    cert_path: Path
    key_path: Path
    renewed: bool
    server: ServerAdvert
    warnings: tuple[str, ...] = ()
    hook: HookResult | None = None

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc


@dataclass(frozen=True)
class ManufacturerStatus:
    """Whether the manufacturer certificate may be presented (C1) and why not."""

    usable: bool
    state: str  # "valid", "missing", "expired", "not-yet-valid", "revoked", "unreadable"
    detail: str
    credentials: ClientCredentials | None = None


class NmosNode:
    """BCP-003-03 node operations: servers, root CA, enrollment, renewal, revocation.

    ``clock`` decides what "now" is and how to wait (inject :class:`ManualClock` in tests);
    ``connector`` carries the EST requests (default: :class:`ClientConnector`);
    ``on_event`` receives :class:`NodeEvent` progress; ``discoverer`` replaces DNS-SD.
    """

    def __init__(
        self,
        config: NodeConfig,
        *,
        clock: Clock | None = None,
        connector: EstConnector | None = None,
        on_event: EventSink | None = None,
        discoverer: Discoverer | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        # Set by :meth:`cancel` (the agent stopping): EST exchanges in flight are abandoned.
        self.cancelled = threading.Event()
        self.connector: EstConnector = connector or ClientConnector(
            self.clock,
            max_attempts=config.max_attempts,
            on_wait=self._on_wait,
            cancel=self.cancelled,
        )
        self.store = CredentialStore(config.output_dir, config.root_ca_path)
        # Pairs loaded (and checked) or written by this node, reused while their files are
        # unchanged: an RSA key's load-time check costs more than generating it (issue 23).
        self._pairs = LoadedPairs()
        # Where the new key pairs of enrollments and renewals come from: made on the spot, or
        # made ahead by run_workflow's KeyPrefetch (issue 23). Each call must give a new key.
        self.new_key: Callable[[str], PrivateKey] = generate_private_key
        # Where events go; the workflow puts a sink in front that keeps the events of its
        # concurrent enrollments in sequential order (estkit.nmos.lanes).
        self.on_event: EventSink | None = on_event
        # Hooks never run concurrently (a reload script need not be re-entrant), even when the
        # workflow installs two certificates at once.
        self._hook_lock = threading.Lock()
        self._discoverer = discoverer
        self._rng = rng or random.Random()
        self._servers: list[ServerAdvert] | None = None
        self._discovered_domain: str | None = None
        self.server_in_use: ServerAdvert | None = None

    def cancel(self) -> None:
        """Abandon the EST exchange in flight and start no new one (the agent is stopping)."""
        self.cancelled.set()
        self.clock.wake()

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Run several steps as one exchange with the servers: the connector may keep one
        verified connection per server, credential and thread (issue 23). Trust is unchanged:
        each step verifies the server exactly as on its own."""
        opener = getattr(self.connector, "session", None)
        with opener() if opener is not None else contextlib.nullcontext():
            yield

    # --- events --------------------------------------------------------------------------------

    def emit(self, kind: str, step: str, message: str, slot: str | None = None) -> None:
        sink = self.on_event
        if sink is not None:
            # Messages carry server-provided text (error bodies, names in certificates): control
            # characters are escaped before they reach a terminal or a log (issue 20).
            sink(NodeEvent(kind, step, printable(message), slot))

    def _on_wait(self, attempt: int, seconds: float, reason: str) -> None:
        self.emit("info", "wait", f"attempt {attempt}: {reason}")

    # --- servers (C3, D1-D5) -------------------------------------------------------------------

    @property
    def discovers(self) -> bool:
        """True when the server is not configured by hand and must be discovered (C3)."""
        return self.config.server.host is None

    def servers(self) -> list[ServerAdvert]:
        """The servers to try, best first: the configured one, or the discovered adverts."""
        if self._servers is not None:
            return self._servers
        if not self.discovers:
            server = self.config.server
            assert server.host is not None
            self._servers = [manual_advert(server.host, server.port, server.label)]
            return self._servers
        self.emit("step", "discover", self._discovery_description())
        result = self._discover()
        self._discovered_domain = result.domain
        for warning in result.warnings:
            self.emit("warning", "discover", warning)
        adverts = result.adverts
        label = self.config.server.label
        if label is not None:
            # A configured label overrides what the adverts' api_selector says.
            adverts = [dataclasses.replace(advert, label=label) for advert in adverts]
        for advert in adverts:
            self.emit("info", "discover", f"found {advert.describe()}")
        self._servers = adverts
        return self._servers

    def forget_servers(self) -> None:
        """Rediscover before the next request (D5: after failures and network changes)."""
        if self.discovers:
            self._servers = None

    def _discovery_description(self) -> str:
        disc = self.config.discovery
        if disc.mdns:
            return "browsing _nmos-certs._tcp over mDNS"
        where = f" via {disc.dns_server}" if disc.dns_server else ""
        name = f"_nmos-certs._tcp.{disc.domain}" if disc.domain else "_nmos-certs._tcp"
        scope = "" if disc.domain else " in the system's search domain"
        return f"looking up {name}{scope} by unicast DNS-SD{where}"

    def _discover(self) -> DiscoveryResult:
        if self._discoverer is not None:
            return self._discoverer()
        disc = self.config.discovery
        if disc.mdns:
            return discover_mdns(allow_dev_servers=disc.allow_dev_servers, rng=self._rng)
        return discover_unicast(
            disc.domain,
            dns_server=disc.dns_server,
            allow_dev_servers=disc.allow_dev_servers,
            rng=self._rng,
        )

    def _each_server(
        self, what: str, operation: Callable[[ServerAdvert], T], rounds: int | None = None
    ) -> T:
        """Run ``operation`` on the servers in order; after a full round of failures back off
        exponentially from 1 s (C12), at most ``rounds`` (default ``max_attempts``) rounds.
        The agent passes one round and does the backing off itself, across restarts.

        A 202/503 that outlasts the client's polling is not a server failure: the request is
        queued there (S4), so it is reported as pending instead of being sent elsewhere.
        """
        failures: list[str] = []
        last_hint: str | None = None
        last_params: tuple[str, ...] = ()
        attempts = rounds or self.config.max_attempts
        for round_number in range(1, attempts + 1):
            try:
                servers = self.servers()
            except DiscoveryError as exc:
                failures.append(str(exc))
                last_hint, last_params = exc.hint, exc.params
                servers = []
                self.emit("warning", "discover", str(exc))
            # A failed certificate check does not heal by waiting (wrong name, wrong trust
            # anchor, a root the node refuses): when it is all a round saw, stop instead of
            # backing off for nothing.
            tls_failures_only = bool(servers)
            for server in servers:
                try:
                    result = operation(server)
                except EstRetryLaterError as exc:
                    raise ProvisioningError(
                        f"{what}: {server.describe()} has queued the request "
                        f"({exc.status}, e.g. for manual approval); not issued yet",
                        hint="ask the EST server's operator to approve the request, then run "
                        "again: the node sends the same request (same key) again",
                        attempts=round_number,
                        pending=True,
                    ) from exc
                except (EstError, NmosError, ValueError) as exc:
                    # ValueError: the client refused the settings (e.g. a discovered label it
                    # cannot use); that server is unusable, the next one may be fine.
                    failures.append(f"{server.describe()}: {exc}")
                    tls_failures_only = tls_failures_only and (
                        isinstance(exc, (EstTlsError, TrustError))
                        or isinstance(exc.__cause__, EstTlsError)
                    )
                    # A client error's own hint is already part of its text (EstError.__str__).
                    last_hint = exc.hint if isinstance(exc, NmosError) else None
                    last_params = exc.params if isinstance(exc, NmosError) else ()
                    self.emit("warning", "retry", f"{what} failed on {server.describe()}: {exc}")
                    continue
                self.server_in_use = server
                return result
            if tls_failures_only:
                attempts = round_number
                break
            if round_number < attempts:
                delay = backoff_delay(round_number)
                self.emit(
                    "info", "retry", f"{what}: all servers failed; retrying in {delay:g} s (C12)"
                )
                self.clock.sleep(delay)
                self.forget_servers()
        last = failures[-1] if failures else "no server to try"
        hint, params = (last_hint, last_params) if last_hint else _hint_for(failures)
        raise ProvisioningError(
            f"{what} failed after {attempts} attempt(s): {last}",
            hint=hint,
            attempts=attempts,
            params=params,
        )

    # --- root CA (C4, C5, C14, C15) -----------------------------------------------------------
    #
    # How the rules are read so that whoever answers for the server's name or address cannot
    # take a provisioned node over (docs/security.md, "Node and client trust"):
    #
    # * C4 explicit trust is for a node with NO EST root: its first /cacerts. Once a root is
    #   installed, every EST connection, including the C14 root check, verifies against it
    #   (RFC 7030 §3.6.1, §4.1.3): a TLS failure is an error, never a reason to look unverified.
    # * C5 a new root replaces the installed one only when /cacerts links it to the installed
    #   root (RFC 4210 NewWithOld, or the same key); C6 a person may install any root by hand.
    # * C15 "another domain" is acted on only with local evidence that the node's network
    #   changed (its DNS domain or the discovery domain differ from those recorded with the
    #   root, or the operator says so), when the configuration allows it; the new certificates
    #   are obtained first and swapped in together with the new root, so a refusal midway
    #   leaves the node exactly as it was.

    def trust_anchors(self) -> list[x509.Certificate]:
        """Installed EST roots, current first (empty before provisioning)."""
        return self.store.load_roots()

    def fetch_root_ca(
        self, *, explicit_trust: bool | None = None, rounds: int | None = None
    ) -> TrustDecision:
        """``/cacerts`` and decide what to trust; installs the result (C5).

        With roots installed the server must verify against them. A root of another domain is
        taken only with local evidence of a new network (C15), and then only together with
        freshly issued certificates for every slot (see :meth:`_move_to_new_network`).
        """
        allow_explicit = self.config.explicit_trust if explicit_trust is None else explicit_trust
        if not allow_explicit and not self.trust_anchors():
            # A configuration problem, not a server failure: no server can fix it.
            raise TrustError(
                "no root CA is installed and explicit trust of the EST server is disabled (C4)",
                hint="install the root first (or point root_ca_file at it), or allow explicit "
                "trust",
                params=("install_root", "root_ca_file", "explicit_trust"),
            )
        self.emit("step", "cacerts", "fetching the root CA from /cacerts")
        decision = self._each_server(
            "fetching /cacerts", lambda s: self._cacerts_from(s, allow_explicit), rounds
        )
        if decision.change is TrustChange.NEW_DOMAIN:
            self._move_to_new_network(decision, rounds)
        else:
            self._apply_trust(decision)
        return decision

    def _cacerts_from(self, server: ServerAdvert, allow_explicit: bool) -> TrustDecision:
        installed = self.trust_anchors()
        now = self.clock.now()
        if not installed:
            self.emit(
                "info",
                "cacerts",
                f"trusting {server.describe()} explicitly for this first /cacerts (C4)",
            )
            received = self.connector.cacerts_with_explicit_trust(server)
            return decide_trust([], received, now)
        evidence = self.new_network_evidence()
        try:
            received = self.connector.cacerts(server, installed)
        except EstTlsError as exc:
            if evidence is None:
                raise TrustError(
                    f"{server.describe()} does not verify against the installed root CA: {exc}; "
                    "not trusting it (explicit trust, C4, is only for a node without a root)",
                    hint="nothing was changed. If this node really moved to another network, "
                    "declare it (new_network_confirmed) or install the new root by hand (C6); "
                    "otherwise something else is answering for the EST server",
                    params=("new_network_confirmed", "install_root"),
                ) from exc
            if not allow_explicit:
                raise TrustError(
                    f"{evidence}, but {server.describe()} does not verify against the installed "
                    f"root CA and explicit trust is disabled (C4): {exc}",
                    hint="install the new network's root by hand",
                    params=("install_root",),
                ) from exc
            self.emit(
                "warning",
                "cacerts",
                f"{evidence}: {server.describe()} does not verify against the installed root; "
                "trusting it explicitly for this /cacerts (C4, C15)",
            )
            received = self.connector.cacerts_with_explicit_trust(server)
            decision = decide_trust(installed, received, now)
            if decision.change is not TrustChange.NEW_DOMAIN:
                raise TrustError(
                    f"{server.describe()} presents a TLS certificate that the installed root "
                    f"does not verify, yet publishes the same root ({exc})",
                    hint=exc.hint
                    or "the server's TLS certificate is not issued by its own CA; tell "
                    "its operator",
                ) from exc
            return decision
        decision = decide_trust(installed, received, now)
        if decision.change is TrustChange.NEW_DOMAIN and evidence is None:
            raise TrustError(
                f"{server.describe()} publishes a root CA unrelated to the installed one, with "
                "no NewWithOld certificate linking them (C5); not installing it",
                hint="nothing was changed. If this node moved to another network, declare it "
                "(new_network_confirmed) or install the root by hand (C6)",
                params=("new_network_confirmed", "install_root"),
            )
        return decision

    # --- C15 evidence --------------------------------------------------------------------------

    @property
    def trust_origin_path(self) -> Path:
        return self.config.output_dir / TRUST_ORIGIN_FILENAME

    def network_identity(self) -> dict[str, str | None]:
        """What this node knows locally about the network it is in: its own DNS domain (from
        its first hostname) and, when it discovers, the DNS-SD domain it browses."""
        first = self.config.hostnames[0].lower().rstrip(".")
        node_domain = first.partition(".")[2] or None
        discovery = self._discovered_domain if self.discovers else None
        return {
            "node_domain": node_domain,
            "discovery_domain": discovery.lower().rstrip(".") if discovery else None,
        }

    def trust_origin(self) -> dict[str, str | None] | None:
        """The network identity recorded when the installed root was obtained, if any."""
        try:
            data = json.loads(self.trust_origin_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        return {key: data.get(key) for key in ("node_domain", "discovery_domain")}

    def _trust_origin_record(self, root: x509.Certificate) -> tuple[Path, bytes]:
        """The file recording in which network ``root`` was obtained (C15 evidence)."""
        payload = dict(self.network_identity(), root=sha256_fingerprint(root))
        data = (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()
        return self.trust_origin_path, data

    def new_network_evidence(self) -> str | None:
        """Why this node may accept a root of another domain (C15), or None.

        Only local facts count: an operator's word (``new_network_confirmed``), or the node's own
        DNS domain / discovery domain differing from those recorded with the installed root.
        Nothing a server or a DNS-SD answer says can produce it.
        """
        if self.config.new_network_confirmed:
            return "the operator declared a new network"
        if not self.config.reprovision_on_new_network:
            return None
        origin = self.trust_origin()
        if origin is None:
            return None
        current = self.network_identity()
        for key, label in (
            ("node_domain", "the node's DNS domain"),
            ("discovery_domain", "the DNS-SD discovery domain"),
        ):
            before, now = origin.get(key), current.get(key)
            if before and now and before != now:
                return f"{label} changed from {before} to {now}"
        return None

    # --- installing trust ----------------------------------------------------------------------

    def _move_to_new_network(self, decision: TrustDecision, rounds: int | None) -> None:
        """C15: enroll every slot under the new root first; only then replace root and pairs."""
        evidence = self.new_network_evidence() or "new network"
        for message in decision.messages:
            self.emit("warning", "cacerts", message)
        self.emit(
            "warning",
            "cacerts",
            f"NEW NETWORK (C15, {evidence}): provisioning from scratch; the installed root and "
            "certificates stay in place until every new certificate is in hand",
        )
        staged: dict[str, tuple[EnrollResult, ServerAdvert, list[x509.Certificate]]] = {}
        for slot in self.config.slots:
            staged[slot] = self._request_certificate(
                slot, roots=decision.roots, extra=decision.extra, rounds=rounds
            )
        self._apply_trust(decision)
        for slot, (result, server, chain) in staged.items():
            self._install(slot, result, server, chain, renewed=False)
        self.emit(
            "warning",
            "cacerts",
            f"moved to the new network: root CA {decision.current_root.subject.rfc4514_string()}"
            f" and {len(staged)} certificate(s) replaced (C15)",
        )

    def _apply_trust(self, decision: TrustDecision) -> None:
        """Write the decided anchors. Never removes certificates (see :meth:`install_trust`)."""
        for message in decision.messages:
            self.emit("info", "cacerts", message)
        changed = decision.change is not TrustChange.SAME or not self.store.root_ca_path.exists()
        # Written even when unchanged: the intermediates and rollover certificates the server
        # publishes may have changed, and they are kept (C5).
        record = decision.change in (TrustChange.INITIAL, TrustChange.NEW_DOMAIN) or (
            self.trust_origin() is None
        )
        # The origin record goes with the root, in the same batch: one directory sync for all.
        also = [self._trust_origin_record(decision.current_root)] if record else []
        self.store.save_trust(decision.roots, decision.extra, also=also)
        if changed:
            self.run_hook("root-changed", None)
        self.emit("success", "cacerts", f"root CA written to {self.store.root_ca_path}")

    def install_trust(self, certificates: Sequence[x509.Certificate]) -> TrustDecision:
        """Install a root CA by hand (C6). A person decided: a root of another domain replaces
        the installed one, and the certificates of the previous domain are removed."""
        decision = decide_trust(self.trust_anchors(), list(certificates), self.clock.now())
        if decision.change is TrustChange.NEW_DOMAIN:
            for slot in self.config.slots:
                self.store.remove_credential(slot)
                self.store.drop_pending_key(slot)
            self.emit(
                "warning",
                "install",
                "root of another domain installed by hand (C6): removed the previous domain's "
                "certificates; the node provisions from scratch",
            )
        self._apply_trust(decision)
        return decision

    # --- manufacturer certificate (C1) ---------------------------------------------------------

    def manufacturer_status(self, *, check_revocation_online: bool = True) -> ManufacturerStatus:
        """Load the manufacturer credential and decide whether it may be presented (C1)."""
        cert_path, key_path = self.config.manufacturer_certificate, self.config.manufacturer_key
        if cert_path is None or key_path is None:
            return ManufacturerStatus(False, "missing", "no manufacturer certificate configured")
        try:
            chain, key = self._pairs.load(cert_path, key_path)
        except FileNotFoundError as exc:
            return ManufacturerStatus(False, "missing", f"{exc.filename} does not exist")
        except (OSError, ValueError) as exc:
            return ManufacturerStatus(False, "unreadable", f"cannot load {cert_path}: {exc}")
        leaf = chain[0]
        now = self.clock.now()
        if leaf.not_valid_after_utc <= now:
            return ManufacturerStatus(
                False,
                "expired",
                f"the manufacturer certificate {cert_path} expired on "
                f"{leaf.not_valid_after_utc:%Y-%m-%d}",
            )
        if leaf.not_valid_before_utc > now:
            return ManufacturerStatus(
                False,
                "not-yet-valid",
                f"the manufacturer certificate {cert_path} is not valid before "
                f"{leaf.not_valid_before_utc:%Y-%m-%d} (check the clock)",
            )
        if check_revocation_online and self.config.check_revocation and len(chain) > 1:
            result = self._revocation_of(leaf, chain[1])
            if result.revoked:
                return ManufacturerStatus(
                    False, "revoked", f"the manufacturer certificate's {result.describe()}"
                )
        credentials = ClientCredentials(tuple(chain), key, Path(cert_path), Path(key_path))
        return ManufacturerStatus(True, "valid", f"{leaf.subject.rfc4514_string()}", credentials)

    def device_serial(self) -> str | None:
        """The ``serialNumber`` of the manufacturer certificate, for the CSRs (C1, C7)."""
        path = self.config.manufacturer_certificate
        if path is None:
            return None
        try:
            leaf = x509.load_pem_x509_certificates(Path(path).read_bytes())[0]
        except (OSError, ValueError, IndexError):
            return None
        values = leaf.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
        return str(values[0].value) if values else None

    # --- enrollment (C7-C10) and renewal (C13) -------------------------------------------------

    def installed(self, slot: str) -> InstalledCredential | None:
        cert_path, key_path = self.store.cert_path(slot), self.store.key_path(slot)
        known = self._pairs.lookup(cert_path, key_path)
        if known is not None:
            chain, key = known
            return InstalledCredential(slot, chain, supported_private_key(key), cert_path, key_path)
        try:
            before = (file_identity(cert_path), file_identity(key_path))
        except OSError:
            return None  # either file missing: nothing installed (as the store would say)
        installed = self.store.load_credential(slot)
        if installed is not None:
            self._pairs.remember(
                cert_path, key_path, installed.chain, installed.key, identities=before
            )
        return installed

    def enroll(self, slot: str, *, rounds: int | None = None) -> CertificateOutcome:
        """Initial enrollment for ``slot`` with a new key pair, presenting the manufacturer
        certificate when it is usable, none otherwise (C1, C7, C8)."""
        result, server, chain = self._request_certificate(
            slot, roots=self._require_roots(), extra=self.store.load_chain(), rounds=rounds
        )
        return self._install(slot, result, server, chain, renewed=False)

    def _request_certificate(
        self,
        slot: str,
        *,
        roots: list[x509.Certificate],
        extra: list[x509.Certificate],
        rounds: int | None,
    ) -> tuple[EnrollResult, ServerAdvert, list[x509.Certificate]]:
        """/simpleenroll for ``slot`` over connections verified by ``roots``; the answer is
        validated (C9) against ``roots`` but nothing is installed."""
        key_type = self.config.slots[slot]
        status = self.manufacturer_status()
        if status.usable:
            self.emit(
                "info", "enroll", f"presenting the manufacturer certificate {status.detail}", slot
            )
        else:
            self.emit(
                "warning",
                "enroll",
                f"{status.detail}: not presenting it (C1); enrolling without a client certificate "
                "(the server may queue the request for manual approval)",
                slot,
            )
        # Reuse the key of a request the server has queued: the approval is for that key (C10).
        # It is saved before sending, so a restart mid-wait repeats the same request.
        key = self.store.load_pending_key(slot)
        if key is None or not _key_is_type(key, key_type):
            key = self.new_key(key_type)
            self.store.save_pending_key(slot, key)
        spec = CsrSpec(
            key=key,
            common_name=self.config.hostnames[0],
            dns_names=tuple(self.config.hostnames),
            serial_number=self.device_serial(),
        )
        self.emit(
            "step",
            "enroll",
            f"requesting a certificate for {self.config.hostnames[0]} with a new "
            f"{_describe_key(key)} key (/simpleenroll)",
            slot,
        )
        try:
            return self._each_server(
                f"enrolling the {slot} certificate",
                lambda s: self._checked(
                    slot,
                    s,
                    self.connector.enroll(
                        s, spec, trust=roots, credentials=status.credentials, renewal=False
                    ),
                    roots=roots,
                    extra=extra,
                ),
                rounds,
            )
        except ProvisioningError as exc:
            if not exc.pending:
                # Not queued anywhere (refused, rejected, unreachable): the next attempt gets a
                # fresh key, so a rejected request is never repeated (C7: new key pair).
                self.store.drop_pending_key(slot)
            raise

    def renew(self, slot: str, *, rounds: int | None = None) -> CertificateOutcome:
        """``/simplereenroll`` with a new key pair, presenting the certificate being renewed;
        the new pair replaces the old one (C9, C13). The old pair stays in use until then."""
        key_type = self.config.slots[slot]
        current = self.installed(slot)
        if current is None:
            raise ProvisioningError(
                f"no valid {slot} certificate to renew", hint="run the initial enrollment first"
            )
        roots = self._require_roots()
        key = self.new_key(key_type)
        spec = CsrSpec.for_renewal(current.certificate, key)
        credentials = ClientCredentials(
            tuple(current.chain), current.key, current.cert_path, current.key_path
        )
        self.emit(
            "step",
            "renew",
            f"renewing the {slot} certificate (serial {current.certificate.serial_number:x}) "
            "with a new key pair (/simplereenroll)",
            slot,
        )
        result, server, chain = self._each_server(
            f"renewing the {slot} certificate",
            lambda s: self._checked(
                slot,
                s,
                self.connector.enroll(s, spec, trust=roots, credentials=credentials, renewal=True),
                roots=roots,
                extra=self.store.load_chain(),
            ),
            rounds,
        )
        return self._install(slot, result, server, chain, renewed=True)

    def _require_roots(self) -> list[x509.Certificate]:
        roots = self.trust_anchors()
        if not roots:
            raise TrustError(
                "no root CA installed: fetch it from /cacerts first",
                hint="run the workflow or the agent, or install it with `estkit nmos install`",
            )
        return roots

    def _checked(
        self,
        slot: str,
        server: ServerAdvert,
        result: EnrollResult,
        *,
        roots: list[x509.Certificate],
        extra: list[x509.Certificate],
    ) -> tuple[EnrollResult, ServerAdvert, list[x509.Certificate]]:
        """C9 checks inside the per-server attempt, so a bad answer counts as that server's
        failure and the next server is tried (C12)."""
        if result.private_key is None:
            raise CertificateValidationError("the enrollment result carries no private key")
        self.emit("step", "validate", "checking the issued certificate (C9)", slot)
        chain = validate_issued_certificate(
            result.certificate,
            result.private_key,
            hostnames=self.config.hostnames,
            roots=roots,
            intermediates=[*result.chain, *extra],
            now=self.clock.now(),
        )
        return result, server, chain

    def _install(
        self,
        slot: str,
        result: EnrollResult,
        server: ServerAdvert,
        chain: list[x509.Certificate],
        *,
        renewed: bool,
    ) -> CertificateOutcome:
        key = result.private_key
        assert key is not None  # checked by _checked
        installed = self.store.install_credential(slot, [result.certificate, *chain], key)
        self._pairs.remember(installed.cert_path, installed.key_path, installed.chain, key)
        for warning in result.warnings:
            self.emit("warning", "enroll", warning, slot)
        self.emit(
            "success",
            "renew" if renewed else "enroll",
            f"{'renewed' if renewed else 'installed'} {installed.cert_path.name} "
            f"(serial {result.certificate.serial_number:x}, valid until "
            f"{result.certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC)",
            slot,
        )
        hook = self.run_hook("renewed" if renewed else "provisioned", slot)
        return CertificateOutcome(
            slot=slot,
            key_type=self.config.slots[slot],
            certificate=result.certificate,
            chain=chain,
            cert_path=installed.cert_path,
            key_path=installed.key_path,
            renewed=renewed,
            server=server,
            warnings=tuple(result.warnings),
            hook=hook,
        )

    def remove(self, slot: str, reason: str) -> None:
        """Stop using a certificate at once (revoked, C16) and tell the hook."""
        self.store.remove_credential(slot)
        self.emit("warning", "revocation", f"removed the {slot} certificate: {reason}", slot)
        self.run_hook("removed", slot)

    # --- revocation (C16) ----------------------------------------------------------------------

    def _revocation_of(self, cert: x509.Certificate, issuer: x509.Certificate) -> CertificateStatus:
        return certificate_status(
            cert, issuer, connector=self.connector, trust=self.trust_anchors(), now=self.clock.now()
        )

    def revocation_sources(self) -> list[str]:
        """CRL and OCSP URLs named by the root and the installed certificates (C16)."""
        certs = self.trust_anchors()[:1]
        for slot in self.config.slots:
            installed = self.installed(slot)
            if installed is not None:
                certs.append(installed.certificate)
        return [url for cert in certs for url in (*ocsp_urls(cert), *crl_urls(cert))]

    def check_revocation(self) -> dict[str, CertificateStatus]:
        """Check each installed certificate, and the root when it names a responder: OCSP via the
        AIA first, the CRL distribution point as fallback (:mod:`estkit.client.status`). A
        revoked certificate is removed at once, so the next step enrolls a new one with the
        manufacturer certificate (C16). Returns the status per slot (and ``"root"``)."""
        results: dict[str, CertificateStatus] = {}
        roots = self.trust_anchors()
        if roots and (ocsp_urls(roots[0]) or crl_urls(roots[0])):
            results["root"] = self._revocation_of(roots[0], roots[0])
        for slot in self.config.slots:
            installed = self.installed(slot)
            if installed is None:
                continue
            cert = installed.certificate
            issuer = _issuer_of(cert, [*installed.chain[1:], *self.store.load_chain(), *roots])
            if issuer is None:
                serial = format(cert.serial_number, "x")
                problem = "its issuer certificate is neither in its chain nor a trust anchor"
                results[slot] = CertificateStatus(
                    "unknown", serial, checked_at=self.clock.now(), problems=(problem,)
                )
                continue
            result = self._revocation_of(cert, issuer)
            results[slot] = result
            if result.revoked:
                self.remove(
                    slot,
                    f"{result.describe()}; enrolling a new one with the manufacturer "
                    "certificate (C16)",
                )
        if "root" in results and results["root"].revoked:
            self.emit("failure", "revocation", f"the root CA's {results['root'].describe()}")
            for slot in self.config.slots:
                with contextlib.suppress(OSError):
                    self.store.remove_credential(slot)
            self.store.remove_trust()
        return results

    # --- hook ----------------------------------------------------------------------------------

    def run_hook(self, event: str, slot: str | None) -> HookResult | None:
        command = self.config.on_change
        if command is None:
            return None
        # Only a node with a hook needs it (and subprocess): not loaded otherwise (issue 23).
        from estkit.nmos.hooks import hook_environment, run_hook

        variables = hook_environment(
            event,
            slot=slot,
            cert_path=self.store.cert_path(slot) if slot else None,
            key_path=self.store.key_path(slot) if slot else None,
            root_ca_path=self.store.root_ca_path,
            output_dir=self.config.output_dir,
        )
        with self._hook_lock:
            result = run_hook(command, variables, cwd=self.config.output_dir)
        self.emit("info" if result.ok else "warning", "hook", result.describe(), slot)
        return result


def pending_retry_seconds(exc: ProvisioningError) -> float:
    """How long to wait before asking again about a queued request."""
    cause = exc.__cause__
    if isinstance(cause, EstRetryLaterError) and cause.retry_after:
        return float(cause.retry_after)
    return float(DEFAULT_RETRY_AFTER_SECONDS)


def _issuer_of(
    cert: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    return next((candidate for candidate in candidates if is_signed_by(cert, candidate)), None)


def _key_is_type(key: PrivateKey, key_type: str) -> bool:
    try:
        info = describe_public_key(key.public_key())
    except (AttributeError, ValueError):
        return False
    expected = {"p256": "P-256", "p384": "P-384", "p521": "P-521"}
    if key_type.startswith("rsa"):
        return info.family == "rsa" and info.size == int(key_type[3:])
    return info.family == "ec" and info.description.endswith(expected.get(key_type, "?"))


def _describe_key(key: PrivateKey) -> str:
    try:
        return describe_public_key(key.public_key()).description
    except (AttributeError, ValueError):
        return "new"


def _hint_for(failures: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """What to check after ``failures``, and the settings concerned (the CLI names its flags)."""
    text = " ".join(failures).lower()
    if "verify the tls certificate" in text or "certificate verify" in text:
        return (
            "check the trust anchors (root CA) and that the server host is a name the server's "
            "TLS certificate holds (e.g. localhost, not 127.0.0.1)",
            ("server",),
        )
    if "connect" in text or "no answer" in text:
        return "check that the EST server is running and reachable at the address shown", ()
    if "verify" in text or "tls" in text:
        return "check the trust anchors (root CA) and the server's TLS certificate", ()
    if "policy" in text or "400" in text:
        return (
            "the server refused the request itself: check the node's host names (DNS names, no "
            "IP address or wildcard) and the server's profile",
            ("hostnames",),
        )
    if "403" in text or "401" in text or "refused" in text:
        return (
            "the server refused this node: check its client certificate and key",
            ("manufacturer_credentials",),
        )
    return "see the messages above; check the server's log for the refusal reason", ()
