"""The server's configuration file (``DIR/estkit.toml``): reading, writing and small edits.

Why TOML with paths relative to the file: a data directory can be copied or moved as a whole,
and an operator can read and edit the file by hand. Every value is validated on load so a typo
stops the server at start with a message naming the key, not with a 500 later.

Passwords are never stored: HTTP Basic users get a salted scrypt hash; Digest (RFC 7616) needs
the HA1 value ``H(user:realm:password)``, which is what RFC 7616 servers keep (it is
password-equivalent for that realm only, so the file is written 0600).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from estkit.ca.pointers import check_public_url
from estkit.ca.profiles import Profile, ProfileError, profile_from_mapping, profile_to_mapping
from estkit.errors import EstkitError
from estkit.fileio import write_private_file_atomic
from estkit.protocol.certs import (
    is_ca_certificate,
    issuer_public_key,
    load_pem_certificates,
    parse_fingerprint,
    sha256_fingerprint,
)
from estkit.protocol.errors import EncodingError
from estkit.protocol.paths import validate_label
from estkit.server.limits import ConnectionLimits, LimitsError
from estkit.tomlcheck import read_toml, sub_table

CONFIG_FILE_NAME = "estkit.toml"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8443
DEFAULT_REALM = "estkit"
# Metrics show label names, load and queue sizes: loopback unless the operator opens them up.
DEFAULT_METRICS_HOST = "127.0.0.1"
# BCP-003-03 D3: 0-99 are live servers (0 highest priority), 100+ development only. A zone file is
# for a real deployment, so the default is a live value an administrator can still outrank.
DEFAULT_DNSSD_PRI = 10

# scrypt cost for HTTP Basic password hashes: ~16 MiB and tens of milliseconds per check (the
# interactive-login parameters recommended with scrypt), so a stolen file resists guessing.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_SALT_BYTES = 16
SCRYPT_DKLEN = 32
_SCRYPT_MAXMEM = 64 * 1024 * 1024

_HEADER = (
    "# estkit EST server configuration. Paths are relative to this file.\n"
    "# Edit by hand or with `estkit server` commands; see docs for every key.\n\n"
)


class ConfigError(EstkitError, ValueError):
    """The configuration file is missing or invalid; the message names the file and the key."""

    def __init__(
        self, message: str, hint: str | None = None, *, params: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message, hint=hint, params=params)


@dataclass(frozen=True)
class CertificatePair:
    """One TLS server certificate chain (PEM, leaf first) and its private key file."""

    certificate: Path
    key: Path


@dataclass(frozen=True)
class UpstreamConfig:
    """``[upstream]``: registration-authority mode (issue 21): requests go to this EST server.

    ``password_file`` holds the optional HTTP Basic password (0600, outside the TOML so that
    the configuration can be shown without it).
    """

    url: str
    trust: Path
    certificate: Path
    key: Path
    label: str | None = None
    user: str | None = None
    password_file: Path | None = None


@dataclass(frozen=True)
class TrustedClientRoot:
    """A manufacturer CA whose device certificates may authenticate (BCP-003-03 S3).

    ``certificate`` may hold the root and any intermediates. ``crl`` is re-read when the file
    changes. ``accept_expired`` is the S3 "MAY accept an expired but unrevoked manufacturer
    certificate" option.
    """

    certificate: Path
    crl: Path | None = None
    accept_expired: bool = False


@dataclass(frozen=True)
class UserRecord:
    """One HTTP user of rfc7030-mode labels: hashes only, never the password."""

    name: str
    basic: str
    digest_sha256: str
    digest_md5: str


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server reads from ``estkit.toml`` (paths absolute)."""

    path: Path
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    database_url: str = ""
    ca_directory: Path = Path("ca")
    tls_certificates: tuple[CertificatePair, ...] = ()
    crl_url: str | None = None
    # Base of the OCSP/CRL URLs put in every certificate (estkit.server.public_url); None: derived
    # from the server certificate's first DNS name and the listening port.
    public_url: str | None = None
    label_public_urls: Mapping[str, str] = field(default_factory=dict)
    realm: str = DEFAULT_REALM
    dnssd_pri: int = DEFAULT_DNSSD_PRI
    default_profile: Profile = field(default_factory=Profile)
    labels: Mapping[str, Profile] = field(default_factory=dict)
    trusted_client_roots: tuple[TrustedClientRoot, ...] = ()
    users: Mapping[str, UserRecord] = field(default_factory=dict)
    # [limits]: timeouts and the connection cap that keep slow clients from starving others.
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    # [metrics]: where `serve` exposes Prometheus /metrics (port None = off).
    metrics_host: str = DEFAULT_METRICS_HOST
    metrics_port: int | None = None
    # [revocation]: the plain-HTTP OCSP/CRL listener (revocation_http.py; port None = off, host
    # None = the EST port's address).
    revocation_host: str | None = None
    revocation_port: int | None = None
    # [upstream]: set when this server is a registration authority (issues nothing itself).
    upstream: UpstreamConfig | None = None
    # [ra] trusted: RA certificate fingerprints or CA files whose id-kp-cmcRA certificates may
    # forward requests to this server (issue 21).
    ra_trusted: tuple[str, ...] = ()

    @property
    def data_dir(self) -> Path:
        return self.path.parent

    def profile_for(self, label: str | None) -> Profile | None:
        """The profile of ``label`` (None = the unlabelled endpoints); None if not configured."""
        if label is None:
            return self.default_profile
        return self.labels.get(label)


