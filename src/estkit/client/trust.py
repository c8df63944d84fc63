"""Whom the client trusts, and with which certificate it proves who it is.

Why explicit: RFC 7030 §3.6.1 (checklist E12) wants an Explicit trust-anchor database and an
Implicit one (the system store) that can be switched off. We default to explicit anchors only; the
system store is loaded only when asked (``use_system_trust=True``). Verification without any anchor
exists only in :mod:`estkit.client.bootstrap`, under a name nobody types by accident.

The ``ssl.SSLContext`` is built here rather than by httpx so that the TLS floor (1.2, checklist
E11 / BCP-003-01 T1), the cipher list (T3) and the client certificate are under our control.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from estkit.fileio import load_credential_pair
from estkit.protocol import certificates_to_pem, common_name, load_pem_certificates, tlsprofile

# BCP-003-01 (digest T3): the TLS 1.2 cipher suites in the order the BCP lists them, as the
# OpenSSL cipher string ssl.SSLContext.set_ciphers takes; the list has one home in
# estkit.protocol.tlsprofile. TLS 1.3 suites (T2) are OpenSSL's defaults (AES-128-GCM,
# AES-256-GCM, ChaCha20), which the stdlib cannot reorder.
BCP_003_01_TLS12_CIPHERS = ":".join(tlsprofile.BCP_003_01_TLS12_CIPHERS)

# RFC 8996 deprecates TLS 1.0 and 1.1; BCP-003-01 forbids them (digest T1).
MINIMUM_TLS_VERSION = ssl.TLSVersion.TLSv1_2


@dataclass(frozen=True)
class TrustAnchors:
    """The explicit trust anchors (and whether the system store is added).

    ``sources`` records where the anchors came from, so a verification failure can say
    "verified against 2 certificates from ca.pem" instead of a bare OpenSSL message.
    """

    certificates: tuple[x509.Certificate, ...] = ()
    use_system_trust: bool = False
    sources: tuple[str, ...] = ()

    @classmethod
    def from_files(
        cls, paths: Iterable[str | os.PathLike[str]], *, use_system_trust: bool = False
    ) -> TrustAnchors:
        """Load every PEM certificate in ``paths`` (raises ``ValueError`` naming the bad file)."""
        certificates: list[x509.Certificate] = []
        sources: list[str] = []
        for raw in paths:
            path = Path(raw)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ValueError(
                    f"cannot read trust anchor file {path}: {exc.strerror or exc}"
                ) from None
            try:
                found = load_pem_certificates(data)
            except ValueError as exc:
                raise ValueError(f"trust anchor file {path}: {exc}") from None
            certificates.extend(found)
            sources.append(str(path))
        return cls(tuple(certificates), use_system_trust, tuple(sources))

    @classmethod
    def from_certificates(
        cls, certificates: Iterable[x509.Certificate], *, use_system_trust: bool = False
    ) -> TrustAnchors:
        return cls(tuple(certificates), use_system_trust, ("certificates given in code",))

    @classmethod
    def system(cls) -> TrustAnchors:
        """Only the operating system's store (RFC 7030's Implicit TA database)."""
        return cls((), True, ())

    @property
    def empty(self) -> bool:
        return not self.certificates and not self.use_system_trust

    def describe(self) -> str:
        """One phrase naming the anchors, for error messages."""
        parts: list[str] = []
        if self.certificates:
            names = ", ".join(
                common_name(cert) or cert.subject.rfc4514_string() for cert in self.certificates[:3]
            )
            more = "" if len(self.certificates) <= 3 else f" and {len(self.certificates) - 3} more"
            origin = f" from {', '.join(self.sources)}" if self.sources else ""
            parts.append(f"{len(self.certificates)} explicit anchor(s){origin} ({names}{more})")
        if self.use_system_trust:
            parts.append("the system trust store")
        return " and ".join(parts) if parts else "no trust anchors"


@dataclass(frozen=True)
class ClientCredentials:
    """A TLS client certificate chain (leaf first) and its private key.

    Why both objects and files: ``ssl`` loads client certificates only from files. When the
    credentials came from files we hand those paths over; otherwise we write them once to a
    private (0600) temporary directory for the duration of ``load_cert_chain``.
    """

    chain: tuple[x509.Certificate, ...]
    key: PrivateKeyTypes
    cert_file: Path | None = field(default=None, compare=False)
    key_file: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.chain:
            raise ValueError("client credentials need at least one certificate")

    @classmethod
    def from_files(
        cls, cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str]
    ) -> ClientCredentials:
        """Load a PEM chain and its key; refuses a key that does not belong to the certificate."""
        try:
            chain, key = load_credential_pair(cert_file, key_file)
        except OSError as exc:
            raise ValueError(
                f"cannot read client credentials {exc.filename}: {exc.strerror or exc}"
            ) from None
        except ValueError as exc:
            raise ValueError(f"client credentials {cert_file} / {key_file}: {exc}") from None
        return cls(tuple(chain), key, Path(cert_file), Path(key_file))

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]

    def load_into(self, context: ssl.SSLContext) -> None:
        """Install the chain and key as the context's client certificate."""
        if self.cert_file is not None and self.key_file is not None:
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
            return
        key_pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # mkdtemp creates the directory 0700, so the key file inside is never readable by others.
        with tempfile.TemporaryDirectory(prefix="estkit-client-") as directory:
            cert_path = Path(directory) / "cert.pem"
            key_path = Path(directory) / "key.pem"
            cert_path.write_bytes(certificates_to_pem(self.chain))
            key_path.touch(mode=0o600)
            key_path.write_bytes(key_pem)
            context.load_cert_chain(str(cert_path), str(key_path))


def build_ssl_context(
    trust: TrustAnchors,
    *,
    credentials: ClientCredentials | None = None,
    max_tls12: bool = False,
    ciphers: str = BCP_003_01_TLS12_CIPHERS,
) -> ssl.SSLContext:
    """A verifying client context: TLS ≥ 1.2, hostname checked, only the given anchors.

    ``max_tls12`` pins the connection to TLS 1.2, which proof-of-possession linking needs
    (tls-unique does not exist in TLS 1.3, RFC 7030 §3.5 / checklist E14).
    """
    if trust.empty:
        raise ValueError(
            "no trust anchors: pass the EST server's CA certificate(s) as explicit trust "
            "anchors, ask for the system store, or bootstrap /cacerts with an expected fingerprint"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = MINIMUM_TLS_VERSION
    if max_tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if trust.certificates:
        context.load_verify_locations(cadata=certificates_to_pem(trust.certificates).decode())
        # An explicitly configured anchor is trusted as such even when it is an intermediate
        # (some servers' /cacerts holds only the issuing CA); Python 3.13 sets this by default.
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if trust.use_system_trust:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if credentials is not None:
        credentials.load_into(context)
    return context


def build_unverified_ssl_context(*, ciphers: str = BCP_003_01_TLS12_CIPHERS) -> ssl.SSLContext:
    """A context that accepts any server certificate. Only :mod:`.bootstrap` may use it.

    It never carries a client certificate: nothing about this client is revealed to a server
    that has not been authenticated (checklist E13).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = MINIMUM_TLS_VERSION
    context.set_ciphers(ciphers)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
