"""The server under test and the credentials the suite uses against it.

Why a separate object: the suite is a library first (``run_suite(Target(...))``); the CLI only
turns files and flags into a :class:`Target`. Everything is held as ``cryptography`` objects so a
Python caller never has to write keys to disk.
"""

from __future__ import annotations

import ipaddress
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from estkit.conformance.defaults import DEFAULT_DOMAIN, DEFAULT_TIMEOUT_SECONDS
from estkit.conformance.dnssd import parse_server
from estkit.errors import EstkitError
from estkit.protocol import (
    load_pem_certificates,
    load_private_key,
    public_keys_equal,
    validate_label,
)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


REVOKE_COMMAND_TIMEOUT_SECONDS = 60.0
"""An operator's revoke command (often a CLI that opens the CA's database) gets this long."""

SERIAL_PLACEHOLDER = "{serial}"

Revoker = Callable[[x509.Certificate], None]
"""Revokes a certificate the suite enrolled at the server under test (an operator step: EST has
no revocation request); raises :class:`RevokeError` saying why it could not."""


class TargetError(EstkitError, ValueError):
    """The suite cannot start: a credential file is missing, unreadable or inconsistent."""


class RevokeError(EstkitError):
    """The operator's way to revoke a certificate failed (the message says how)."""


def command_revoker(template: str, *, timeout: float = REVOKE_COMMAND_TIMEOUT_SECONDS) -> Revoker:
    """A :data:`Revoker` running an operator's command, ``{serial}`` replaced by the serial in
    lower-case hex (e.g. ``estkit server revoke /srv/est {serial}``). Split like a shell would,
    but run without one: the serial, the only part the suite fills in, is hex digits."""
    try:
        argv = shlex.split(template)
    except ValueError as exc:
        raise TargetError(f"revoke command: {exc}", params=("revoke_command",)) from None
    if not argv or not any(SERIAL_PLACEHOLDER in part for part in argv):
        raise TargetError(
            f"the revoke command must contain {SERIAL_PLACEHOLDER} where the serial goes",
            params=("revoke_command",),
        )

    def revoke(certificate: x509.Certificate) -> None:
        serial = format(certificate.serial_number, "x")
        command = [part.replace(SERIAL_PLACEHOLDER, serial) for part in argv]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RevokeError(f"the revoke command {command[0]!r} could not run: {exc}") from None
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip()[-300:]
            raise RevokeError(
                f"the revoke command exited with status {done.returncode} for serial {serial}"
                + (f": {said}" if said else "")
            )

    return revoke


