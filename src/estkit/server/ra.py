"""Registration authorities, both sides (issue 21).

Upstream side: which TLS client certificates may forward requests for devices
(:func:`ra_identity`), and `estkit server ra-cert` (:func:`issue_ra_certificate`).

RA side: `estkit server init DIR --upstream …` (:func:`init_ra_data_dir`) makes a data directory
that holds no CA: the RA certificate and key, the upstream's trust anchor and CA certificates,
a TLS server certificate obtained from the upstream with the RA certificate (or given by the
operator), the store, and the usual demo manufacturer.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509

from estkit.ca.authority import CertificateAuthority
from estkit.ca.manufacturer import create_manufacturer_ca, issue_device_certificate
from estkit.ca.profiles import Profile
from estkit.ca.store import open_store
from estkit.client import ClientCredentials, EstClient, EstError, RetryPolicy
from estkit.client.issued import order_chain
from estkit.fileio import replace_credential_pair, write_file_atomic, write_private_file_atomic
from estkit.protocol.certs import (
    certificates_to_pem,
    is_self_signed,
    is_signed_by,
    load_pem_certificates,
    sha256_fingerprint,
)
from estkit.protocol.csr import build_csr, describe_csr
from estkit.protocol.errors import EncodingError
from estkit.protocol.keys import generate_private_key, private_key_to_pem
from estkit.server.config import (
    CONFIG_FILE_NAME,
    CertificatePair,
    ServerConfig,
    TrustedClientRoot,
    UpstreamConfig,
    _edit,
    load_config,
    save_config,
)
from estkit.server.datadir import (
    DATA_DIR_MODE,
    DEFAULT_HOSTNAMES,
    DEMO_DEVICE_NAME,
    DEMO_DEVICE_SERIAL,
    DataDirExistsError,
    InitResult,
    secure_data_dir,
)
from estkit.server.upstream import (
    ID_KP_CMC_RA,
    UPSTREAM_CACERTS_FILE,
    UPSTREAM_DIR_NAME,
    UPSTREAM_TIMEOUT_SECONDS,
    UpstreamCa,
    UpstreamError,
    check_ra_credentials,
)

logger = logging.getLogger("estkit.server")

# An RA certificate lives as long as an operator certificate would: renewed by hand, yearly.
RA_CERTIFICATE_VALIDITY_SECONDS = 397 * 86400
# A [ra] trusted CA file larger than this is not a CA bundle (wrong file); read no more.
MAX_RA_TRUST_FILE_BYTES = 1024 * 1024
_FINGERPRINT = re.compile(r"^(sha256:)?([0-9a-f]{2}:?){31}[0-9a-f]{2}$", re.IGNORECASE)


def _normal_fingerprint(text: str) -> str | None:
    if not _FINGERPRINT.match(text.strip()):
        return None
    digits = text.strip().lower().removeprefix("sha256:").replace(":", "")
    return "sha256:" + digits


def _trusted_ra_issuers(config: ServerConfig, entry: str) -> list[x509.Certificate]:
    path = Path(entry).expanduser()
    if not path.is_absolute():
        path = config.data_dir / path
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_RA_TRUST_FILE_BYTES + 1)
        if len(data) > MAX_RA_TRUST_FILE_BYTES:
            raise ValueError(f"over {MAX_RA_TRUST_FILE_BYTES} bytes")
        return load_pem_certificates(data)
    except (OSError, ValueError, EncodingError) as exc:
        logger.error("[ra] trusted entry %s cannot be read: %s", entry, exc)
        return []


def ra_trust_pem(config: ServerConfig) -> str:
    """PEM of the CA files in ``[ra] trusted``, for TLS stacks that verify client certificates
    in the handshake (they must let a foreign RA's certificate through to :func:`ra_identity`)."""
    files = [entry for entry in config.ra_trusted if _normal_fingerprint(entry) is None]
    return "".join(
        certificates_to_pem(_trusted_ra_issuers(config, entry)).decode() for entry in files
    )


def has_ra_eku(certificate: x509.Certificate) -> bool:
    try:
        ekus = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ID_KP_CMC_RA in ekus


def ra_identity(
    config: ServerConfig, certificate: x509.Certificate | None, now: dt.datetime
) -> str | None:
    """``"ra:<fingerprint>"`` when ``certificate`` may forward requests for devices: it carries
    id-kp-cmcRA, is valid now, and ``[ra] trusted`` lists its fingerprint or a CA that signed
    it. None otherwise (the request is then judged as any other client's).

    Revocation of an RA certificate issued by this CA is checked by the caller (client trust);
    for one from another CA, removing it from ``[ra] trusted`` is the revocation.
    """
    if certificate is None or not config.ra_trusted or not has_ra_eku(certificate):
        return None
    if not certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc:
        return None
    fingerprint = sha256_fingerprint(certificate)
    for entry in config.ra_trusted:
        wanted = _normal_fingerprint(entry)
        if wanted is not None:
            if wanted == fingerprint:
                return f"ra:{fingerprint}"
            continue
        for issuer in _trusted_ra_issuers(config, entry):
            if is_signed_by(certificate, issuer):
                return f"ra:{fingerprint}"
    return None


def issue_ra_certificate(
    data_dir: Path,
    common_name: str,
    out_cert: Path,
    out_key: Path,
    *,
    validity_seconds: int = RA_CERTIFICATE_VALIDITY_SECONDS,
    trust: bool = True,
) -> x509.Certificate:
    """Issue an RA certificate (clientAuth + id-kp-cmcRA) from this server's CA, record it in
    the store (so it can be revoked) and, with ``trust``, add its fingerprint to ``[ra] trusted``.
    """
    config = load_config(Path(data_dir) / CONFIG_FILE_NAME)
    if config.upstream is not None:
        raise ValueError("this server is itself a registration authority and has no CA")
    authority = CertificateAuthority.load(config.ca_directory)
    key = generate_private_key("p256")
    csr = build_csr(key, common_name=common_name)
    profile = Profile(
        auth_mode="rfc7030",
        ekus=("clientAuth", ID_KP_CMC_RA.dotted_string),
        validity_seconds=validity_seconds,
        bind_names_to_client_certificate=False,
    )
    certificate = authority.issue(describe_csr(csr), profile)
    chain = [c for c in authority.chain if c.subject != authority.root_certificate.subject]
    replace_credential_pair(
        Path(out_cert),
        certificates_to_pem([certificate, *chain]),
        Path(out_key),
        private_key_to_pem(key),
    )
    with open_store(config.database_url) as store:
        store.record_issued(certificate, operation="ra-cert", label="", requester="operator")
    if trust:
        fingerprint = sha256_fingerprint(certificate)

        def change(doc: dict[str, Any]) -> None:
            table = doc.setdefault("ra", {})
            trusted = list(table.get("trusted", []))
            if fingerprint not in trusted:
                trusted.append(fingerprint)
            table["trusted"] = trusted

        _edit(config.path, change)
    return certificate


# ------------------------------------------------------------------------------------------------
# the RA's data directory


def _obtain_tls_certificate(
    upstream: UpstreamConfig,
    credentials: ClientCredentials,
    hostnames: Sequence[str],
    cacerts: list[x509.Certificate],
) -> tuple[bytes, bytes]:
    """A TLS server certificate for the RA, enrolled at the upstream with the RA certificate;
    the chain sent in the handshake is completed from the upstream's CA certificates (devices
    may hold only the root)."""
    key = generate_private_key("p256")
    csr = build_csr(key, common_name=hostnames[0], dns_names=list(hostnames))
    with EstClient(
        upstream.url,
        label=upstream.label,
        trust=[upstream.trust],
        credentials=credentials,
        timeout=UPSTREAM_TIMEOUT_SECONDS,
        retry=RetryPolicy(max_attempts=1),
    ) as client:
        result = client.simpleenroll(csr, pop=False)
    chain, _rest = order_chain(result.certificate, cacerts)
    served = [result.certificate, *(c for c in chain if not is_self_signed(c))]
    return certificates_to_pem(served), private_key_to_pem(key)


def init_ra_data_dir(
    directory: Path,
    *,
    upstream_url: str,
    upstream_trust: Path,
    ra_certificate: Path,
    ra_key: Path,
    upstream_label: str | None = None,
    upstream_user: str | None = None,
    upstream_password: str | None = None,
    hostnames: Sequence[str] = DEFAULT_HOSTNAMES,
    tls_certificate: Path | None = None,
    tls_key: Path | None = None,
    db_url: str | None = None,
    force: bool = False,
) -> InitResult:
    """Create a registration-authority data directory; talks to the upstream (verified TLS,
    RA certificate) for its CA certificates and, unless given, the RA's TLS certificate.

    Raises :class:`UpstreamError` (a ``ValueError``) with the reason when the RA credentials or
    the upstream cannot be used; nothing is written then except the copied credentials.
    """
    data_dir = Path(directory).expanduser().absolute()
    if (data_dir / CONFIG_FILE_NAME).exists() and not force:
        raise DataDirExistsError(f"{data_dir} already holds an estkit server")
    if (tls_certificate is None) != (tls_key is None):
        raise ValueError("a TLS certificate needs its key (give both or neither)")
    if upstream_user is not None and upstream_password is None:
        raise ValueError("an upstream user needs a password")
    data_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
    secure_data_dir(data_dir)
    updir = data_dir / UPSTREAM_DIR_NAME
    updir.mkdir(mode=DATA_DIR_MODE, exist_ok=True)
    # Copy what the RA needs so the directory stands alone (and the key is 0600 here).
    try:
        trust_pem = Path(upstream_trust).read_bytes()
        load_pem_certificates(trust_pem)
        cert_pem, key_pem = Path(ra_certificate).read_bytes(), Path(ra_key).read_bytes()
    except (OSError, EncodingError, ValueError) as exc:
        raise UpstreamError(f"the upstream trust or RA credentials cannot be read: {exc}") from None
    write_file_atomic(updir / "trust.pem", trust_pem)
    replace_credential_pair(updir / "ra.pem", cert_pem, updir / "ra.key", key_pem)
    password_file = None
    if upstream_user is not None and upstream_password is not None:
        password_file = updir / "password"
        write_private_file_atomic(password_file, upstream_password.encode("utf-8"))
    upstream = UpstreamConfig(
        url=upstream_url.rstrip("/"),
        trust=updir / "trust.pem",
        certificate=updir / "ra.pem",
        key=updir / "ra.key",
        label=upstream_label,
        user=upstream_user,
        password_file=password_file,
    )
    credentials = check_ra_credentials(upstream)
    database_url = db_url or f"sqlite:///{data_dir / 'estkit.db'}"
    open_store(database_url).close()
    try:
        with EstClient(
            upstream.url,
            label=upstream_label,
            trust=[upstream.trust],
            credentials=credentials,
            timeout=UPSTREAM_TIMEOUT_SECONDS,
        ) as client:
            cacerts = client.cacerts().certificates
        write_file_atomic(updir / UPSTREAM_CACERTS_FILE, certificates_to_pem(cacerts))
        tls_dir = data_dir / "tls"
        pair = CertificatePair(tls_dir / "server-ec.pem", tls_dir / "server-ec.key")
        if tls_certificate is not None and tls_key is not None:
            chain_pem, tls_key_pem = tls_certificate.read_bytes(), tls_key.read_bytes()
        else:
            names = [n.strip() for n in hostnames if n.strip()] or list(DEFAULT_HOSTNAMES)
            chain_pem, tls_key_pem = _obtain_tls_certificate(upstream, credentials, names, cacerts)
    except EstError as exc:
        raise UpstreamError(
            f"the upstream {upstream.url} did not serve the RA: {exc}",
            hint="check the upstream URL, its trust anchor, and that it trusts the RA "
            "certificate ([ra] trusted there)",
        ) from None
    except OSError as exc:
        raise UpstreamError(f"the TLS certificate or key cannot be read: {exc}") from None
    replace_credential_pair(pair.certificate, chain_pem, pair.key, tls_key_pem)

    manufacturer_dir = data_dir / "manufacturer"
    if force:
        shutil.rmtree(manufacturer_dir, ignore_errors=True)
    manufacturer = create_manufacturer_ca(manufacturer_dir, key_type="p256")
    device = issue_device_certificate(
        manufacturer, device_serial=DEMO_DEVICE_SERIAL, common_name=DEMO_DEVICE_NAME
    )
    device.write(manufacturer_dir / "device.pem", manufacturer_dir / "device.key")

    config_path = data_dir / CONFIG_FILE_NAME
    config = ServerConfig(
        path=config_path,
        database_url=database_url,
        ca_directory=updir,
        tls_certificates=(pair,),
        default_profile=Profile(),
        trusted_client_roots=(TrustedClientRoot(certificate=manufacturer.certificate_path),),
        upstream=upstream,
    )
    save_config(config, config_path)
    return InitResult(
        data_dir=data_dir,
        config=config_path,
        ca_certificates=updir / UPSTREAM_CACERTS_FILE,
        root_ca=updir / UPSTREAM_CACERTS_FILE,
        manufacturer_ca=manufacturer.certificate_path,
        manufacturer_ca_key=manufacturer.key_path,
        device_certificate=manufacturer_dir / "device.pem",
        device_key=manufacturer_dir / "device.key",
        server_certificates=[pair.certificate],
        server_keys=[pair.key],
        database_url=database_url,
        ca_fingerprint=sha256_fingerprint(UpstreamCa(updir, cacerts).root_certificate),
    )


__all__ = [
    "RA_CERTIFICATE_VALIDITY_SECONDS",
    "has_ra_eku",
    "init_ra_data_dir",
    "issue_ra_certificate",
    "ra_identity",
    "ra_trust_pem",
]
