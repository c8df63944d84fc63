"""Applying what ``/csrattrs`` asks for to a CSR the client is about to build (RFC 7030 §4.5).

Why a separate step the caller asks for: a server's CSR attributes are wishes, some of which only
the device can fulfil (a MAC address, a key type chosen before the key exists). What can be done
automatically is done (hash, serialNumber, PoP is decided elsewhere); what cannot is reported so a
person knows why the server may refuse the request.
"""

from __future__ import annotations

import dataclasses
from typing import TypedDict

from cryptography import x509

from estkit.protocol import (
    CHALLENGE_PASSWORD_OID,
    EC_PUBLIC_KEY_OID,
    EXTENSION_REQUEST_OID,
    HASH_OIDS,
    KEY_TYPES,
    RSA_ENCRYPTION_OID,
    CsrAttrs,
    describe_public_key,
    key_type_for_curve,
    oid_name,
)
from estkit.protocol.csrattrs import extension_templates

from .models import CsrSpec

SERIAL_NUMBER_OID = "2.5.4.5"
COMMON_NAME_OID = "2.5.4.3"
SUBJECT_ALT_NAME_OID = "2.5.29.17"

# Hashes this client signs with (SHA-1/MD5 are never used; SHA-224 is too weak to offer).
SUPPORTED_HASHES = ("sha256", "sha384", "sha512")


# OIDs handled by other means: PoP (challengePassword), key choice, the hash.
_HANDLED_ELSEWHERE = {CHALLENGE_PASSWORD_OID, EC_PUBLIC_KEY_OID, RSA_ENCRYPTION_OID}


def key_type_for(attrs: CsrAttrs) -> str | None:
    """The key type (``p384``, ``rsa3072`` …) the server asks for, if it asks for one we make."""
    if attrs.requested_curve is not None:
        return key_type_for_curve(attrs.requested_curve)
    if attrs.requested_rsa_bits is not None:
        rsa_type = f"rsa{attrs.requested_rsa_bits}"
        return rsa_type if rsa_type in KEY_TYPES else None
    return None


def _extension_templates(attrs: CsrAttrs) -> list[tuple[str, bytes]]:
    for attribute in attrs.attributes:
        if attribute.oid.dotted_string == EXTENSION_REQUEST_OID:
            return [t for value in attribute.values for t in extension_templates(value)]
    return []


class _SpecChanges(TypedDict, total=False):
    """The :class:`CsrSpec` fields :func:`apply_csrattrs` may change."""

    hash_algorithm: str | None
    extensions: tuple[x509.ExtensionType, ...]
    extra_attributes: tuple[tuple[x509.ObjectIdentifier, bytes], ...]


def apply_csrattrs(spec: CsrSpec, attrs: CsrAttrs) -> tuple[CsrSpec, list[str]]:
    """``spec`` adjusted to ``attrs`` (the hash, attributes given with values, extensions given
    filled in), plus warnings for wishes it cannot fulfil (the key type is chosen before the key
    exists: see :func:`key_type_for`)."""
    warnings: list[str] = []
    changes: _SpecChanges = {}

    wanted_hash = attrs.requested_hash
    if wanted_hash is not None:
        if wanted_hash in SUPPORTED_HASHES:
            changes["hash_algorithm"] = wanted_hash
        else:
            warnings.append(f"the server asks for {wanted_hash}, which this client does not use")

    info = describe_public_key(spec.key.public_key())
    if attrs.requested_curve is not None and info.curve != attrs.requested_curve:
        warnings.append(
            f"the server asks for an EC key on {attrs.requested_curve} but the key is "
            f"{info.description}; make the key it asks for"
        )
    if attrs.requested_rsa_bits is not None and (
        info.family != "rsa" or info.size != attrs.requested_rsa_bits
    ):
        warnings.append(
            f"the server asks for an RSA {attrs.requested_rsa_bits} key but the key is "
            f"{info.description}; make the key it asks for"
        )

    for oid in attrs.oids:
        dotted = oid.dotted_string
        if dotted in _HANDLED_ELSEWHERE or dotted in HASH_OIDS:
            continue
        if dotted == SERIAL_NUMBER_OID:
            if not spec.serial_number:
                warnings.append(
                    "the server asks for the subject serialNumber: give the device serial "
                    "(serial_number)"
                )
            continue
        if dotted == COMMON_NAME_OID:
            if not spec.common_name:
                warnings.append("the server asks for a common name (common_name)")
            continue
        warnings.append(f"the server asks for {oid_name(oid)}, which this client cannot fill in")

    # Extensions the server hands over filled in (an extensionRequest template with values) are
    # copied as given; ones it only names must come from the caller.
    templates = _extension_templates(attrs)
    present = {ext.oid.dotted_string for ext in spec.extensions}
    added_extensions: list[x509.ExtensionType] = []
    for dotted, value in templates:
        if dotted == SUBJECT_ALT_NAME_OID or dotted in present:
            continue  # names come from --cn/--san; never override what the caller set
        added_extensions.append(x509.UnrecognizedExtension(x509.ObjectIdentifier(dotted), value))
        present.add(dotted)
    if added_extensions:
        changes["extensions"] = (*spec.extensions, *added_extensions)
    filled = {dotted for dotted, _value in templates}
    for oid in attrs.requested_extension_oids:
        if oid.dotted_string == SUBJECT_ALT_NAME_OID:
            if not spec.dns_names:
                warnings.append("the server asks for a subjectAltName: give DNS names (dns_names)")
            continue
        if oid.dotted_string in filled:
            continue
        warnings.append(
            f"the server asks for the extension {oid_name(oid)}, which this client does not add"
        )
    # Attributes the server gives with values are put in the CSR with those values.
    extra = list(spec.extra_attributes)
    for attribute in attrs.attributes:
        dotted = attribute.oid.dotted_string
        if dotted in _HANDLED_ELSEWHERE or dotted == EXTENSION_REQUEST_OID:
            continue
        if not attribute.values or any(oid == attribute.oid for oid, _ in extra):
            continue
        extra.append((attribute.oid, attribute.values[0]))
        if len(attribute.values) > 1:
            warnings.append(
                f"the server gives {len(attribute.values)} values for {oid_name(attribute.oid)}; "
                "the CSR carries the first"
            )
    if len(extra) != len(spec.extra_attributes):
        changes["extra_attributes"] = tuple(extra)

    return (dataclasses.replace(spec, **changes) if changes else spec), warnings