# ---------------------------------------------------------------------------------------------
# reading


def _read_document(path: Path) -> dict[str, Any]:
    try:
        return read_toml(path, error=ConfigError)
    except FileNotFoundError:
        raise ConfigError(
            f"no configuration file at {path}",
            hint="create a data directory with `estkit server init DIR`",
        ) from None


def _config_file(path: str | os.PathLike[str]) -> Path:
    """Accept either the config file or the data directory holding it."""
    resolved = Path(path).expanduser().absolute()
    return resolved / CONFIG_FILE_NAME if resolved.is_dir() else resolved


def _table(doc: Mapping[str, Any], name: str, path: Path) -> Mapping[str, Any]:
    return sub_table(doc, name, str(path), error=ConfigError)


def _resolve(base: Path, value: object, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty path string, got {value!r}")
    candidate = Path(value).expanduser()
    # normpath: a path written relative to the data directory may climb out of it ("../m.pem").
    return candidate if candidate.is_absolute() else Path(os.path.normpath(base / candidate))


def _database_url(base: Path, value: object, path: Path) -> str:
    if value is None or value == "":
        return f"sqlite:///{base / 'estkit.db'}"
    if not isinstance(value, str):
        raise ConfigError(f"{path}: server.database must be a string, got {value!r}")
    if "://" in value:
        return value
    return f"sqlite:///{_resolve(base, value, 'server.database')}"


def _profile(table: object, label: str | None, path: Path) -> Profile:
    where = "[profile]" if label is None else f"[labels.{label}]"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{path}: {where} must be a table")
    try:
        return profile_from_mapping(table, label=label)
    except (ProfileError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {where}: {exc}") from None


def load_config(path: str | os.PathLike[str]) -> ServerConfig:
    """Read and validate ``estkit.toml`` (``path`` may also be the data directory)."""
    config_path = _config_file(path)
    return _parse_document(_read_document(config_path), config_path)


def _parse_document(doc: Mapping[str, Any], config_path: Path) -> ServerConfig:
    base = config_path.parent
    server = _table(doc, "server", config_path)

    host = server.get("host", DEFAULT_HOST)
    port = server.get("port", DEFAULT_PORT)
    if not isinstance(host, str) or not host:
        raise ConfigError(f"{config_path}: server.host must be a host name or address")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"{config_path}: server.port must be 0-65535, got {port!r}")

    tls_items = server.get("tls_certificates", [])
    if not isinstance(tls_items, list):
        raise ConfigError(f"{config_path}: server.tls_certificates must be a list of tables")
    tls = []
    for index, item in enumerate(tls_items):
        where = f"{config_path}: server.tls_certificates[{index}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where} must be a table with certificate and key")
        tls.append(
            CertificatePair(
                certificate=_resolve(base, item.get("certificate"), f"{where}.certificate"),
                key=_resolve(base, item.get("key"), f"{where}.key"),
            )
        )

    crl_url = server.get("crl_url") or None
    if crl_url is not None and (not isinstance(crl_url, str) or not crl_url.startswith("http")):
        raise ConfigError(f"{config_path}: server.crl_url must be an http(s) URL, got {crl_url!r}")
    public_url = _public_url(server.get("public_url"), f"{config_path}: server.public_url")
    realm = server.get("realm", DEFAULT_REALM)
    if not isinstance(realm, str) or not realm or '"' in realm:
        raise ConfigError(f"{config_path}: server.realm must be a non-empty string without quotes")

    dnssd = _table(doc, "dnssd", config_path)
    pri = dnssd.get("pri", DEFAULT_DNSSD_PRI)
    if isinstance(pri, bool) or not isinstance(pri, int) or pri < 0:
        raise ConfigError(f"{config_path}: dnssd.pri must be a non-negative integer")

    labels: dict[str, Profile] = {}
    label_public_urls: dict[str, str] = {}
    for label, table in _table(doc, "labels", config_path).items():
        try:
            validate_label(label)
        except ValueError as exc:
            raise ConfigError(f"{config_path}: [labels.{label}]: {exc}") from None
        if isinstance(table, Mapping) and "public_url" in table:
            where = f"{config_path}: [labels.{label}].public_url"
            label_public_urls[label] = str(_public_url(table["public_url"], where))
            table = {key: value for key, value in table.items() if key != "public_url"}
        labels[label] = _profile(table, label, config_path)

    roots = []
    root_items = doc.get("trusted_client_roots", [])
    if not isinstance(root_items, list):
        raise ConfigError(f"{config_path}: trusted_client_roots must be an array of tables")
    for index, item in enumerate(root_items):
        where = f"{config_path}: trusted_client_roots[{index}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where} must be a table")
        accept_expired = item.get("accept_expired", False)
        if not isinstance(accept_expired, bool):
            raise ConfigError(f"{where}.accept_expired must be true or false")
        crl = item.get("crl")
        roots.append(
            TrustedClientRoot(
                certificate=_resolve(base, item.get("certificate"), f"{where}.certificate"),
                crl=_resolve(base, crl, f"{where}.crl") if crl else None,
                accept_expired=accept_expired,
            )
        )

    users = {}
    for name, item in _table(doc, "users", config_path).items():
        if not isinstance(item, Mapping) or not all(
            isinstance(item.get(key), str) for key in ("basic", "digest_sha256", "digest_md5")
        ):
            raise ConfigError(
                f"{config_path}: [users.{name}] must have basic, digest_sha256 and digest_md5",
                hint="re-add the user with `estkit server add-user`",
            )
        users[name] = UserRecord(
            name=name,
            basic=item["basic"],
            digest_sha256=item["digest_sha256"],
            digest_md5=item["digest_md5"],
        )

    return ServerConfig(
        path=config_path,
        host=host,
        port=port,
        database_url=_database_url(base, server.get("database"), config_path),
        ca_directory=_resolve(base, server.get("ca_directory", "ca"), "server.ca_directory"),
        tls_certificates=tuple(tls),
        crl_url=crl_url,
        public_url=public_url,
        label_public_urls=label_public_urls,
        realm=realm,
        dnssd_pri=pri,
        default_profile=_profile(doc.get("profile", {}), None, config_path),
        labels=labels,
        trusted_client_roots=tuple(roots),
        users=users,
        limits=_limits(doc, config_path),
        upstream=_upstream(doc, config_path),
        ra_trusted=_ra_trusted(doc, config_path),
        **_metrics(doc, config_path),
        **_revocation(doc, config_path),
    )


