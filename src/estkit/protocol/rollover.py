"""Root CA key rollover as seen in ``/cacerts`` (RFC 4210 §4.4, RFC 7030 §4.1.3).

During a rollover a server publishes up to four root-related certificates:
OldWithOld and NewWithNew (self-signed roots), OldWithNew (the old root's public key certified by
the new root key) and NewWithOld (the new public key certified by the old key). Clients keep
trusting the old root and learn the new one through NewWithOld.

Why classify by keys and signatures rather than by names: both roots usually share a subject
name, so only "whose key is inside" and "whose key signed it" tell the four apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography import x509

from .certs import is_self_signed, sha256_fingerprint, signed_with_key
from .keys import public_keys_equal


def _label(cert: x509.Certificate) -> str:
    return f"{cert.subject.rfc4514_string() or '(empty subject)'} [{sha256_fingerprint(cert)[:23]}]"


@dataclass
class CaCertificateSet:
    """The CA certificates of a ``/cacerts`` reply, sorted into their roles."""

    roots: list[x509.Certificate] = field(default_factory=list)
    current_root: x509.Certificate | None = None
    old_with_old: x509.Certificate | None = None
    new_with_new: x509.Certificate | None = None
    old_with_new: x509.Certificate | None = None
    new_with_old: x509.Certificate | None = None
    intermediates: list[x509.Certificate] = field(default_factory=list)

    @property
    def in_rollover(self) -> bool:
        """True when both an old and a new root are published."""
        return self.old_with_old is not None and self.new_with_new is not None

    def describe(self) -> list[str]:
        """One line per role, for CLI output and conformance reports."""
        lines = []
        for title, cert in (
            ("current root (NewWithNew)" if self.in_rollover else "root", self.current_root),
            ("OldWithOld", self.old_with_old if self.in_rollover else None),
            ("OldWithNew", self.old_with_new),
            ("NewWithOld", self.new_with_old),
        ):
            if cert is not None:
                lines.append(f"{title}: {_label(cert)}")
        for root in self.roots:
            if root is not self.current_root and root is not self.old_with_old:
                lines.append(f"other root: {_label(root)}")
        for cert in self.intermediates:
            lines.append(f"intermediate: {_label(cert)}")
        if not lines:
            lines.append("no CA certificates")
        return lines


def classify_ca_certificates(certs: Iterable[x509.Certificate]) -> CaCertificateSet:
    """Sort CA certificates into roots, rollover certificates and intermediates."""
    cert_list = list(certs)
    roots = [cert for cert in cert_list if is_self_signed(cert)]
    roots.sort(key=lambda cert: cert.not_valid_before_utc)
    result = CaCertificateSet(roots=roots)
    if roots:
        result.current_root = roots[-1]
        result.new_with_new = roots[-1] if len(roots) > 1 else None
        result.old_with_old = roots[-2] if len(roots) > 1 else None
    old, new = result.old_with_old, result.new_with_new
    for cert in cert_list:
        if any(cert is root for root in roots):
            continue
        # Cross certificates (RFC 4210 §4.4, self-issued when both roots share a name).
        if old is not None and new is not None:
            if public_keys_equal(cert.public_key(), old.public_key()) and signed_with_key(
                cert, new
            ):
                result.old_with_new = cert
                continue
            if public_keys_equal(cert.public_key(), new.public_key()) and signed_with_key(
                cert, old
            ):
                result.new_with_old = cert
                continue
        result.intermediates.append(cert)
    return result


__all__ = ["CaCertificateSet", "classify_ca_certificates"]
