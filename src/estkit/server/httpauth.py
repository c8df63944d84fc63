"""HTTP Basic and Digest (RFC 7617, RFC 7616) authentication for ``rfc7030``-mode labels.

Why written here: aiohttp has no server-side Digest support and no maintained Python package
offers an RFC 7616 *server* that plugs into an aiohttp handler. The parts are small: a challenge,
a header parser, stateless nonces, and the response computation (RFC 7616 §3.4.1).

Nonces are stateless: ``base64url(t || r || HMAC-SHA256(secret, t || r)[:16])`` with ``t`` the
issue time and ``r`` random bytes, so any worker process sharing the secret can check them and
they expire after
:data:`NONCE_LIFETIME_SECONDS` (then the client is told ``stale=true`` and retries without asking
the user). Replayed ``nc`` values are refused per process (a bounded memory of recent nonces).

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
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from estkit.server.config import UserRecord, verify_basic_password

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

_PARAM_RE = re.compile(
    r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)', re.DOTALL
)


@dataclass(frozen=True)
class HttpAuthResult:
    """Outcome of checking an Authorization header."""

    user: str | None
    reason: str
    stale: bool = False


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
    ) -> None:
        self.realm = realm
        self._users = users
        self._secret = secret
        self._clock = clock
        self._seen_nc: OrderedDict[str, int] = OrderedDict()

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

    def _nonce_age(self, nonce: str) -> float | None:
        """Seconds since ``nonce`` was issued, or None if it is not one of ours."""
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
        return self._clock() - struct.unpack(">Q", issued[:_NONCE_STAMP_BYTES])[0]

    # -- verification ------------------------------------------------------------------------

    def check(self, authorization: str | None, *, method: str, uri: str) -> HttpAuthResult:
        """Verify an ``Authorization`` header for a request with ``method`` and ``uri``."""
        if not authorization:
            return HttpAuthResult(None, "no HTTP credentials were sent")
        if len(authorization) > MAX_AUTHORIZATION_LENGTH:
            return HttpAuthResult(None, "the Authorization header is too long")
        scheme, _, rest = authorization.strip().partition(" ")
        if scheme.lower() == "basic":
            return self._check_basic(rest.strip())
        if scheme.lower() == "digest":
            return self._check_digest(rest, method=method, uri=uri)
        return HttpAuthResult(
            None, f"unsupported HTTP authentication scheme {scheme[:20]!r}; use Basic or Digest"
        )

    def _check_basic(self, token: str) -> HttpAuthResult:
        try:
            decoded = base64.b64decode(token, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return HttpAuthResult(None, "malformed Basic credentials (not base64 of user:password)")
        username, separator, password = decoded.partition(":")
        if not separator:
            return HttpAuthResult(None, "malformed Basic credentials (no ':' separator)")
        user = self._users().get(username)
        if user is None or not verify_basic_password(user.basic, password):
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
        age = self._nonce_age(params["nonce"])
        if age is None:
            return HttpAuthResult(None, "Digest nonce was not issued by this server")
        username = params["username"]
        user = self._users().get(username)
        if user is None:
            return HttpAuthResult(None, f"wrong user name or password for {username!r} (Digest)")
        ha1 = user.digest_sha256 if algorithm == "SHA-256" else user.digest_md5
        ha2 = _hash(algorithm, f"{method}:{params['uri']}")
        expected = _hash(
            algorithm,
            f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:{params['qop']}:{ha2}",
        )
        if not hmac.compare_digest(expected, params["response"].lower()):
            return HttpAuthResult(None, f"wrong user name or password for {username!r} (Digest)")
        if not 0 <= age <= NONCE_LIFETIME_SECONDS:
            return HttpAuthResult(None, "Digest nonce expired", stale=True)
        try:
            nc = int(params["nc"], 16)
        except ValueError:
            return HttpAuthResult(None, "Digest nc is not a hexadecimal count")
        if nc <= self._seen_nc.get(params["nonce"], 0):
            return HttpAuthResult(None, "Digest nonce count reused (replayed request?)")
        self._seen_nc[params["nonce"]] = nc
        self._seen_nc.move_to_end(params["nonce"])
        while len(self._seen_nc) > MAX_TRACKED_NONCES:
            self._seen_nc.popitem(last=False)
        return HttpAuthResult(username, f"HTTP Digest ({algorithm})")