@dataclass(frozen=True, eq=False)
class Identity:
    """A TLS client identity: certificate chain (leaf first) and its private key."""

    name: str
    chain: tuple[x509.Certificate, ...]
    key: PrivateKey

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]

    def __post_init__(self) -> None:
        if not self.chain:
            raise TargetError(f"{self.name}: no certificate given")
        if not isinstance(self.key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise TargetError(f"{self.name}: only RSA and ECDSA keys are supported")
        if not public_keys_equal(self.chain[0].public_key(), self.key.public_key()):
            raise TargetError(
                f"{self.name}: the private key does not belong to the first certificate; "
                "give the certificate and key that were issued together"
            )


@dataclass(frozen=True)
class Target:
    """Where the server is and what the suite presents to it."""

    host: str
    port: int
    trust_anchors: tuple[x509.Certificate, ...]
    manufacturer: Identity
    label: str | None = None
    rogue: Identity | None = None
    basic: tuple[str, str] | None = None
    digest: tuple[str, str] | None = None
    """Credentials for an HTTP Digest challenge (RFC 7616), like ``basic`` for Basic."""
    basic_preemptive: bool = False
    """Send ``basic`` with the first request, for servers that never challenge."""
    profile: Literal["nmos", "rfc7030"] = "nmos"
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    domain: str = DEFAULT_DOMAIN
    dns_domain: str | None = None
    """Domain whose ``_nmos-certs._tcp`` adverts are checked (D1-D5); None skips those cases."""
    dns_server: str | None = None
    """``HOST[:PORT]`` of the DNS server to ask (unicast DNS-SD); None: the system's resolver."""
    mdns: bool = False
    """Look for the advert over multicast DNS instead (when no ``dns_domain`` is given)."""
    mdns_interfaces: tuple[str, ...] = ()
    """Interface addresses to browse mDNS on; empty: all."""
    openssl: str | None = "openssl"
    """The ``openssl`` program used for the TLS 1.3 suite probes (None: skip those probes)."""
    revoke: Revoker | None = None
    """How to revoke a certificate the suite enrolled (the operator's step); None: the cases
    that need a revoked certificate are skipped."""

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise TargetError(f"port {self.port} is out of range 1-65535")
        if not self.trust_anchors:
            raise TargetError(
                "no trust anchor given",
                hint="give the CA certificate(s) the server's TLS certificate chains to",
                params=("cacert",),
            )
        if self.label is not None:
            validate_label(self.label)
        if self.dns_domain is not None and not self.dns_domain.strip().strip("."):
            raise TargetError(
                "the DNS domain is empty: give the domain the server is advertised in"
            )
        if self.basic_preemptive and self.basic is None:
            raise TargetError(
                "sending Basic credentials up front needs them",
                hint="give the Basic user name and password",
                params=("basic",),
            )
        if self.mdns and self.dns_domain is not None:
            raise TargetError(
                "give a DNS domain (unicast DNS-SD) or multicast DNS, not both: BCP-003-03 D1 "
                "wants unicast, so check that first"
            )
        if self.dns_server is not None and self.dns_domain is None:
            raise TargetError("a DNS server to ask was given, but no DNS domain to look in")
        if self.dns_server is not None:
            try:
                parse_server(self.dns_server)
            except ValueError as exc:
                raise TargetError(f"DNS server: {exc}") from None

    @property
    def host_is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @property
    def authority(self) -> str:
        """``host:port`` as written in a URL (IPv6 literals in brackets)."""
        if self.host_is_ip and ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.authority}"

    @classmethod
    def from_files(
        cls,
        *,
        host: str,
        port: int,
        cacert: Path,
        cert: Path,
        key: Path,
        rogue_cert: Path | None = None,
        rogue_key: Path | None = None,
        label: str | None = None,
        basic: str | None = None,
        digest: str | None = None,
        basic_preemptive: bool = False,
        profile: Literal["nmos", "rfc7030"] = "nmos",
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        domain: str = DEFAULT_DOMAIN,
        dns_domain: str | None = None,
        dns_server: str | None = None,
        mdns: bool = False,
        mdns_interfaces: tuple[str, ...] = (),
        revoke_command: str | None = None,
    ) -> Target:
        """Build a target from PEM files, with errors that name the file and what to do."""
        if (rogue_cert is None) != (rogue_key is None):
            raise TargetError(
                "the rogue certificate and key go together: give both or neither",
                params=("rogue_cert", "rogue_key"),
            )
        credentials = _user_password(basic, "basic")
        digest_credentials = _user_password(digest, "digest")
        rogue = None
        if rogue_cert is not None and rogue_key is not None:
            rogue = _load_identity("rogue", rogue_cert, rogue_key)
        return cls(
            host=host,
            port=port,
            trust_anchors=tuple(_load_certificates(cacert, "trust anchor file")),
            manufacturer=_load_identity("manufacturer", cert, key),
            label=label,
            rogue=rogue,
            basic=credentials,
            digest=digest_credentials,
            basic_preemptive=basic_preemptive,
            profile=profile,
            timeout=timeout,
            domain=domain,
            dns_domain=dns_domain,
            dns_server=dns_server,
            mdns=mdns,
            mdns_interfaces=mdns_interfaces,
            revoke=command_revoker(revoke_command) if revoke_command else None,
        )


def _user_password(value: str | None, option: str) -> tuple[str, str] | None:
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user:
        raise TargetError(f"the {option} credentials must be USER:PASSWORD", params=(option,))
    return user, password


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TargetError(f"cannot read {what} file {path}: {exc.strerror or exc}") from exc


def _load_certificates(path: Path, what: str) -> list[x509.Certificate]:
    try:
        return load_pem_certificates(_read(path, what))
    except ValueError as exc:
        raise TargetError(f"{what} {path}: {exc}") from exc


def _load_identity(name: str, cert_path: Path, key_path: Path) -> Identity:
    chain = _load_certificates(cert_path, f"{name} certificate")
    try:
        key = load_private_key(_read(key_path, f"{name} key"))
    except ValueError as exc:
        raise TargetError(f"{name} key {key_path}: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise TargetError(f"{name} key {key_path}: only RSA and ECDSA keys are supported")
    return Identity(name=name, chain=tuple(chain), key=key)
