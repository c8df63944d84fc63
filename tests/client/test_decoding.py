"""Robust decoding (RFC 8951, checklist E15/E16, C11 and the interop quirks) over real TLS.

Each test points the client at a quirky fixture server that answers the way some other EST
implementation does, and checks both the decoded result and the warning that names the quirk.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from estkit.client import CsrSpec, EstClient, EstProtocolResponseError
from estkit.protocol import (
    CHALLENGE_PASSWORD_OID,
    CsrAttrs,
    build_certs_only,
    build_serverkeygen_response,
    decode_csr_body,
    encode_base64_body,
    encode_csrattrs,
    public_keys_equal,
)

from .pki import QuirkyPki
from .quirky import Canned, QuirkyServer, Recorded

CACERTS = "/.well-known/est/cacerts"
CSRATTRS = "/.well-known/est/csrattrs"
ENROLL = "/.well-known/est/simpleenroll"
KEYGEN = "/.well-known/est/serverkeygen"
PKCS7 = "application/pkcs7-mime"
CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"

Start = Callable[..., QuirkyServer]


def _wrap(text: bytes, width: int, newline: bytes) -> bytes:
    return newline.join(text[i : i + width] for i in range(0, len(text), width)) + newline


def _cacerts_bodies(pki: QuirkyPki) -> dict[str, tuple[list[tuple[str, str]], bytes]]:
    der = build_certs_only([pki.root, pki.issuing])
    flat = base64.b64encode(der)
    pem_pkcs7 = b"-----BEGIN PKCS7-----\n" + _wrap(flat, 64, b"\n") + b"-----END PKCS7-----\n"
    pem_bundle = pki.pem("root") + pki.pem("issuing")
    cte = ("Content-Transfer-Encoding", "base64")
    return {
        "standard base64 with CTE": ([("Content-Type", CERTS_ONLY), cte], encode_base64_body(der)),
        "base64 without CTE header": ([("Content-Type", CERTS_ONLY)], encode_base64_body(der)),
        "unwrapped base64, no newline": ([("Content-Type", PKCS7)], flat),
        "CRLF-wrapped at 76": ([("Content-Type", PKCS7), cte], _wrap(flat, 76, b"\r\n")),
        "spaces and tabs inside": ([("Content-Type", PKCS7)], b" \t".join([flat[:50], flat[50:]])),
        "bare DER despite a CTE header": ([("Content-Type", PKCS7), cte], der),
        "bare DER": ([("Content-Type", PKCS7)], der),
        "PEM PKCS7": ([("Content-Type", PKCS7)], pem_pkcs7),
        "PEM certificate bundle": ([("Content-Type", PKCS7)], pem_bundle),
        "upper-case media type": ([("Content-Type", "Application/PKCS7-MIME")], flat),
    }


@pytest.mark.parametrize(
    "form",
    [
        "standard base64 with CTE",
        "base64 without CTE header",
        "unwrapped base64, no newline",
        "CRLF-wrapped at 76",
        "spaces and tabs inside",
        "bare DER despite a CTE header",
        "bare DER",
        "PEM PKCS7",
        "PEM certificate bundle",
        "upper-case media type",
    ],
)
def test_cacerts_in_every_body_form(pki: QuirkyPki, quirky: Start, form: str) -> None:
    headers, body = _cacerts_bodies(pki)[form]
    server = quirky({CACERTS: Canned(200, headers, body)})
    with EstClient(server.url, trust=pki.files["root"]) as client:
        result = client.cacerts()
    assert server.paths() == [CACERTS]
    assert result.certificates == [pki.root, pki.issuing]
    assert result.ca_set.current_root == pki.root
    assert result.ca_set.intermediates == [pki.issuing]
    if "DER" in form:
        assert any("as DER instead of base64" in w for w in result.warnings), result.warnings
    elif "PEM" in form:
        assert any("as PEM instead of base64" in w for w in result.warnings), result.warnings
    else:
        assert not any("instead of base64" in w for w in result.warnings), result.warnings


def test_cacerts_without_content_type_is_decoded_with_a_warning(
    pki: QuirkyPki, quirky: Start
) -> None:
    der = build_certs_only([pki.root])
    server = quirky({CACERTS: Canned(200, [], encode_base64_body(der))})
    with EstClient(server.url, trust=pki.files["root"]) as client:
        result = client.cacerts()
    assert result.certificates == [pki.root]
    assert any("without a Content-Type" in w for w in result.warnings)


def test_html_page_instead_of_cacerts_is_refused_with_the_reason(
    pki: QuirkyPki, quirky: Start
) -> None:
    page = b"<html><body>Welcome to nginx!</body></html>"
    server = quirky({CACERTS: Canned(200, [("Content-Type", "text/html")], page)})
    with (
        EstClient(server.url, trust=pki.files["root"]) as client,
        pytest.raises(EstProtocolResponseError) as caught,
    ):
        client.cacerts()
    assert server.paths() == [CACERTS]
    assert "text/html" in str(caught.value)
    assert "Welcome to nginx" in str(caught.value)
    assert caught.value.hint


def test_garbage_certs_body_is_refused(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky({CACERTS: Canned(200, [("Content-Type", PKCS7)], b"not%base64!!")})
    with (
        EstClient(server.url, trust=pki.files["root"]) as client,
        pytest.raises(EstProtocolResponseError, match="could not decode"),
    ):
        client.cacerts()
    assert server.paths() == [CACERTS]


def _csrattrs_der() -> bytes:
    return encode_csrattrs(CsrAttrs(oids=(x509.ObjectIdentifier(CHALLENGE_PASSWORD_OID),)))


@pytest.mark.parametrize(
    "body_of",
    [
        pytest.param(lambda der: encode_base64_body(der) + b"\0", id="NUL after base64 text"),
        pytest.param(lambda der: encode_base64_body(der + b"\0"), id="NUL inside the DER"),
        pytest.param(lambda der: der + b"\0", id="NUL after bare DER"),
    ],
)
def test_nul_terminated_csrattrs_decodes_and_warns(
    pki: QuirkyPki, quirky: Start, body_of: Callable[[bytes], bytes]
) -> None:
    body = body_of(_csrattrs_der())
    server = quirky({CSRATTRS: Canned(200, [("Content-Type", "application/csrattrs")], body)})
    with EstClient(server.url, trust=pki.files["root"]) as client:
        result = client.csrattrs()
    assert result.requires_pop
    assert any("trailing" in w and ("NUL" in w or "0x00" in w) for w in result.warnings), (
        result.warnings
    )


@pytest.mark.parametrize("status", [204, 404])
def test_csrattrs_none_is_an_empty_result(pki: QuirkyPki, quirky: Start, status: int) -> None:
    server = quirky({CSRATTRS: Canned(status)}) if status == 204 else quirky({})
    with EstClient(server.url, trust=pki.files["root"]) as client:
        result = client.csrattrs()
    assert server.paths() == [CSRATTRS]
    assert result.status == status
    assert not result.requires_pop
    assert result.attrs.oids == () and result.attrs.attributes == ()


def _issuing_handler(
    pki: QuirkyPki, encode: Callable[[bytes], bytes], content_type: str
) -> Callable[[Recorded], Canned]:
    def handle(request: Recorded) -> Canned:
        csr = decode_csr_body(request.body)
        cert = pki.issue(csr.public_key(), "enrolled.example", ("enrolled.example",))
        der = build_certs_only([cert])
        return Canned(200, [("Content-Type", content_type)], encode(der))

    return handle


@pytest.mark.parametrize(
    ("encode", "form"),
    [
        (lambda der: der, "DER"),
        (
            lambda der: (
                b"-----BEGIN PKCS7-----\r\n"
                + _wrap(base64.b64encode(der), 64, b"\r\n")
                + b"-----END PKCS7-----\r\n"
            ),
            "PEM",
        ),
        (lambda der: base64.b64encode(der), None),
    ],
    ids=["bare DER", "PEM with CRLF", "unwrapped base64"],
)
def test_enroll_answer_in_other_forms(
    pki: QuirkyPki, quirky: Start, encode: Callable[[bytes], bytes], form: str | None
) -> None:
    server = quirky({ENROLL: _issuing_handler(pki, encode, CERTS_ONLY)})
    key = ec.generate_private_key(ec.SECP256R1())
    spec = CsrSpec(key=key, common_name="enrolled.example", dns_names=("enrolled.example",))
    with EstClient(server.url, trust=pki.files["root"]) as client:
        result = client.simpleenroll(spec, pop=False)
    posted = server.requests[-1]
    assert posted.method == "POST"
    assert posted.headers["content-type"] == "application/pkcs10"
    assert public_keys_equal(result.certificate.public_key(), key.public_key())
    if form:
        assert any(f"as {form} instead of base64" in w for w in result.warnings)


def test_enroll_request_body_is_wrapped_base64_with_cte(pki: QuirkyPki, quirky: Start) -> None:
    """What we send: base64 wrapped at 64 columns ending in a newline, CTE header present."""
    server = quirky({ENROLL: _issuing_handler(pki, encode_base64_body, CERTS_ONLY)})
    key = ec.generate_private_key(ec.SECP256R1())
    with EstClient(server.url, trust=pki.files["root"]) as client:
        client.simpleenroll(CsrSpec(key=key, common_name="x.example"), pop=False)
    posted = server.requests[-1]
    assert posted.headers["content-transfer-encoding"] == "base64"
    lines = posted.body.split(b"\n")
    assert posted.body.endswith(b"\n")
    assert all(len(line) <= 64 for line in lines)
    assert "authorization" not in posted.headers


def test_certificate_for_another_key_is_refused(pki: QuirkyPki, quirky: Start) -> None:
    other = ec.generate_private_key(ec.SECP256R1())

    def wrong_key(request: Recorded) -> Canned:
        cert = pki.issue(other.public_key(), "x.example")
        return Canned(
            200, [("Content-Type", CERTS_ONLY)], encode_base64_body(build_certs_only([cert]))
        )

    server = quirky({ENROLL: wrong_key})
    key = ec.generate_private_key(ec.SECP256R1())
    with (
        EstClient(server.url, trust=pki.files["root"]) as client,
        pytest.raises(EstProtocolResponseError, match="different public key"),
    ):
        client.simpleenroll(CsrSpec(key=key, common_name="x.example"), pop=False)
    assert server.paths() == [ENROLL]


def test_serverkeygen_with_pkcs1_key_mislabelled_as_pkcs8(pki: QuirkyPki, quirky: Start) -> None:
    generated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pkcs1 = generated.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )

    def keygen(request: Recorded) -> Canned:
        cert = pki.issue(generated.public_key(), "gen.example", ("gen.example",))
        body, content_type = build_serverkeygen_response(pkcs1, "application/pkcs8", [cert])
        return Canned(200, [("Content-Type", content_type)], body)

    server = quirky({KEYGEN: keygen})
    with EstClient(server.url, trust=pki.files["root"]) as client:
        result = client.serverkeygen(
            common_name="gen.example", dns_names=["gen.example"], pop=False
        )
    assert server.paths() == [KEYGEN]
    assert public_keys_equal(result.private_key.public_key(), generated.public_key())
    assert public_keys_equal(result.certificate.public_key(), generated.public_key())
    assert any("PKCS#1" in w for w in result.warnings), result.warnings


def test_serverkeygen_not_multipart_is_refused(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky({KEYGEN: Canned(200, [("Content-Type", "application/pkcs8")], b"AAAA")})
    with (
        EstClient(server.url, trust=pki.files["root"]) as client,
        pytest.raises(EstProtocolResponseError, match="multipart/mixed"),
    ):
        client.serverkeygen(common_name="gen.example", pop=False)
    assert server.paths() == [KEYGEN]


def test_oversized_answer_is_cut_off(pki: QuirkyPki, quirky: Start) -> None:
    from estkit.protocol import MAX_RESPONSE_BODY_BYTES

    huge = b"A" * (MAX_RESPONSE_BODY_BYTES + 10)
    server = quirky({CACERTS: Canned(200, [("Content-Type", PKCS7)], huge)})
    with (
        EstClient(server.url, trust=pki.files["root"]) as client,
        pytest.raises(EstProtocolResponseError, match="larger than"),
    ):
        client.cacerts()
    assert server.paths() == [CACERTS]