def _public_url(value: object, where: str) -> str | None:
    if value is None or value == "":
        return None
    try:
        if not isinstance(value, str):
            raise ValueError(f"a URL is a string, not {value!r}")
        return check_public_url(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _listener(
    doc: Mapping[str, Any], path: Path, name: str, default_host: str | None
) -> tuple[str | None, int | None]:
    """``host`` and ``port`` of the ``[name]`` table of a listener besides the EST port."""
    table = _table(doc, name, path)
    host = table.get("host", default_host)
    port = table.get("port")
    if host is not None and (not isinstance(host, str) or not host):
        raise ConfigError(f"{path}: {name}.host must be a host name or address")
    if port is not None and (
        isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535
    ):
        raise ConfigError(f"{path}: {name}.port must be 0-65535, got {port!r}")
    return host, port


def _metrics(doc: Mapping[str, Any], path: Path) -> dict[str, Any]:
    host, port = _listener(doc, path, "metrics", DEFAULT_METRICS_HOST)
    return {"metrics_host": host, "metrics_port": port}


def _revocation(doc: Mapping[str, Any], path: Path) -> dict[str, Any]:
    host, port = _listener(doc, path, "revocation", None)
    if port is not None and _table(doc, "upstream", path):
        raise ConfigError(
            f"{path}: [revocation] port is set but this server is a registration authority "
            "([upstream]): the upstream CA answers OCSP and publishes the CRL",
            hint="remove the [revocation] table",
        )
    return {"revocation_host": host, "revocation_port": port}


def _upstream(doc: Mapping[str, Any], path: Path) -> UpstreamConfig | None:
    table = _table(doc, "upstream", path)
    if not table:
        return None
    base = path.parent
    url = table.get("url")
    if not isinstance(url, str) or not url.startswith("https://"):
        raise ConfigError(f"{path}: upstream.url must be an https:// URL, got {url!r}")
    label, user = table.get("label") or None, table.get("user") or None
    if label is not None:
        try:
            validate_label(label)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: upstream.label: {exc}") from None
    if user is not None and not isinstance(user, str):
        raise ConfigError(f"{path}: upstream.user must be a string")
    password = table.get("password_file")
    return UpstreamConfig(
        url=url,
        trust=_resolve(base, table.get("trust"), "upstream.trust"),
        certificate=_resolve(base, table.get("certificate"), "upstream.certificate"),
        key=_resolve(base, table.get("key"), "upstream.key"),
        label=label,
        user=user,
        password_file=_resolve(base, password, "upstream.password_file") if password else None,
    )


def _ra_trusted(doc: Mapping[str, Any], path: Path) -> tuple[str, ...]:
    items = _table(doc, "ra", path).get("trusted", [])
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise ConfigError(
            f"{path}: ra.trusted must be a list of RA certificate fingerprints or CA file paths"
        )
    return tuple(items)


def _limits(doc: Mapping[str, Any], path: Path) -> ConnectionLimits:
    try:
        return ConnectionLimits.from_mapping(_table(doc, "limits", path))
    except LimitsError as exc:
        raise ConfigError(f"{path}: [limits]: {exc}") from None


# ---------------------------------------------------------------------------------------------
# writing


def _relative(base: Path, path: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def config_to_document(config: ServerConfig) -> dict[str, Any]:
    """The TOML document for ``config`` (paths relative to the file where possible)."""
    base = config.data_dir
    database = config.database_url
    default_db = f"sqlite:///{base / 'estkit.db'}"
    server: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "database": "estkit.db" if database == default_db else database,
        "ca_directory": _relative(base, config.ca_directory),
        "realm": config.realm,
        "tls_certificates": [
            {"certificate": _relative(base, t.certificate), "key": _relative(base, t.key)}
            for t in config.tls_certificates
        ],
    }
    if config.crl_url:
        server["crl_url"] = config.crl_url
    if config.public_url:
        server["public_url"] = config.public_url
    doc: dict[str, Any] = {
        "server": server,
        "dnssd": {"pri": config.dnssd_pri},
        "profile": profile_to_mapping(config.default_profile, include_label=False),
        "labels": {
            name: {
                **profile_to_mapping(profile, include_label=False),
                **(
                    {"public_url": config.label_public_urls[name]}
                    if name in config.label_public_urls
                    else {}
                ),
            }
            for name, profile in config.labels.items()
        },
        "trusted_client_roots": [
            {
                "certificate": _relative(base, root.certificate),
                **({"crl": _relative(base, root.crl)} if root.crl else {}),
                "accept_expired": root.accept_expired,
            }
            for root in config.trusted_client_roots
        ],
        "users": {
            user.name: {
                "basic": user.basic,
                "digest_sha256": user.digest_sha256,
                "digest_md5": user.digest_md5,
            }
            for user in config.users.values()
        },
    }
    if config.upstream is not None:
        upstream = config.upstream
        doc["upstream"] = {
            "url": upstream.url,
            "trust": _relative(base, upstream.trust),
            "certificate": _relative(base, upstream.certificate),
            "key": _relative(base, upstream.key),
            **({"label": upstream.label} if upstream.label else {}),
            **({"user": upstream.user} if upstream.user else {}),
            **(
                {"password_file": _relative(base, upstream.password_file)}
                if upstream.password_file
                else {}
            ),
        }
    if config.ra_trusted:
        doc["ra"] = {"trusted": list(config.ra_trusted)}
    # Only limits an operator changed are written, so the defaults can improve with upgrades.
    changed_limits = config.limits.to_mapping(only_changed=True)
    if changed_limits:
        doc["limits"] = changed_limits
    if config.metrics_port is not None:
        doc["metrics"] = {"host": config.metrics_host, "port": config.metrics_port}
    if config.revocation_port is not None:
        doc["revocation"] = {
            "port": config.revocation_port,
            **({"host": config.revocation_host} if config.revocation_host else {}),
        }
    return doc


def _write_document(path: Path, doc: Mapping[str, Any]) -> None:
    # 0600: the file holds Digest HA1 values, which are password-equivalent for the realm.
    write_private_file_atomic(path, (_HEADER + tomli_w.dumps(doc)).encode("utf-8"))


def save_config(config: ServerConfig, path: str | os.PathLike[str] | None = None) -> None:
    """Write ``config`` atomically to ``path`` (default: ``config.path``)."""
    _write_document(Path(path) if path else config.path, config_to_document(config))


def _edit(config_path: str | os.PathLike[str], change: Any) -> ServerConfig:
    """Apply ``change(doc)`` to the raw document, validate the result, then write it."""
    path = _config_file(config_path)
    doc = _read_document(path)
    change(doc)
    config = _parse_document(doc, path)  # never write a file the server would refuse
    _write_document(path, doc)
    return config


def add_label(config_path: str | os.PathLike[str], label: str, **profile_fields: Any) -> Profile:
    """Add (or replace) the EST label ``label`` with the given :class:`Profile` fields."""
    validate_label(label)
    # Validate before touching the file, so a bad field never leaves a broken config behind.
    profile = profile_from_mapping(profile_fields, label=label)

    def change(doc: dict[str, Any]) -> None:
        doc.setdefault("labels", {})[label] = profile_to_mapping(profile, include_label=False)

    _edit(config_path, change)
    return profile


def remove_label(config_path: str | os.PathLike[str], label: str) -> None:
    """Remove the EST label ``label``; KeyError when it is not configured."""

    def change(doc: dict[str, Any]) -> None:
        labels = doc.get("labels", {})
        if label not in labels:
            raise KeyError(f"no label {label!r} in the configuration")
        del labels[label]

    _edit(config_path, change)


def hash_basic_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64) for HTTP Basic checks."""
    salt = salt if salt is not None else secrets.token_bytes(SCRYPT_SALT_BYTES)
    digest = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=_SCRYPT_MAXMEM,
        dklen=SCRYPT_DKLEN,
    )
    encode = base64.b64encode
    return (
        f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encode(salt).decode()}${encode(digest).decode()}"
    )


def verify_basic_password(stored: str, password: str) -> bool:
    """Constant-time check of ``password`` against a :func:`hash_basic_password` value."""
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(digest_b64, validate=True)
        digest = hashlib.scrypt(
            password.encode("utf-8"),
            salt=salt,
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_SCRYPT_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


def digest_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """RFC 7616 §3.4.2 HA1 = H(username ":" realm ":" password), lower-case hex."""
    data = f"{username}:{realm}:{password}".encode()
    if algorithm == "SHA-256":
        return hashlib.sha256(data).hexdigest()
    if algorithm == "MD5":
        return hashlib.md5(data, usedforsecurity=False).hexdigest()
    raise ValueError(f"unsupported Digest algorithm {algorithm!r}; use SHA-256 or MD5")


def add_user(config_path: str | os.PathLike[str], username: str, password: str) -> None:
    """Add (or replace) an HTTP user for rfc7030-mode labels, storing hashes only."""
    if not username or ":" in username or '"' in username:
        raise ValueError("a user name must be non-empty and contain no ':' or '\"'")
    if not password:
        raise ValueError("the password must not be empty")
    realm = load_config(config_path).realm

    def change(doc: dict[str, Any]) -> None:
        doc.setdefault("users", {})[username] = {
            "basic": hash_basic_password(password),
            "digest_sha256": digest_ha1("SHA-256", username, realm, password),
            "digest_md5": digest_ha1("MD5", username, realm, password),
        }

    _edit(config_path, change)


# A manufacturer CA file holds a root and perhaps a few intermediates (a few KB); a CRL of a large
# manufacturer may reach megabytes. Reading is bounded so a wrong path (a log, a disk image) fails
# fast with a message instead of being slurped into memory.
MAX_TRUST_FILE_BYTES = 1024 * 1024
MAX_CRL_FILE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class TrustedClientRootInfo:
    """One ``trusted_client_roots`` entry with what an operator needs to recognise it."""

    root: TrustedClientRoot
    certificates: tuple[x509.Certificate, ...]
    error: str | None = None  # the file could not be read: the server would refuse to start

    @property
    def fingerprints(self) -> list[str]:
        return [sha256_fingerprint(cert) for cert in self.certificates]


def _read_bounded(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise ConfigError(f"no {what} file at {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory, not a {what} file") from None
    if len(data) > limit:
        raise ConfigError(f"{path} is larger than {limit} bytes: not a {what} file")
    return data


def read_manufacturer_ca(pem_path: str | os.PathLike[str]) -> list[x509.Certificate]:
    """The CA certificate(s) in ``pem_path``, refusing anything that cannot issue device
    certificates: a file without a certificate, or an end-entity (CA:FALSE) certificate."""
    path = Path(pem_path)
    data = _read_bounded(path, MAX_TRUST_FILE_BYTES, "certificate")
    try:
        certificates = load_pem_certificates(data)
    except EncodingError:
        try:
            certificates = [x509.load_der_x509_certificate(data)]
        except ValueError:
            raise ConfigError(
                f"{path} holds no certificate (neither PEM '-----BEGIN CERTIFICATE-----' "
                "blocks nor DER)",
                "give the manufacturer's CA certificate, as the manufacturer publishes it",
            ) from None
    for cert in certificates:
        if not is_ca_certificate(cert):
            raise ConfigError(
                f"{path}: {cert.subject.rfc4514_string()} is not a CA certificate "
                "(basicConstraints CA:TRUE is missing), so it cannot have issued device "
                "certificates",
                "give the certificate of the CA that issued the devices' certificates, not a "
                "device (leaf) certificate",
            )
    return certificates


def check_manufacturer_crl(
    crl_path: str | os.PathLike[str], certificates: list[x509.Certificate]
) -> x509.CertificateRevocationList:
    """The CRL in ``crl_path``, which one of ``certificates`` must have signed."""
    path = Path(crl_path)
    data = _read_bounded(path, MAX_CRL_FILE_BYTES, "CRL")
    try:
        crl = (
            x509.load_pem_x509_crl(data)
            if data.lstrip().startswith(b"-----BEGIN")
            else x509.load_der_x509_crl(data)
        )
    except ValueError:
        raise ConfigError(f"{path} is not a CRL (PEM or DER)") from None
    for cert in certificates:
        if cert.subject == crl.issuer and crl.is_signature_valid(issuer_public_key(cert)):
            return crl
    raise ConfigError(
        f"{path}: the CRL was issued by {crl.issuer.rfc4514_string()}, which is not (or did "
        "not sign with the key of) any certificate in the trusted CA file",
        "give the CRL this manufacturer CA publishes",
    )


def _config_path_value(base: Path, path: Path) -> str:
    """``path`` as written in estkit.toml: relative to the data directory, so the directory can
    be moved or copied with the files it refers to."""
    return os.path.relpath(path.absolute(), base.absolute())


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def add_trusted_client_root(
    config_path: str | os.PathLike[str],
    pem_path: str | os.PathLike[str],
    crl_path: str | os.PathLike[str] | None = None,
    *,
    accept_expired: bool | None = None,
) -> TrustedClientRoot:
    """Trust device certificates issued under the CA certificate(s) in ``pem_path`` (S3).

    Refuses files without a certificate and non-CA certificates. Re-adding a trusted file
    updates its entry: the CRL and ``accept_expired`` stay as they were unless given.
    """
    pem = Path(pem_path).expanduser()
    certificates = read_manufacturer_ca(pem)
    crl = Path(crl_path).expanduser() if crl_path else None
    if crl is not None:
        check_manufacturer_crl(crl, certificates)
    base = _config_file(config_path).parent

    def change(doc: dict[str, Any]) -> None:
        kept = []
        previous: Mapping[str, Any] = {}
        for item in doc.setdefault("trusted_client_roots", []):
            where = "trusted_client_roots.certificate"
            if isinstance(item, Mapping) and _same_file(
                _resolve(base, item.get("certificate"), where), pem
            ):
                previous = item
            else:
                kept.append(item)
        entry: dict[str, Any] = {
            "certificate": _config_path_value(base, pem),
            "accept_expired": bool(
                previous.get("accept_expired", False) if accept_expired is None else accept_expired
            ),
        }
        if crl is not None:
            entry["crl"] = _config_path_value(base, crl)
        elif previous.get("crl"):
            entry["crl"] = previous["crl"]
        kept.append(entry)
        doc["trusted_client_roots"] = kept

    return _edit(config_path, change).trusted_client_roots[-1]


def remove_trusted_client_root(
    config_path: str | os.PathLike[str], which: str
) -> TrustedClientRoot:
    """Stop trusting the manufacturer CA given by its file path or a certificate fingerprint
    (``sha256:HEX`` or colon hex). KeyError when no entry matches."""
    base = _config_file(config_path).parent
    wanted_fingerprint: bytes | None
    try:
        wanted_fingerprint = parse_fingerprint(which)
    except ValueError:
        wanted_fingerprint = None
    removed: list[TrustedClientRoot] = []

    def matches(root: TrustedClientRoot) -> bool:
        if _same_file(root.certificate, Path(which).expanduser()) or (
            not Path(which).is_absolute() and _same_file(root.certificate, base / which)
        ):
            return True
        if wanted_fingerprint is None:
            return False
        try:
            certificates = read_manufacturer_ca(root.certificate)
        except ConfigError:
            return False
        return any(cert.fingerprint(hashes.SHA256()) == wanted_fingerprint for cert in certificates)

    def change(doc: dict[str, Any]) -> None:
        config = _parse_document(doc, _config_file(config_path))
        kept = []
        for item, root in zip(
            doc.get("trusted_client_roots", []), config.trusted_client_roots, strict=True
        ):
            if matches(root):
                removed.append(root)
            else:
                kept.append(item)
        if not removed:
            raise KeyError(
                f"no trusted manufacturer CA matches {which!r}; the configuration's "
                "trusted_client_roots lists them"
            )
        doc["trusted_client_roots"] = kept

    _edit(config_path, change)
    return removed[0]


def describe_trusted_client_roots(
    config_path: str | os.PathLike[str],
) -> list[TrustedClientRootInfo]:
    """Every trusted manufacturer CA with its certificates (or why they cannot be read)."""
    infos = []
    for root in load_config(config_path).trusted_client_roots:
        try:
            infos.append(TrustedClientRootInfo(root, tuple(read_manufacturer_ca(root.certificate))))
        except ConfigError as exc:
            infos.append(TrustedClientRootInfo(root, (), str(exc)))
    return infos


def set_limits(config_path: str | os.PathLike[str], **values: float) -> ConnectionLimits:
    """Set limits in the ``[limits]`` table: timeouts in seconds (``header_timeout``,
    ``body_timeout``, ``idle_timeout``, ``tls_handshake_timeout``), ``body_min_rate`` in bytes per
    second, ``max_connections``, and the queue caps (``queue_per_requester``,
    ``queue_per_address``, ``queue_total``, ``queue_expiry_days``) and the per-address failure
    throttle (``failures_per_second``, ``failure_backoff`` in seconds)."""
    try:
        ConnectionLimits.from_mapping(values)  # validate before touching the file
    except LimitsError as exc:
        raise ConfigError(str(exc)) from None

    def change(doc: dict[str, Any]) -> None:
        doc.setdefault("limits", {}).update(values)

    return _edit(config_path, change).limits


__all__ = [
    "CONFIG_FILE_NAME",
    "CertificatePair",
    "ConfigError",
    "ServerConfig",
    "TrustedClientRoot",
    "TrustedClientRootInfo",
    "UserRecord",
    "add_label",
    "add_trusted_client_root",
    "add_user",
    "check_manufacturer_crl",
    "describe_trusted_client_roots",
    "digest_ha1",
    "hash_basic_password",
    "load_config",
    "read_manufacturer_ca",
    "remove_label",
    "remove_trusted_client_root",
    "save_config",
    "set_limits",
    "verify_basic_password",
]
