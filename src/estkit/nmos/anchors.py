"""What to trust after ``/cacerts``: same root, a rollover, or another domain (C5, C14, C15).

Why a pure function: this is the decision that can lock a node out of its network (trusting too
little) or hand it to an attacker (trusting too much), so it is plain code over certificates that
tests can drive through every case without a server.

The rules:

* nothing installed -> install what the server sent (the caller decides whether the server was
  authenticated, C4);
* our current root is still the server's current root -> nothing changes (C14: "same root");
* the server publishes a newer root linked to ours by a NewWithOld certificate (RFC 4210 §4.4) ->
  rollover: the new root becomes current and the old one stays trusted until it expires, so
  certificates issued under either keep verifying (no trust gap, C5);
* the server's roots have nothing to do with ours -> another domain: everything EST-obtained is
  dropped and the node provisions from scratch (C15).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509

from estkit.nmos.errors import TrustError
from estkit.protocol.certs import is_self_signed, sha256_fingerprint, signed_with_key
from estkit.protocol.keys import public_keys_equal
from estkit.protocol.rollover import classify_ca_certificates


class TrustChange(enum.Enum):
    INITIAL = "initial"  # first root installed
    SAME = "same"  # nothing new
    RENEWED = "renewed"  # same key, new certificate (e.g. extended validity)
    ROLLOVER = "rollover"  # new key linked to the old one: trust moved with no gap
    NEW_DOMAIN = "new-domain"  # unrelated root: re-provision from scratch (C15)


@dataclass
class TrustDecision:
    change: TrustChange
    roots: list[x509.Certificate]  # to install, current root first
    extra: list[x509.Certificate]  # intermediates and rollover certificates (kept, C5)
    messages: list[str] = field(default_factory=list)

    @property
    def current_root(self) -> x509.Certificate:
        return self.roots[0]


def _label(cert: x509.Certificate) -> str:
    return f"{cert.subject.rfc4514_string()} ({sha256_fingerprint(cert)[:23]}…)"


def _still_valid(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_after_utc > now


def decide_trust(
    installed: Sequence[x509.Certificate],
    received: Sequence[x509.Certificate],
    now: datetime,
) -> TrustDecision:
    """Compare the installed anchors (current first) with a ``/cacerts`` answer."""
    ca_set = classify_ca_certificates(received)
    roots_received = [root for root in ca_set.roots if _still_valid(root, now)]
    extra = [cert for cert in received if not any(cert == root for root in ca_set.roots)]
    if not roots_received:
        raise TrustError(
            "the EST server's /cacerts answer holds no valid self-signed root CA certificate",
            hint="ask the server's operator to publish the root (RFC 7030 §4.1.3)",
        )
    newest = max(roots_received, key=lambda cert: cert.not_valid_before_utc)
    live_installed = [cert for cert in installed if _still_valid(cert, now)]
    if not live_installed:
        ordered = [newest, *[r for r in roots_received if r != newest]]
        return TrustDecision(
            TrustChange.INITIAL, ordered, extra, [f"installed root CA {_label(newest)}"]
        )

    current = live_installed[0]
    if newest == current:
        # Keep older installed roots that the server still publishes (a rollover in progress).
        kept = [
            current,
            *[
                r
                for r in live_installed[1:]
                if r in roots_received or _linked(r, current, received)
            ],
        ]
        return TrustDecision(
            TrustChange.SAME, kept, extra, ["the server returned the installed root"]
        )

    if public_keys_equal(newest.public_key(), current.public_key()):
        return TrustDecision(
            TrustChange.RENEWED,
            [newest, *[r for r in live_installed if r != current]],
            extra,
            [f"root CA certificate renewed with the same key: {_label(newest)}"],
        )

    if any(_linked(newest, anchor, received) for anchor in live_installed):
        previous = [r for r in live_installed if r != newest]
        return TrustDecision(
            TrustChange.ROLLOVER,
            [newest, *previous],
            extra,
            [
                f"root key rollover: now trusting {_label(newest)}, vouched for by the installed "
                f"root through a NewWithOld certificate; the old root stays trusted until "
                f"{current.not_valid_after_utc:%Y-%m-%d}"
            ],
        )

    if any(anchor in roots_received for anchor in live_installed):
        # The server still serves our root next to an unrelated newer one, with no cross
        # certificate to prove who made it: keep ours, ignore the stranger.
        return TrustDecision(
            TrustChange.SAME,
            live_installed,
            extra,
            [f"ignored root {_label(newest)}: no NewWithOld certificate links it to ours"],
        )

    return TrustDecision(
        TrustChange.NEW_DOMAIN,
        [newest, *[r for r in roots_received if r != newest]],
        extra,
        [
            f"the server's root {_label(newest)} is unrelated to the installed "
            f"{_label(current)}: another domain, provisioning from scratch (C15)"
        ],
    )


def _linked(
    new_root: x509.Certificate, old_root: x509.Certificate, received: Sequence[x509.Certificate]
) -> bool:
    """True when ``received`` holds a certificate carrying ``new_root``'s key signed by
    ``old_root``'s key: the NewWithOld certificate of RFC 4210 §4.4.1."""
    for cert in received:
        if cert == new_root or is_self_signed(cert):
            continue
        if public_keys_equal(cert.public_key(), new_root.public_key()) and signed_with_key(
            cert, old_root
        ):
            return True
    return False
