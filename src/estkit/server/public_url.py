"""The server's public URL: the base of the OCSP and CRL URLs every certificate carries.

Order: ``[labels.NAME].public_url`` for certificates issued on that label, else
``[server].public_url``, else, when the plain-HTTP revocation listener is on
(``[revocation] port``, ``serve --revocation-port``),
``http://<first DNS name of the server's TLS certificate>:<its port>``, else ``https://<that
name>:<port the server listens on>`` (the name clients already use to reach it, BCP-003-01 T4).
Why http when the listener is on: relying parties fetch OCSP and CRLs over http (RFC 5019 §5,
RFC 6960 App. A) and many refuse an https revocation URL (see revocation_http.py). Behind a proxy
or NAT the operator sets ``public_url``: the default can only know what this host sees.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

from cryptography import x509

from estkit.ca.pointers import (
    crl_url,
    default_public_url,
    first_dns_name,
    ocsp_url,
    revocation_pointer_extensions,
)
from estkit.server.config import ServerConfig

# How long the host name read from the server's TLS certificate is reused before its file is
# looked at again. Stat-ing the certificate files on every enrollment cost about 3 % of a P-256
# enrollment's server CPU under load (py-spy, issue 16); a certificate replaced with another name
# is still seen within this time, and the server renews its own with the same names.
TLS_HOST_RECHECK_SECONDS = 1.0


@functools.lru_cache(maxsize=8)
def _certificate_host(path: Path, _stamp: tuple[int, int]) -> str | None:
    try:
        certificate = x509.load_pem_x509_certificates(path.read_bytes())[0]
    except (OSError, ValueError, IndexError):
        return None
    return first_dns_name(certificate)


def _read_tls_host(certificates: tuple[Path, ...], fallback: str) -> str:
    for certificate in certificates:
        try:
            info = os.stat(certificate)
        except OSError:
            continue
        host = _certificate_host(certificate, (info.st_mtime_ns, info.st_size))
        if host:
            return host
    return fallback


# (certificate paths, configured host) -> (monotonic time read, host). Bounded: a server has one
# configuration at a time, a few over its life (reloads).
_tls_hosts: dict[tuple[tuple[Path, ...], str], tuple[float, str]] = {}
_TLS_HOSTS_KEPT = 8


def _tls_host(config: ServerConfig) -> str:
    key = (tuple(pair.certificate for pair in config.tls_certificates), config.host)
    now = time.monotonic()
    cached = _tls_hosts.get(key)
    if cached is not None and now - cached[0] < TLS_HOST_RECHECK_SECONDS:
        return cached[1]
    host = _read_tls_host(*key)
    if len(_tls_hosts) >= _TLS_HOSTS_KEPT:
        _tls_hosts.clear()
    _tls_hosts[key] = (now, host)
    return host


def public_url_for(
    config: ServerConfig,
    label: str | None,
    port: int | None = None,
    revocation_port: int | None = None,
) -> str:
    """The public URL for certificates issued on ``label`` (see the module docstring);
    ``revocation_port``: where the plain-HTTP revocation listener listens, None when it is off."""
    if label is not None and label in config.label_public_urls:
        return config.label_public_urls[label]
    if config.public_url:
        return config.public_url
    if revocation_port is not None:
        return default_public_url(_tls_host(config), revocation_port, scheme="http")
    return default_public_url(_tls_host(config), port or config.port)


def pointer_extensions_for(
    config: ServerConfig,
    label: str | None,
    generation: str,
    port: int | None = None,
    revocation_port: int | None = None,
) -> list[x509.Extension[x509.ExtensionType]]:
    """AIA (OCSP) and CRL DP extensions for a certificate issued on ``label`` by CA generation
    ``generation``. ``server.crl_url``, when configured, still names the CRL (as before)."""
    base = public_url_for(config, label, port, revocation_port)
    return revocation_pointer_extensions(
        ocsp_url(base), config.crl_url or crl_url(base, generation)
    )


__all__ = ["pointer_extensions_for", "public_url_for"]
