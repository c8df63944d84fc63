"""Where a relying party asks about revocation: the AIA (OCSP) and CRL distribution point
extensions every certificate of ours carries (RFC 5280 §4.2.2.1, §4.2.1.13).

Why a module of its own: the leaf issuer, the server's TLS certificates and the conformance
checks all need the same URLs built the same way from one configured public URL; and the leaf
signing code stays a consumer (``sign_leaf(..., extensions=...)``), not the place that decides.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID

OCSP_SUFFIX = "/ocsp"
CRL_SUFFIX = "/crl"
# URLs go into every certificate: a bound keeps a typo (or a pasted document) out of them, and
# 200 characters is far beyond any real https://host:port/prefix.
MAX_PUBLIC_URL_CHARS = 200


def check_public_url(url: str) -> str:
    """``url`` without a trailing slash if it is an absolute http(s) URL with a host and no
    query or fragment; ``ValueError`` saying what is wrong otherwise."""
    if not isinstance(url, str) or not url:
        raise ValueError(f"a public URL must be a non-empty string, got {url!r}")
    if len(url) > MAX_PUBLIC_URL_CHARS:
        raise ValueError(f"public URL of {len(url)} characters; at most {MAX_PUBLIC_URL_CHARS}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"public URL {url!r} must look like https://host[:port][/prefix]")
    if parts.query or parts.fragment or any(ch.isspace() for ch in url):
        raise ValueError(f"public URL {url!r} must have no query, fragment or spaces")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise ValueError(f"public URL {url!r}: {exc}") from None
    return url.rstrip("/")


def default_public_url(hostname: str, port: int, scheme: str = "https") -> str:
    """``https://<hostname>:<port>`` (IPv6 literals bracketed); ``scheme="http"`` for the
    plain-HTTP revocation listener."""
    host = f"[{hostname}]" if ":" in hostname and not hostname.startswith("[") else hostname
    return f"{scheme}://{host}:{port}"


def ocsp_url(public_url: str) -> str:
    return public_url.rstrip("/") + OCSP_SUFFIX


def crl_url(public_url: str, generation: str | None = None) -> str:
    """``/crl/<generation>``: the CRL of the CA generation that issues the certificate, which
    stays right after a rollover (``/crl`` alone follows the current generation)."""
    base = public_url.rstrip("/") + CRL_SUFFIX
    return f"{base}/{generation}" if generation else base


def revocation_pointer_extensions(
    ocsp_url: str | None, crl_url: str | None
) -> list[x509.Extension[x509.ExtensionType]]:
    """AIA with id-ad-ocsp → ``ocsp_url`` and cRLDistributionPoints → ``crl_url`` (both
    non-critical, RFC 5280 §4.2.2.1 and §4.2.1.13); either may be None to leave it out."""
    extensions: list[x509.Extension[x509.ExtensionType]] = []
    if ocsp_url:
        aia = x509.AuthorityInformationAccess(
            [
                x509.AccessDescription(
                    AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
                )
            ]
        )
        extensions.append(x509.Extension(aia.oid, False, aia))
    if crl_url:
        cdp = x509.CRLDistributionPoints(
            [
                x509.DistributionPoint(
                    full_name=[x509.UniformResourceIdentifier(crl_url)],
                    relative_name=None,
                    reasons=None,
                    crl_issuer=None,
                )
            ]
        )
        extensions.append(x509.Extension(cdp.oid, False, cdp))
    return extensions


def first_dns_name(certificate: x509.Certificate) -> str | None:
    """The first DNS name of a certificate's SAN (what clients use to reach a server)."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    names = san.get_values_for_type(x509.DNSName)
    return names[0] if names else None


__all__ = [
    "MAX_PUBLIC_URL_CHARS",
    "check_public_url",
    "crl_url",
    "default_public_url",
    "first_dns_name",
    "ocsp_url",
    "revocation_pointer_extensions",
]
