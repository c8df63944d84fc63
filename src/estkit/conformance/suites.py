"""BCP-003-01 cipher suites (T2, T3) as data, and the sorting of everything else OpenSSL offers.

Why data: the suite lists are the requirement; keeping them as tuples of (OpenSSL name, IANA name,
strength) lets a reader check them against the specification line by line, and the probes only
iterate over them.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Strength = Literal["SHALL", "SHOULD"]


@dataclass(frozen=True)
class ListedSuite:
    openssl_name: str
    iana_name: str
    strength: Strength


TLS13_SUITES: tuple[ListedSuite, ...] = (
    ListedSuite("TLS_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256", "SHALL"),
    ListedSuite("TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384", "SHOULD"),
    ListedSuite("TLS_CHACHA20_POLY1305_SHA256", "TLS_CHACHA20_POLY1305_SHA256", "SHOULD"),
)
"""T2, in the specification's order."""

TLS12_SUITES: tuple[ListedSuite, ...] = (
    ListedSuite(
        "ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "SHOULD"
    ),
    ListedSuite(
        "ECDHE-ECDSA-AES256-GCM-SHA384", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "SHOULD"
    ),
    ListedSuite("ECDHE-ECDSA-AES128-SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", "SHOULD"),
    ListedSuite("ECDHE-ECDSA-AES256-SHA384", "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384", "SHOULD"),
    ListedSuite("ECDHE-RSA-AES128-GCM-SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "SHALL"),
    ListedSuite("ECDHE-RSA-AES256-GCM-SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "SHOULD"),
    ListedSuite("DHE-RSA-AES128-GCM-SHA256", "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", "SHOULD"),
    ListedSuite("DHE-RSA-AES256-GCM-SHA384", "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", "SHOULD"),
    ListedSuite("ECDHE-RSA-AES128-SHA256", "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", "SHOULD"),
    ListedSuite("ECDHE-RSA-AES256-SHA384", "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384", "SHOULD"),
    ListedSuite("DHE-RSA-AES128-SHA256", "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256", "SHOULD"),
    ListedSuite("DHE-RSA-AES256-SHA256", "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256", "SHOULD"),
)
"""T3, in the specification's order: "Nothing else"."""

LISTED_TLS12_NAMES = frozenset(suite.openssl_name for suite in TLS12_SUITES)

EVERYTHING = "ALL:COMPLEMENTOFALL:@SECLEVEL=0"
"""Every suite the local OpenSSL knows; @SECLEVEL=0 so weak ones can be offered at all."""

NOT_OFFERABLE_KEY_EXCHANGES = {
    "kx-psk": "needs a pre-shared key, which the probe does not have",
    "kx-rsa-psk": "needs a pre-shared key, which the probe does not have",
    "kx-dhe-psk": "needs a pre-shared key, which the probe does not have",
    "kx-ecdhe-psk": "needs a pre-shared key, which the probe does not have",
    "kx-srp": "needs an SRP user name and password, which the probe does not have",
}
"""OpenSSL silently leaves these out of a ClientHello when no PSK/SRP identity is configured."""

NonListedGroup = Literal["rsa-kex", "cbc-sha1", "3des", "other"]

GROUP_DESCRIPTIONS: dict[NonListedGroup, str] = {
    "rsa-kex": "suites with RSA key exchange (no forward secrecy)",
    "cbc-sha1": "CBC suites with a SHA-1 MAC",
    "3des": "3DES suites",
    "other": "other suites outside the BCP-003-01 list",
}

KNOWN_3DES_SUITES = ("DES-CBC3-SHA", "ECDHE-RSA-DES-CBC3-SHA", "EDH-RSA-DES-CBC3-SHA")
"""Named in the skip message when the local OpenSSL was built without 3DES (OpenSSL 3 default)."""


@dataclass
class CipherCatalogue:
    """The TLS 1.2 suites the local OpenSSL can offer, sorted into the groups the cases probe."""

    groups: dict[NonListedGroup, list[str]] = field(default_factory=dict)
    listed_available: list[str] = field(default_factory=list)
    not_offerable: dict[str, str] = field(default_factory=dict)

    def evidence(self) -> dict[str, Any]:
        by_reason: dict[str, list[str]] = {}
        for name, reason in self.not_offerable.items():
            by_reason.setdefault(reason, []).append(name)
        return {"openssl": ssl.OPENSSL_VERSION, "not_offerable": by_reason}


def classify_suite(info: Mapping[str, object]) -> NonListedGroup:
    """Which non-listed group an OpenSSL cipher description (``SSLContext.get_ciphers``) is in."""
    name = str(info.get("name", ""))
    symmetric = str(info.get("symmetric", "")).lower()
    if "des" in symmetric or "DES-CBC3" in name or "3DES" in name:
        return "3des"
    if info.get("kea") == "kx-rsa":
        return "rsa-kex"
    if info.get("digest") == "sha1" and "cbc" in symmetric:
        return "cbc-sha1"
    return "other"


def local_catalogue() -> CipherCatalogue:
    """Ask the local OpenSSL (in process) which TLS 1.2 suites it can put in a ClientHello."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers(EVERYTHING)
    catalogue = CipherCatalogue(groups={group: [] for group in GROUP_DESCRIPTIONS})
    for info in ctx.get_ciphers():
        name = str(info["name"])
        if info.get("protocol") == "TLSv1.3":
            continue
        if name in LISTED_TLS12_NAMES:
            catalogue.listed_available.append(name)
            continue
        reason = NOT_OFFERABLE_KEY_EXCHANGES.get(str(info.get("kea")))
        if reason is not None:
            catalogue.not_offerable[name] = reason
            continue
        catalogue.groups[classify_suite(info)].append(name)
    return catalogue
