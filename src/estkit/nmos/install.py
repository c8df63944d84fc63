"""Installing a root CA and a TLS certificate by hand (BCP-003-03 C6).

Why it must exist: a node in a network without an EST server, or one whose operator provisions
devices offline, still needs its trust anchor and TLS credentials. The same checks as for EST
apply (the pair must match, the chain must reach the installed root, nothing expired), so a typo
cannot leave the node serving a broken pair.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from estkit.fileio import load_credential_pair
from estkit.nmos.errors import CertificateValidationError, NodeConfigError, TrustError
from estkit.nmos.node import NmosNode
from estkit.nmos.validation import build_chain
from estkit.protocol.certs import dns_names, load_pem_certificates
from estkit.protocol.errors import EncodingError
from estkit.protocol.keys import supported_private_key


def install_by_hand(
    node: NmosNode, ca_path: Path, cert_path: Path | None = None, key_path: Path | None = None
) -> list[str]:
    """Install ``ca_path`` as the trust anchor and optionally a certificate + key; returns
    one line per thing installed. Raises an ``NmosError`` subclass when something does not fit."""
    try:
        certificates = load_pem_certificates(Path(ca_path).read_bytes())
    except EncodingError as exc:
        raise TrustError(f"{ca_path}: {exc}", hint="give a PEM file with the root CA") from None
    decision = node.install_trust(certificates)
    lines = [
        f"root CA {decision.current_root.subject.rfc4514_string()} -> {node.store.root_ca_path} "
        f"({decision.change.value})"
    ]
    if cert_path is None or key_path is None:
        return lines
    try:
        chain, loaded_key = load_credential_pair(cert_path, key_path)
        key = supported_private_key(loaded_key)  # an EncodingError, so a ValueError
    except ValueError as exc:
        raise CertificateValidationError(
            str(exc), hint="give the key that belongs to the certificate", params=("key_path",)
        ) from None
    slot = "rsa" if isinstance(key, rsa.RSAPrivateKey) else "ecdsa"
    if slot not in node.config.slots:
        raise NodeConfigError(
            f"the node is not configured for an {slot.upper()} certificate",
            hint="add a key type of that algorithm to [node] key_types",
        )
    leaf = chain[0]
    now = node.clock.now()
    if leaf.not_valid_after_utc <= now or leaf.not_valid_before_utc > now:
        raise CertificateValidationError(
            f"{cert_path} is not valid now ({leaf.not_valid_before_utc:%Y-%m-%d} .. "
            f"{leaf.not_valid_after_utc:%Y-%m-%d})",
            hint="check the certificate and the node's clock",
        )
    roots = node.trust_anchors()
    path = build_chain(leaf, [*chain[1:], *node.store.load_chain()], roots)
    intermediates = [cert for cert in path[1:] if cert not in roots]
    installed = node.store.install_credential(slot, [leaf, *intermediates], key)
    missing = [name for name in node.config.hostnames if name not in dns_names(leaf)]
    if missing:
        node.emit(
            "warning",
            "install",
            f"the certificate does not name {', '.join(missing)}; peers may reject it",
            slot,
        )
    node.run_hook("provisioned", slot)
    lines.append(f"{slot} certificate {leaf.subject.rfc4514_string()} -> {installed.cert_path}")
    return lines
