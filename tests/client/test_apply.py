"""Applying ``/csrattrs`` wishes to the CSR (RFC 7030 §4.5.2), as a library call and via the CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from asn1crypto import core
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from estkit.cli.main import cli
from estkit.client import CsrSpec, apply_csrattrs, key_type_for
from estkit.client.flows import build_csr_for
from estkit.protocol import (
    EC_PUBLIC_KEY_OID,
    EXTENSION_REQUEST_OID,
    RSA_ENCRYPTION_OID,
    CsrAttribute,
    CsrAttrs,
    build_certs_only,
    decode_csr_body,
    describe_public_key,
    encode_base64_body,
    encode_csrattrs,
    generate_private_key,
    load_private_key,
)

from .pki import QuirkyPki
from .quirky import Canned, QuirkyServer, Recorded

ECDSA_WITH_SHA384 = "1.2.840.10045.4.3.3"
MAC_ADDRESS = "1.3.6.1.1.1.1.22"
SERIAL_NUMBER = "2.5.4.5"
SECP384R1 = "1.3.132.0.34"

Start = Callable[..., QuirkyServer]


def _oid_value(dotted: str) -> bytes:
    return bytes(core.ObjectIdentifier(dotted).dump())


def _extension_request(*dotted: str) -> bytes:
    """An Extensions SEQUENCE naming extensions with empty values (RFC 7030 §4.5.2 example)."""

    class _Ext(core.Sequence):  # type: ignore[misc]
        _fields: ClassVar = [("extnID", core.ObjectIdentifier), ("extnValue", core.OctetString)]

    class _Exts(core.SequenceOf):  # type: ignore[misc]
        _child_spec = _Ext

    return bytes(_Exts([_Ext({"extnID": d, "extnValue": b""}) for d in dotted]).dump())


def _filled_extension_request(dotted: str, value: bytes) -> bytes:
    """An Extensions template entry the server filled in (draft-ietf-lamps-rfc7030-csrattrs)."""

    class _Ext(core.Sequence):  # type: ignore[misc]
        _fields: ClassVar = [("extnID", core.ObjectIdentifier), ("extnValue", core.OctetString)]

    class _Exts(core.SequenceOf):  # type: ignore[misc]
        _child_spec = _Ext

    return bytes(_Exts([_Ext({"extnID": dotted, "extnValue": value})]).dump())


def _wishes() -> CsrAttrs:
    return CsrAttrs(
        oids=tuple(
            x509.ObjectIdentifier(d) for d in (ECDSA_WITH_SHA384, SERIAL_NUMBER, MAC_ADDRESS)
        ),
        attributes=(
            CsrAttribute(x509.ObjectIdentifier(EC_PUBLIC_KEY_OID), (_oid_value(SECP384R1),)),
            CsrAttribute(
                x509.ObjectIdentifier(EXTENSION_REQUEST_OID),
                (_extension_request("2.5.29.17"),),
            ),
        ),
    )


def test_key_type_for_the_requested_key() -> None:
    assert key_type_for(_wishes()) == "p384"
    rsa = CsrAttrs(
        attributes=(
            CsrAttribute(
                x509.ObjectIdentifier(RSA_ENCRYPTION_OID), (bytes(core.Integer(3072).dump()),)
            ),
        )
    )
    assert key_type_for(rsa) == "rsa3072"
    assert key_type_for(CsrAttrs()) is None


def test_apply_sets_the_hash_and_reports_the_rest() -> None:
    spec = CsrSpec(key=ec.generate_private_key(ec.SECP256R1()), common_name="x.example")
    applied, warnings = apply_csrattrs(spec, _wishes())
    assert applied.hash_algorithm == "sha384"
    text = " | ".join(warnings)
    assert "secp384r1" in text and "ECDSA P-256" in text  # wrong key, said so
    # The library names the request field; the CLI turns it into --serial-number.
    assert "serialNumber" in text and "(serial_number)" in text
    assert "macAddress" in text
    assert "subjectAltName" in text and "(dns_names)" in text


def test_apply_is_quiet_when_everything_is_there() -> None:
    spec = CsrSpec(
        key=generate_private_key("p384"),
        common_name="x.example",
        dns_names=("x.example",),
        serial_number="SN-1",
    )
    wishes = CsrAttrs(
        oids=(x509.ObjectIdentifier(ECDSA_WITH_SHA384), x509.ObjectIdentifier(SERIAL_NUMBER)),
        attributes=_wishes().attributes,
    )
    applied, warnings = apply_csrattrs(spec, wishes)
    assert warnings == []
    assert applied.hash_algorithm == "sha384"


def test_cli_apply_csrattrs_picks_key_and_hash(
    pki: QuirkyPki, quirky: Start, tmp_path: Path
) -> None:
    csrattrs = Canned(
        200,
        [("Content-Type", "application/csrattrs")],
        encode_base64_body(encode_csrattrs(_wishes())),
    )

    def enroll(request: Recorded) -> Canned:
        csr = decode_csr_body(request.body)
        cert = pki.issue(csr.public_key(), "fit.example", ("fit.example",))
        body = encode_base64_body(build_certs_only([cert]))
        return Canned(200, [("Content-Type", "application/pkcs7-mime")], body)

    # /cacerts gives the issuing CA that the enrollment answer leaves out: the client checks the
    # chain before writing anything (issue 20).
    cacerts = Canned(
        200,
        [("Content-Type", "application/pkcs7-mime")],
        encode_base64_body(build_certs_only([pki.issuing, pki.root])),
    )
    server = quirky(
        {
            "/.well-known/est/csrattrs": csrattrs,
            "/.well-known/est/simpleenroll": enroll,
            "/.well-known/est/cacerts": cacerts,
        }
    )
    key_file = tmp_path / "fit.key"
    result = CliRunner().invoke(
        cli,
        [
            "client",
            "enroll",
            "--server",
            server.url,
            "--trust",
            str(pki.files["root"]),
            "--apply-csrattrs",
            "--no-pop",
            "--cn",
            "fit.example",
            "--san",
            "fit.example",
            "--serial-number",
            "SN-42",
            "--out-cert",
            str(tmp_path / "fit.pem"),
            "--out-key",
            str(key_file),
        ],
    )
    assert result.exit_code == 0, result.output
    (post,) = [r for r in server.requests if r.method == "POST"]
    posted = decode_csr_body(post.body)
    assert describe_public_key(posted.public_key()).curve == "secp384r1"
    assert isinstance(posted.signature_hash_algorithm, hashes.SHA384)
    assert describe_public_key(load_private_key(key_file.read_bytes()).public_key()).size == 384
    assert "macAddress" in result.stderr  # the wish it could not fulfil, reported


def test_apply_puts_given_attribute_values_and_filled_extensions_in_the_csr() -> None:
    vendor_attribute = "1.3.6.1.4.1.99999.7"
    vendor_extension = "1.3.6.1.4.1.99999.8"
    attribute_value = bytes(core.UTF8String("studio-a").dump())
    extension_value = bytes(core.UTF8String("rack-12").dump())
    wishes = CsrAttrs(
        attributes=(
            CsrAttribute(x509.ObjectIdentifier(vendor_attribute), (attribute_value,)),
            CsrAttribute(
                x509.ObjectIdentifier(EXTENSION_REQUEST_OID),
                (_filled_extension_request(vendor_extension, extension_value),),
            ),
        )
    )
    spec = CsrSpec(key=generate_private_key("p256"), common_name="x.example")
    applied, warnings = apply_csrattrs(spec, wishes)
    assert warnings == []
    csr = build_csr_for(applied)
    # The CSR really carries both, byte for byte as the server gave them.
    extension = csr.extensions.get_extension_for_oid(x509.ObjectIdentifier(vendor_extension))
    assert extension.value.value == extension_value
    attribute = csr.attributes.get_attribute_for_oid(x509.ObjectIdentifier(vendor_attribute))
    assert attribute.value == b"studio-a"
    # Applying twice adds nothing twice.
    again, _ = apply_csrattrs(applied, wishes)
    assert again.extensions == applied.extensions
    assert again.extra_attributes == applied.extra_attributes
