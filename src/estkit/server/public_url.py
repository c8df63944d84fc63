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


@functools.lru_cache(maxsize=8)
def _certificate_host(path: Path, _stamp: tuple[int, int]) -> str | None:
    try:
        certificate = x509.load_pem_x509_certificates(path.read_bytes())[0]
    except (OSError, ValueError, IndexError):
        return None
    return first_dns_name(certificate)


def _tls_host(config: ServerConfig) -> str:
    for pair in config.tls_certificates:
        try:
            info = os.stat(pair.certificate)
        except OSError:
            continue
        host = _certificate_host(pair.certificate, (info.st_mtime_ns, info.st_size))
        if host:
            return host
    return config.host


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
