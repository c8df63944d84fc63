"""HTTP Basic and Digest (RFC 7617, RFC 7616) authentication for ``rfc7030``-mode labels.

Why written here: aiohttp has no server-side Digest support and no maintained Python package
offers an RFC 7616 *server* that plugs into an aiohttp handler. The parts are small: a challenge,
a header parser, stateless nonces, and the response computation (RFC 7616 §3.4.1).

Nonces are ``base64url(t || r || HMAC-SHA256(secret, t || r)[:16])`` with ``t`` the issue time
and ``r`` random bytes. The secret is kept in the certificate store, so every worker process and
every server on that store issues and accepts the same nonces, and they expire after
:data:`NONCE_LIFETIME_SECONDS` (then the client is told ``stale=true`` and retries without asking
the user). Each (nonce, nc) pair is accepted once: its use is recorded in the store (a callback),
so a replay is refused whichever process sees it (issue 24). Without a store callback (unit use)
a bounded in-process memory does the same for one process.

Failures cost the same for unknown users and wrong passwords (a dummy scrypt hash and a dummy
Digest HA1 go through the same code), and repeated failures back off (:class:`FailureBackoff`).

Never used in ``nmos`` mode: BCP-003-03 S5 forbids HTTP authentication challenges there.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from estkit.server.config import UserRecord, hash_basic_password, verify_basic_password

# How long a Digest nonce stays valid; long enough for one enrollment round trip plus retries.
NONCE_LIFETIME_SECONDS = 300
# Recent nonces remembered for nc replay detection (per process).
MAX_TRACKED_NONCES = 4096
# Longest Authorization header we parse; real ones are a few hundred bytes.
MAX_AUTHORIZATION_LENGTH = 4096
_NONCE_MAC_BYTES = 16
# Random part: two challenges in the same second must still get different nonces, or the
# nonce-count replay check would refuse the second client.
_NONCE_RANDOM_BYTES = 8
_NONCE_STAMP_BYTES = 8
DIGEST_ALGORITHMS = ("SHA-256", "MD5")
# A recorded nonce use is kept a little longer than the nonce lives, so that a replay arriving
# just as the nonce expires is still refused as a replay (not merely as stale).
NONCE_USE_RETENTION_SECONDS = NONCE_LIFETIME_SECONDS + 60
# Backoff after failed HTTP authentication (per process). Five failures from one address are
# more than a person mistyping; ten failures for one user name from anywhere is a guessing run.
SOURCE_FAILURES_BEFORE_BACKOFF = 5
USER_FAILURES_BEFORE_BACKOFF = 10
# The wait doubles with each failure past the threshold, from 1 s up to 5 minutes: slow enough to
# make online guessing of a scrypt-hashed password pointless, short enough for a locked-out
# person to retry soon after fixing a typo.
BACKOFF_BASE_SECONDS = 1
BACKOFF_MAX_SECONDS = 300
# Failures are forgotten after 15 minutes without a new one.
FAILURE_MEMORY_SECONDS = 900
# Bounded tables: an attacker cycling through user names or source addresses evicts the oldest
# entries instead of growing memory (4096 entries x ~200 bytes ~ 1 MiB per table).
MAX_BACKOFF_ENTRIES = 4096
# User names are keys of a backoff table: a guesser could send 4 KiB names; 128 characters tell
# real names apart and keep the table at most 4096 x 128 bytes.
MAX_BACKOFF_USER_NAME = 128

NonceUse = Callable[[str, int, float], bool]

_PARAM_RE = re.compile(
    r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)', re.DOTALL
)


@dataclass(frozen=True)
class HttpAuthResult:
    """Outcome of checking an Authorization header."""

    user: str | None
    reason: str
    stale: bool = False
    # Seconds the caller must wait (answer 429 with Retry-After) when backing off.
    retry_after: int | None = None


@dataclass
class _Failures:
    count: int
    last: float


@dataclass
class FailureBackoff:
    """Failed authentications per source address and per user name, in bounded tables.

    A source is refused for a while after :data:`SOURCE_FAILURES_BEFORE_BACKOFF` failures. A user
    name is locked after :data:`USER_FAILURES_BEFORE_BACKOFF` failures *for sources that have
    failed themselves*: the attacker cannot lock the real user out, who comes from an address
    with a clean record.
    """

    clock: Callable[[], float] = time.monotonic
    _sources: OrderedDict[str, _Failures] = field(default_factory=OrderedDict)
    _users: OrderedDict[str, _Failures] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def _wait(entry: _Failures | None, threshold: int, now: float) -> float:
        if entry is None or entry.count < threshold:
            return 0.0
        if now - entry.last > FAILURE_MEMORY_SECONDS:
            return 0.0
        delay: float = min(
            BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (entry.count - threshold)
        )
        return max(0.0, entry.last + delay - now)

    def retry_after(self, source: str | None, user: str | None) -> tuple[int, str] | None:
        """(seconds to wait, what is backing off) before this source may try (this user)
        again, or None."""
        now = self.clock()
        with self._lock:
            source_entry = self._sources.get(source) if source else None
            source_wait = self._wait(source_entry, SOURCE_FAILURES_BEFORE_BACKOFF, now)
            user_wait = 0.0
            if user is not None and source_entry is not None:
                user_wait = self._wait(self._users.get(user), USER_FAILURES_BEFORE_BACKOFF, now)
        if source_wait <= 0 and user_wait <= 0:
            return None
        if source_wait >= user_wait:
            return int(source_wait) + 1, f"from {source}"
        return int(user_wait) + 1, f"for user {(user or '')[:64]!r} from addresses that failed"

    def failed(self, source: str | None, user: str | None) -> None:
        now = self.clock()
        with self._lock:
            for table, key in ((self._sources, source), (self._users, user)):
                if not key:
                    continue
                entry = table.get(key)
                if entry is None or now - entry.last > FAILURE_MEMORY_SECONDS:
                    entry = _Failures(0, now)
                entry.count += 1
                entry.last = now
                table[key] = entry
                table.move_to_end(key)
                while len(table) > MAX_BACKOFF_ENTRIES:
                    table.popitem(last=False)

    def succeeded(self, source: str | None, user: str) -> None:
        with self._lock:
            if source:
                self._sources.pop(source, None)


def _hash(algorithm: str, data: str) -> str:
    if algorithm == "SHA-256":
        return hashlib.sha256(data.encode("utf-8")).hexdigest()
    return hashlib.md5(data.encode("utf-8"), usedforsecurity=False).hexdigest()


def parse_auth_params(text: str) -> dict[str, str]:
    """Parse ``name=value, name="quoted \\"value\\""`` lists (RFC 7235 auth-param)."""
    params: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = _PARAM_RE.match(text, position)
        if match is None or match.end() == position:
            raise ValueError("malformed Digest parameters")
        name = match.group(1).lower()
        quoted, token = match.group(2), match.group(3)
        params[name] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else token
        position = match.end()
    return params


class HttpAuthenticator:
    """Checks Basic and Digest credentials against the configured users of one realm."""

    def __init__(
        self,
        realm: str,
        users: Callable[[], Mapping[str, UserRecord]],
        secret: bytes,
        *,
        clock: Callable[[], float] = time.time,
        nonce_use: NonceUse | None = None,
        backoff: FailureBackoff | None = None,
    ) -> None:
        self.realm = realm
        self._users = users
        self._secret = secret
        self._clock = clock
        self._nonce_use = nonce_use
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self.backoff = backoff or FailureBackoff()
        # Unknown users are checked against these, so an unknown name costs exactly what a
        # wrong password costs (same scrypt parameters, same Digest arithmetic).
        dummy_password = secrets.token_urlsafe(16)
        self._dummy_basic = hash_basic_password(dummy_password)
        self._dummy_ha1 = secrets.token_hex(32)

    # -- challenge ---------------------------------------------------------------------------

    def new_nonce(self) -> str:
        issued = struct.pack(">Q", int(self._clock())) + secrets.token_bytes(_NONCE_RANDOM_BYTES)
        mac = hmac.new(self._secret, issued, hashlib.sha256).digest()[:_NONCE_MAC_BYTES]
        return base64.urlsafe_b64encode(issued + mac).decode("ascii").rstrip("=")

    def challenges(self, *, stale: bool = False) -> list[str]:
        """``WWW-Authenticate`` values: Digest SHA-256, Digest MD5 (older clients), Basic."""
        nonce = self.new_nonce()
        stale_param = ", stale=true" if stale else ""
        digest = [
            f'Digest realm="{self.realm}", qop="auth", algorithm={algorithm}, '
            f'nonce="{nonce}", charset=UTF-8{stale_param}'
            for algorithm in DIGEST_ALGORITHMS
        ]
        return [*digest, f'Basic realm="{self.realm}", charset="UTF-8"']

    def _nonce_issued(self, nonce: str) -> float | None:
        """When ``nonce`` was issued (clock seconds), or None if it is not one of ours."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (binascii.Error, ValueError):
            return None
        prefix = _NONCE_STAMP_BYTES + _NONCE_RANDOM_BYTES
        if len(raw) != prefix + _NONCE_MAC_BYTES:
            return None
        issued, mac = raw[:prefix], raw[prefix:]
        expected = hmac.new(self._secret, issued, hashlib.sha256).digest()[:_NONCE_MAC_BYTES]
        if not hmac.compare_digest(mac, expected):
            return None
        return float(struct.unpack(">Q", issued[:_NONCE_STAMP_BYTES])[0])

    def _first_use(self, nonce: str, nc: int, issued: float) -> bool:
        """Record (nonce, nc); False when it was seen before (in the store: by any process)."""
        if self._nonce_use is not None:
            return self._nonce_use(nonce, nc, issued + NONCE_USE_RETENTION_SECONDS)
        key = (nonce, nc)
        if key in self._seen:
            return False
        self._seen[key] = None
        while len(self._seen) > MAX_TRACKED_NONCES:
            self._seen.popitem(last=False)
        return True

    # -- verification ------------------------------------------------------------------------

    def check(
        self, authorization: str | None, *, method: str, uri: str, source: str | None = None
    ) -> HttpAuthResult:
        """Verify an ``Authorization`` header for a request with ``method`` and ``uri`` from
        address ``source`` (for the backoff; None skips it)."""
        if not authorization:
            return HttpAuthResult(None, "no HTTP credentials were sent")
        if len(authorization) > MAX_AUTHORIZATION_LENGTH:
            return HttpAuthResult(None, "the Authorization header is too long")
        scheme, _, rest = authorization.strip().partition(" ")
        verify: Callable[[], HttpAuthResult]
        if scheme.lower() == "basic":
            claimed = self._basic_user(rest.strip())

            def verify() -> HttpAuthResult:
                return self._check_basic(rest.strip())

        elif scheme.lower() == "digest":
            claimed = self._digest_user(rest)

            def verify() -> HttpAuthResult:
                return self._check_digest(rest, method=method, uri=uri)

        else:
            return HttpAuthResult(
                None, f"unsupported HTTP authentication scheme {scheme[:20]!r}; use Basic or Digest"
            )
        if claimed is not None:
            claimed = claimed[:MAX_BACKOFF_USER_NAME]
        backing_off = self.backoff.retry_after(source, claimed)
        if backing_off is not None:
            wait, what = backing_off
            return HttpAuthResult(
                None,
                f"too many failed HTTP authentication attempts {what}; "
                f"wait {wait} s before trying again",
                retry_after=wait,
            )
        result = verify()
        if result.user is not None:
            self.backoff.succeeded(source, result.user)
        elif result.reason.startswith("wrong user name or password"):
            self.backoff.failed(source, claimed)
        return result

    @staticmethod
    def _basic_user(token: str) -> str | None:
        try:
            return base64.b64decode(token, validate=True).decode("utf-8").partition(":")[0]
        except (binascii.Error, ValueError):
            return None

    @staticmethod
    def _digest_user(text: str) -> str | None:
        try:
            return parse_auth_params(text).get("username")
        except ValueError:
            return None

    def _check_basic(self, token: str) -> HttpAuthResult:
        try:
            decoded = base64.b64decode(token, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return HttpAuthResult(None, "malformed Basic credentials (not base64 of user:password)")
        username, separator, password = decoded.partition(":")
        if not separator:
            return HttpAuthResult(None, "malformed Basic credentials (no ':' separator)")
        user = self._users().get(username)
        # The same scrypt work whether or not the user exists (no user-enumeration by timing).
        stored = user.basic if user is not None else self._dummy_basic
        matches = verify_basic_password(stored, password)
        if user is None or not matches:
            return HttpAuthResult(None, f"wrong user name or password for {username!r} (Basic)")
        return HttpAuthResult(username, "HTTP Basic")

    def _check_digest(self, text: str, *, method: str, uri: str) -> HttpAuthResult:
        try:
            params = parse_auth_params(text)
        except ValueError as exc:
            return HttpAuthResult(None, str(exc))
        missing = [
            name
            for name in ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
            if not params.get(name)
        ]
        if missing:
            return HttpAuthResult(None, f"Digest credentials lack {', '.join(missing)}")
        algorithm = params.get("algorithm", "MD5").upper()
        if algorithm not in DIGEST_ALGORITHMS:
            return HttpAuthResult(
                None, f"unsupported Digest algorithm {algorithm!r}; use SHA-256 or MD5"
            )
        if params["qop"] != "auth":
            return HttpAuthResult(None, f"unsupported Digest qop {params['qop']!r}; use auth")
        if params.get("userhash", "false").lower() == "true":
            return HttpAuthResult(None, "Digest userhash is not supported")
        if params["realm"] != self.realm:
            return HttpAuthResult(None, f"Digest realm {params['realm']!r} is not {self.realm!r}")
        if params["uri"] != uri:
            return HttpAuthResult(None, "Digest uri does not match the request target")
        issued = self._nonce_issued(params["nonce"])
        if issued is None:
            return HttpAuthResult(None, "Digest nonce was not issued by this server")
        age = self._clock() - issued
        username = params["username"]
        user = self._users().get(username)
        if user is None:
            ha1 = self._dummy_ha1  # same arithmetic as a wrong password
        else:
            ha1 = user.digest_sha256 if algorithm == "SHA-256" else user.digest_md5
        ha2 = _hash(algorithm, f"{method}:{params['uri']}")
        expected = _hash(
            algorithm,
            f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:{params['qop']}:{ha2}",
        )
        response_ok = hmac.compare_digest(expected, params["response"].lower())
        if user is None or not response_ok:
            return HttpAuthResult(None, f"wrong user name or password for {username!r} (Digest)")
        if not 0 <= age <= NONCE_LIFETIME_SECONDS:
            return HttpAuthResult(None, "Digest nonce expired", stale=True)
        try:
            nc = int(params["nc"], 16)
        except ValueError:
            return HttpAuthResult(None, "Digest nc is not a hexadecimal count")
        if not self._first_use(params["nonce"], nc, issued):
            return HttpAuthResult(
                None,
                f"Digest nonce count {params['nc']} reused with this nonce (a replayed "
                "request?); send the next nonce count or a new nonce",
            )
        return HttpAuthResult(username, f"HTTP Digest ({algorithm})")
