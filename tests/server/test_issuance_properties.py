"""Property tests (issue 24): hostile CSR subjects and hostile client-certificate extensions,
sent over real TLS to the session server, never get a 5xx, and whatever is issued carries exactly
the CA-built names.

Bounded (``max_examples`` below, no deadline) so the suite stays fast on two cores: each example
is one TLS connection and, when accepted, one signature.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import ssl
import unicodedata
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from estkit.ca.builders import is_hostname
from estkit.ca.manufacturer import ManufacturerCA
from estkit.protocol.keys import generate_private_key
from estkit.server.datadir import DEMO_DEVICE_SERIAL as DEVICE_SERIAL

from .hostile import (
    DUPLICATE_FIRST,
    DUPLICATE_SECOND,
    EDI_PARTY_DER,
    NON_ASCII_DNS_DER,
    PLACEHOLDER_DER,
    PLACEHOLDER_NAME,
    X400_ADDRESS_DER,
    device_certificate,
    hostile_csr,
    oid_content,
    write_credential,
)
from .witness import HttpResult, certificate_from_response, client_context, post

if TYPE_CHECKING:
    from conftest import EstkitTestServer

# One TLS connection per example: 60 of each keeps both properties under ~10 s on two cores.
MAX_EXAMPLES = 60
SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
CN = NameOID.COMMON_NAME
KEY = generate_private_key("p256")  # one requester key: the properties are about names

HOSTNAMES = st.from_regex(
    r"[a-z0-9]([a-z0-9-]{0,12}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,12}[a-z0-9])?){0,3}",
    fullmatch=True,
)
# Any Unicode but surrogates (not encodable in UTF-8 at all), lengths around the 64 limit too.
ANY_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=80
) | st.builds(lambda n, c: c * n, st.integers(60, 300), st.sampled_from("ab.-*\x00"))
ATTRIBUTE_OIDS = st.sampled_from(
    [
        CN,
        CN,
        NameOID.ORGANIZATION_NAME,
        NameOID.ORGANIZATIONAL_UNIT_NAME,
        NameOID.SERIAL_NUMBER,
        NameOID.LOCALITY_NAME,
    ]
)
ATTRIBUTES = st.lists(st.tuples(ATTRIBUTE_OIDS, HOSTNAMES | ANY_TEXT), max_size=4)
DNS_NAMES = st.lists(
    HOSTNAMES | st.text(alphabet=st.characters(max_codepoint=127), max_size=70), max_size=3
)


def _printable(name: str) -> bool:
    return not any(
        unicodedata.category(c).startswith("C") or unicodedata.category(c) in ("Zl", "Zp")
        for c in name
    )


def _send(server: EstkitTestServer, body: bytes, context: ssl.SSLContext) -> HttpResult:
    return post(
        "localhost",
        server.port,
        "/.well-known/est/simpleenroll",
        body,
        context,
    )


@pytest.fixture(scope="module")
def device_context(estkit_server: EstkitTestServer) -> ssl.SSLContext:
    paths = estkit_server.paths
    return client_context(
        paths.ca_certificates, cert=paths.device_certificate, key=paths.device_key
    )


@SETTINGS
@given(attributes=ATTRIBUTES, dns_names=DNS_NAMES)
def test_csr_subjects_never_5xx_and_issue_only_vetted_names(
    estkit_server: EstkitTestServer,
    device_context: ssl.SSLContext,
    attributes: list[tuple[x509.ObjectIdentifier, str]],
    dns_names: list[str],
) -> None:
    try:
        der = hostile_csr(KEY, attributes, dns_names=dns_names)
    except (ValueError, TypeError):
        assume(False)  # cryptography cannot encode it (e.g. non-printable serialNumber)
        return
    response = _send(estkit_server, base64.encodebytes(der), device_context)
    event(f"status {response.status}")
    assert response.status in (200, 400), response.text
    assert "Traceback" not in response.text
    common_names = [value for oid, value in attributes if oid == CN]
    hostile = (
        len(common_names) > 1
        or any(len(name) > 64 for name in common_names)
        or not all(_printable(name) for name in (*common_names, *dns_names))
        or any("*" in name for name in (*common_names, *dns_names))
    )
    if hostile:
        assert response.status == 400, (attributes, dns_names)
    if response.status != 200:
        return
    certificate = certificate_from_response(response.body)
    # The CN and the device serial from the manufacturer certificate (the NMOS default):
    # nothing of the CSR subject but the vetted name is ever issued.
    assert [attribute.oid for attribute in certificate.subject] == [CN, NameOID.SERIAL_NUMBER]
    serial = certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value
    assert serial == DEVICE_SERIAL
    issued_cn = str(certificate.subject.get_attributes_for_oid(CN)[0].value)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    issued_dns = san.get_values_for_type(x509.DNSName)
    assert list(san) == [x509.DNSName(name) for name in issued_dns], "only DNS names are issued"
    assert issued_cn == issued_dns[0]
    assert all(is_hostname(name) for name in issued_dns)
    wanted = {name.lower() for name in (*common_names, *dns_names)}
    assert {name.lower() for name in issued_dns} == wanted
    assert len(issued_dns) == len(wanted)
    if common_names:
        assert issued_cn.lower() == common_names[0].lower()


SAN_ENTRIES = st.lists(
    st.one_of(
        HOSTNAMES.map(x509.DNSName),
        st.ip_addresses().map(lambda ip: x509.IPAddress(ipaddress.ip_address(ip))),
        st.sampled_from(
            [
                x509.UniformResourceIdentifier("urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"),
                x509.RFC822Name("device@example.com"),
                x509.OtherName(x509.ObjectIdentifier("1.3.6.1.4.1.55555.3"), b"\x0c\x02ok"),
            ]
        ),
    ),
    max_size=3,
)
PLACEHOLDER_PATCHES = st.sampled_from([None, X400_ADDRESS_DER, EDI_PARTY_DER, NON_ASCII_DNS_DER])
KEY_USAGES = st.builds(
    lambda ds, ke, kc: x509.KeyUsage(ds, False, ke, False, False, kc, kc, False, False),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
EKUS = st.lists(
    st.sampled_from(
        [
            ExtendedKeyUsageOID.CLIENT_AUTH,
            ExtendedKeyUsageOID.SERVER_AUTH,
            ExtendedKeyUsageOID.CODE_SIGNING,
            ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
        ]
    ),
    min_size=1,
    max_size=3,
    unique=True,
)


@pytest.fixture(scope="module")
def manufacturer(estkit_server: EstkitTestServer) -> ManufacturerCA:
    return ManufacturerCA.load(estkit_server.paths.manufacturer_ca.parent)


@SETTINGS
@given(
    san=SAN_ENTRIES,
    patch=PLACEHOLDER_PATCHES,
    usage=st.none() | st.tuples(KEY_USAGES, st.booleans()),
    ca=st.booleans(),
    ekus=st.none() | EKUS,
    private=st.none() | st.tuples(st.binary(max_size=20), st.booleans()),
    duplicate=st.booleans(),
)
def test_client_certificate_extensions_never_5xx(
    estkit_server: EstkitTestServer,
    manufacturer: ManufacturerCA,
    tmp_path_factory: pytest.TempPathFactory,
    san: list[x509.GeneralName],
    patch: bytes | None,
    usage: tuple[x509.KeyUsage, bool] | None,
    ca: bool,
    ekus: list[x509.ObjectIdentifier] | None,
    private: tuple[bytes, bool] | None,
    duplicate: bool,
) -> None:
    extensions: list[tuple[x509.ExtensionType, bool]] = []
    patches: list[tuple[bytes, bytes]] = []
    if usage is not None:
        extensions.append(usage)
    if private is not None:
        # An OCTET STRING holding random bytes: an unknown extension, critical or not.
        value = bytes([0x04, len(private[0])]) + private[0]
        extensions.append((x509.UnrecognizedExtension(DUPLICATE_FIRST, value), private[1]))
        if duplicate:
            extensions.append((x509.UnrecognizedExtension(DUPLICATE_SECOND, value), False))
            patches.append((oid_content(DUPLICATE_SECOND), oid_content(DUPLICATE_FIRST)))
    if patch is not None:
        san = [*san, x509.DNSName(PLACEHOLDER_NAME)]
        patches.append((PLACEHOLDER_DER, patch))
    assume(all(getattr(name, "value", None) != PLACEHOLDER_NAME for name in san[:-1]))
    der, key = device_certificate(
        manufacturer,
        san=san or None,
        extensions=extensions,
        patches=patches,
        basic_constraints_ca=ca,
        ekus=ekus,
    )
    directory = tmp_path_factory.mktemp("prop-client")
    cert_path, key_path = write_credential(directory, "client", der, key)
    try:
        context = client_context(estkit_server.paths.ca_certificates, cert=cert_path, key=key_path)
    except ssl.SSLError:
        assume(False)  # OpenSSL will not even send it (a client-side refusal)
        return
    csr = hostile_csr(KEY, [(CN, "prop-client.example.com")])
    try:
        response = _send(estkit_server, base64.encodebytes(csr), context)
    except (ConnectionError, http.client.HTTPException, ssl.SSLError, OSError):
        # Closed during or right after the handshake (table row N38): no answer, never a 5xx.
        assert patch == NON_ASCII_DNS_DER or ca, "only known closes are expected"
        event("connection closed")
        return
    event(f"status {response.status}")
    assert response.status in (200, 403), response.text
    assert "Traceback" not in response.text
    if response.status == 200:
        issued = certificate_from_response(response.body)
        assert issued.subject == x509.Name(
            [
                x509.NameAttribute(CN, "prop-client.example.com"),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, "HOSTILE-1"),
            ]
        )
        names = issued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert list(names) == [x509.DNSName("prop-client.example.com")]
        assert patch is None and not (private and private[1]) and not ca
        client_usable = {
            ExtendedKeyUsageOID.CLIENT_AUTH,
            ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
        }
        assert ekus is None or client_usable.intersection(ekus)
