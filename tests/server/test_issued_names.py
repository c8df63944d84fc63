"""Issue 24: what the CA refuses about names, and what it issues instead.

Every row of the bad-input table in docs/security.md ("Issued names and client certificates")
is one case here, sent with curl over real TLS to the session server: the status, the message
(in the response and in the server's audit event) and what the store holds afterwards (no new
certificate for a refusal; for a 200, a certificate whose subject and SAN are exactly the
CA-built ones). ``test_the_doc_table_and_the_test_table_agree`` keeps both tables the same.

Mutants these tests kill: a policy that checks only the first CN (N01, N02); a signer that copies
the CSR subject (N06, N21 and ``test_issued_subject_is_ca_built``); a re-enroll check that
compares only the CN (N24: a SAN-only change is 409); a PoP check that passes a CSR without
challengePassword (N30); names not bound to an enrolled device's certificate (N26, N27).
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from estkit.ca.manufacturer import ManufacturerCA
from estkit.protocol.keys import PrivateKey, generate_private_key

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
from .witness import (
    HttpResult,
    certificate_from_response,
    curl,
    last_event_id,
    last_refusal,
    openssl_csr,
    pkcs7_to_pem,
    run,
    tool,
)

if TYPE_CHECKING:
    from conftest import EstkitTestServer

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
DOC_SECTION = "## Issued names and client certificates"
USER = ["--user", "alice:wonderland", "--anyauth"]
# A client that also has a trusted certificate is never challenged, so the credentials must be
# sent up front (Basic), as such a client would.
USER_PREEMPTIVE = ["--user", "alice:wonderland", "--basic"]
# A certificatePolicies entry whose policy OID is patched into an OCTET STRING: malformed for
# cryptography, ignored by OpenSSL when the client loads it (a broken EKU it refuses to send).
POLICY_OID = x509.ObjectIdentifier("1.3.6.1.4.1.55555.7")
ENROLLED = "node-e.example.com"
CN = NameOID.COMMON_NAME
LONG_LABEL = "a" * 64


@dataclass(frozen=True)
class Context:
    """What a row's CSR may need to know about the server under test."""

    root_cn: str
    issuing_cn: str


CsrMaker = Callable[[PrivateKey, Context], bytes]


def _csr(*attributes: tuple[x509.ObjectIdentifier, str], **kwargs) -> CsrMaker:
    return lambda key, _ctx: hostile_csr(key, list(attributes), **kwargs)


def _cn(value: str, **kwargs) -> CsrMaker:
    return _csr((CN, value), **kwargs)


@dataclass(frozen=True)
class Row:
    id: str
    status: int | None  # None: the connection is closed without an HTTP answer
    message: str
    csr: CsrMaker
    client: str = "device"  # device | enrolled | user | enrolled+user | x400 | edi | dup | ...
    label: str | None = None
    operation: str = "simpleenroll"
    # For a 200: the exact issued subject (RFC 4514); {serial} is the demo device's serialNumber,
    # which NMOS labels copy from the manufacturer certificate (never from the CSR).
    subject: str | None = None
    dns: tuple[str, ...] | None = None  # for a 200: the exact issued DNS SAN entries
    extra: tuple[str, ...] = ()


ROWS = [
    Row(
        "N01",
        400,
        "the CSR subject has 2 common names",
        _csr((CN, "node-a.example.com"), (CN, "*.evil.example"), dns_names=["node-a.example.com"]),
    ),
    Row(
        "N02",
        400,
        "the CSR subject has 2 common names",
        _csr((CN, "node-b.example.com"), (CN, "10.0.0.1")),
    ),
    Row(
        "N03",
        400,
        "is the name of a CA certificate of this server",
        lambda key, ctx: hostile_csr(key, [(CN, ctx.root_cn)]),
    ),
    Row(
        "N04",
        400,
        "is the name of a CA certificate of this server",
        lambda key, ctx: hostile_csr(key, [(CN, ctx.issuing_cn)]),
        client="user",
        label="http",
    ),
    Row(
        "N05",
        400,
        "is the name of a CA certificate of this server",
        lambda key, ctx: hostile_csr(key, [(CN, "n05.example.com")], dns_names=[ctx.root_cn]),
    ),
    Row(
        "N06",
        200,
        "",
        _csr(
            (CN, "node-c.example.com"),
            (NameOID.ORGANIZATION_NAME, "estkit"),
            (NameOID.SERIAL_NUMBER, "SPOOF123"),
        ),
        subject="2.5.4.5={serial},CN=node-c.example.com",
        dns=("node-c.example.com",),
    ),
    Row("N07", 400, "is 5000 characters long", _cn("a" * 5000)),
    Row("N08", 400, "is 65 characters long", _cn("b" * 30 + "." + "c" * 34)),
    Row(
        "N09",
        200,
        "",
        _cn("b" * 30 + "." + "c" * 33),
        subject="2.5.4.5={serial},CN=" + "b" * 30 + "." + "c" * 33,
        dns=("b" * 30 + "." + "c" * 33,),
    ),
    Row("N10", 400, "U+0000", _cn("node\x00.evil.example")),
    Row("N11", 400, "U+202E", _cn("node\u202eliam.example")),
    Row("N12", 400, "U+000A", _cn("n12.example.com", dns_names=["n12.example.com\nevil"])),
    Row(
        "N13",
        400,
        "wildcard name '*.example.com'",
        _cn("n13.example.com", dns_names=["*.example.com"]),
    ),
    Row(
        "N14",
        400,
        "IP address 192.0.2.7 in subjectAltName is not allowed",
        _cn(
            "n14.example.com",
            general_names=[x509.IPAddress(ipaddress.ip_address("192.0.2.7"))],
        ),
    ),
    Row(
        "N15",
        400,
        "is not a valid DNS host name",
        _cn("n15.example.com", dns_names=[LONG_LABEL + ".example.com"]),
    ),
    Row(
        "N16",
        400,
        "is not a valid DNS host name",
        _cn("n16.example.com", dns_names=[".".join(["d" * 63] * 4) + ".example"]),
    ),
    Row(
        "N17",
        400,
        "is not a valid DNS host name",
        _cn("n17.example.com", dns_names=["bad name.example"]),
    ),
    Row("N18", 400, "is not a DNS host name; under an NMOS label", _cn("My Device")),
    Row(
        "N19",
        200,
        "",
        _cn("My Device 42"),
        client="user",
        label="http",
        subject="CN=My Device 42",
        dns=(),
    ),
    Row("N20", 400, "the CSR has neither a common name nor a DNS subjectAltName", _csr()),
    Row(
        "N21",
        200,
        "",
        _cn("n21.example.com", general_names=[x509.RFC822Name("ops@example.com")]),
        subject="2.5.4.5={serial},CN=n21.example.com",
        dns=("n21.example.com",),
    ),
    Row(
        "N22",
        400,
        "the CSR cannot be read",
        _cn(
            "n22.example.com",
            extensions=[
                (x509.UnrecognizedExtension(DUPLICATE_FIRST, b"\x05\x00"), False),
                (x509.UnrecognizedExtension(DUPLICATE_SECOND, b"\x05\x00"), False),
            ],
            patches=[(oid_content(DUPLICATE_SECOND), oid_content(DUPLICATE_FIRST))],
        ),
    ),
    Row(
        "N23",
        400,
        "the CSR cannot be read",
        _cn(
            "n23.example.com",
            dns_names=[PLACEHOLDER_NAME],
            patches=[(PLACEHOLDER_DER, X400_ADDRESS_DER)],
        ),
    ),
    Row(
        "N24",
        409,
        "differ from the certificate being renewed",
        _cn(ENROLLED, dns_names=[ENROLLED, "extra.example.com"]),
        client="enrolled",
        operation="simplereenroll",
    ),
    Row(
        "N25",
        409,
        "differ from the certificate being renewed",
        _cn("renamed.example.com"),
        client="enrolled",
        operation="simplereenroll",
    ),
    Row(
        "N26",
        403,
        "may only ask for that certificate's names",
        _cn("victim.example.com"),
        client="enrolled",
    ),
    Row(
        "N27",
        403,
        "may only ask for that certificate's names",
        _cn(ENROLLED, dns_names=[ENROLLED, "victim.example.com"]),
        client="enrolled",
    ),
    Row(
        "N28",
        200,
        "",
        _cn(ENROLLED),
        client="enrolled",
        subject="2.5.4.5={serial},CN=" + ENROLLED,
        dns=(ENROLLED,),
    ),
    Row(
        "N29",
        200,
        "",
        _cn("n29.example.com"),
        client="enrolled+user",
        label="http",
        subject="CN=n29.example.com",
        dns=("n29.example.com",),
    ),
    Row(
        "N30",
        400,
        "requires proof-of-possession",
        _cn("n30.example.com"),
        label="pop",
        extra=("--tls-max", "1.2"),
    ),
    Row(
        "N31",
        403,
        "a general name in it has a type this server does not handle",
        _cn("n31.example.com"),
        client="x400",
    ),
    Row(
        "N32",
        403,
        "a general name in it has a type this server does not handle",
        _cn("n32.example.com"),
        client="edi",
    ),
    Row("N33", 403, "it carries an extension twice", _cn("n33.example.com"), client="dup"),
    Row(
        "N34",
        403,
        "a name, extension or key in it is malformed",
        _cn("n34.example.com"),
        client="badpolicy",
    ),
    Row(
        "N35",
        403,
        "which this server does not recognise",
        _cn("n35.example.com"),
        client="critical",
    ),
    Row(
        "N36",
        400,
        "the CSR cannot be read",
        _cn(
            "n36.example.com",
            dns_names=[PLACEHOLDER_NAME],
            patches=[(PLACEHOLDER_DER, NON_ASCII_DNS_DER)],
        ),
    ),
    Row("N38", None, "", _cn("n38.example.com"), client="badsan"),
    Row(
        "N39",
        403,
        "serverkeygen: a client authenticated with a certificate of this CA may only ask",
        _cn("victim.example.com"),
        client="enrolled",
        operation="serverkeygen",
    ),
    Row(
        "N37",
        403,
        "New names need the device's manufacturer certificate or an HTTP user",
        _cn("n37.example.com"),
        client="enrolled",
        label="http",
    ),
]


# --- clients ------------------------------------------------------------------------------------


def _hostile_device(manufacturer: ManufacturerCA, kind: str) -> tuple[bytes, PrivateKey]:
    placeholder = [x509.DNSName(PLACEHOLDER_NAME)]
    if kind == "x400":
        return device_certificate(
            manufacturer, san=placeholder, patches=[(PLACEHOLDER_DER, X400_ADDRESS_DER)]
        )
    if kind == "edi":
        return device_certificate(
            manufacturer, san=placeholder, patches=[(PLACEHOLDER_DER, EDI_PARTY_DER)]
        )
    if kind == "badsan":
        return device_certificate(
            manufacturer, san=placeholder, patches=[(PLACEHOLDER_DER, NON_ASCII_DNS_DER)]
        )
    if kind == "dup":
        return device_certificate(
            manufacturer,
            extensions=[
                (x509.UnrecognizedExtension(DUPLICATE_FIRST, b"\x05\x00"), False),
                (x509.UnrecognizedExtension(DUPLICATE_SECOND, b"\x05\x00"), False),
            ],
            patches=[(oid_content(DUPLICATE_SECOND), oid_content(DUPLICATE_FIRST))],
        )
    if kind == "badpolicy":
        policy = x509.CertificatePolicies([x509.PolicyInformation(POLICY_OID, None)])
        oid_der = oid_content(POLICY_OID)
        return device_certificate(
            manufacturer,
            extensions=[(policy, False)],
            patches=[(oid_der, b"\x04" + oid_der[1:])],
        )
    assert kind == "critical"
    private = x509.ObjectIdentifier("1.3.6.1.4.1.55555.9")
    return device_certificate(
        manufacturer, extensions=[(x509.UnrecognizedExtension(private, b"\x05\x00"), True)]
    )


@pytest.fixture(scope="module")
def clients(
    estkit_server: EstkitTestServer, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, Path]]:
    """Client credentials by row ``client`` name (the enrolled one got its certificate here)."""
    directory = tmp_path_factory.mktemp("issued-names")
    paths = estkit_server.paths
    result = {"device": (paths.device_certificate, paths.device_key)}
    csr = openssl_csr(directory, cn=ENROLLED)
    response = curl(
        estkit_server.est_url("simpleenroll"),
        cacert=paths.ca_certificates,
        cert=paths.device_certificate,
        key=paths.device_key,
        data=csr.b64,
        workdir=directory,
    )
    assert response.status == 200, response.text
    result["enrolled"] = (pkcs7_to_pem(response.body, directory), csr.key)
    manufacturer = ManufacturerCA.load(paths.manufacturer_ca.parent)
    for kind in ("x400", "edi", "badsan", "badpolicy", "dup", "critical"):
        der, key = _hostile_device(manufacturer, kind)
        result[kind] = write_credential(directory, kind, der, key)
    return result


def _context(server: EstkitTestServer) -> Context:
    chain = x509.load_pem_x509_certificates(server.paths.ca_certificates.read_bytes())
    root = x509.load_pem_x509_certificate(server.paths.root_ca.read_bytes())
    issuing = next(cert for cert in chain if cert.subject != cert.issuer)

    def cn(cert: x509.Certificate) -> str:
        return str(cert.subject.get_attributes_for_oid(CN)[0].value)

    return Context(root_cn=cn(root), issuing_cn=cn(issuing))


def _device_serial(server: EstkitTestServer) -> str:
    device = x509.load_pem_x509_certificate(server.paths.device_certificate.read_bytes())
    return str(device.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value)


def _send(
    server: EstkitTestServer, row: Row, clients: dict[str, tuple[Path, Path]], directory: Path
) -> HttpResult:
    key = generate_private_key("p256")
    body = directory / f"{row.id}.b64"
    body.write_bytes(base64.encodebytes(row.csr(key, _context(server))))
    extra = list(row.extra)
    cert = key_path = None
    if row.client == "user":
        extra += USER
    elif row.client.endswith("+user"):
        extra += USER_PREEMPTIVE
    kind = row.client.replace("+user", "")
    if kind != "user":
        cert, key_path = clients[kind]
    if row.status is None:
        result = run(
            [
                tool("curl"),
                "-sS",
                "--cacert",
                server.paths.ca_certificates,
                "--cert",
                cert or "",
                "--key",
                key_path or "",
                "--data-binary",
                f"@{body}",
                "-H",
                "Content-Type: application/pkcs10",
                server.est_url(row.operation, row.label),
            ],
            check=False,
        )
        assert result.returncode != 0 and not result.stdout, result.stdout
        return HttpResult(status=0, body=result.stderr)
    return curl(
        server.est_url(row.operation, row.label),
        cacert=server.paths.ca_certificates,
        cert=cert,
        key=key_path,
        data=body,
        extra=extra,
        workdir=directory,
    )


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input_row(
    row: Row,
    estkit_server: EstkitTestServer,
    clients: dict[str, tuple[Path, Path]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    store = estkit_server.open_store()
    before_event = last_event_id(store)
    issued_before = len(store.list_issued())
    response = _send(estkit_server, row, clients, tmp_path)
    if row.status is None:
        # Python's ssl cannot decode the certificate for asyncio's handshake bookkeeping and
        # closes the connection: no answer, nothing stored, and the server keeps serving.
        assert len(store.list_issued()) == issued_before
        healthy = curl(
            estkit_server.est_url("cacerts"),
            cacert=estkit_server.paths.ca_certificates,
            content_type=None,
            workdir=tmp_path,
        )
        assert healthy.status == 200
        # At most one rate-limited line saying why (it may be folded into an earlier line's
        # count), never a traceback: asyncio's default handler would log one with exc_info.
        tracebacks = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
        assert not tracebacks, "a traceback was logged"
        return
    assert response.status == row.status, response.text
    assert "Traceback" not in response.text
    if row.status >= 400:
        assert row.message in response.text, response.text
        event = last_refusal(store, before_event)
        assert event.fields["status"] == row.status
        assert row.message in event.message
        assert len(store.list_issued()) == issued_before, "a refused request stored a certificate"
        return
    certificate = certificate_from_response(response.body)
    assert row.subject is not None
    subject = row.subject.format(serial=_device_serial(estkit_server))
    assert certificate.subject.rfc4514_string() == subject
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        issued_names = list(san)
    except x509.ExtensionNotFound:
        issued_names = []
    assert issued_names == [x509.DNSName(name) for name in row.dns or ()]
    record = store.get_issued(format(certificate.serial_number, "x"))
    assert record is not None and record.subject == subject


# --- the doc table and this table -----------------------------------------------------------------


def _doc_rows() -> dict[str, tuple[int, str]]:
    text = DOC.read_text(encoding="utf-8")
    assert DOC_SECTION in text, f"{DOC} lacks the section {DOC_SECTION!r}"
    section = text.split(DOC_SECTION, 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\|\s*(N\d\d)\s*\|[^|]*\|\s*(\d{3}|none)\s*\|\s*(.*?)\s*\|", line)
        if match:
            message = match.group(3)
            quoted = re.search(r"`([^`]*)`", message)
            status = None if match.group(2) == "none" else int(match.group(2))
            rows[match.group(1)] = (status, quoted.group(1) if quoted else "")
    return rows


def test_the_doc_table_and_the_test_table_agree() -> None:
    documented = _doc_rows()
    tested = {row.id: (row.status, row.message) for row in ROWS}
    assert documented == tested
    assert len(tested) >= 25


# --- more than one row can show -------------------------------------------------------------------


def test_issued_subject_is_ca_built_with_profile_attributes_from_the_manufacturer_certificate(
    fresh_server, tmp_path: Path
) -> None:
    """subject_from_client_certificate = ["serialNumber"]: the device serial comes from the
    authenticated manufacturer certificate; the CSR's serialNumber and O are never issued."""
    server = fresh_server(serial={"subject_from_client_certificate": ["serialNumber"]})
    device = x509.load_pem_x509_certificate(server.paths.device_certificate.read_bytes())
    device_serial = device.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value
    key = generate_private_key("p256")
    body = tmp_path / "csr.b64"
    body.write_bytes(
        base64.encodebytes(
            hostile_csr(
                key,
                [
                    (CN, "serial.example.com"),
                    (NameOID.SERIAL_NUMBER, "SPOOF123"),
                    (NameOID.ORGANIZATION_NAME, "estkit"),
                ],
            )
        )
    )
    response = curl(
        server.est_url("simpleenroll", "serial"),
        cacert=server.paths.ca_certificates,
        cert=server.paths.device_certificate,
        key=server.paths.device_key,
        data=body,
        workdir=tmp_path,
    )
    assert response.status == 200, response.text
    issued = certificate_from_response(response.body)
    assert issued.subject == x509.Name(
        [
            x509.NameAttribute(CN, "serial.example.com"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, str(device_serial)),
        ]
    )
    assert "SPOOF123" not in issued.subject.rfc4514_string()


def test_binding_can_be_turned_off_per_label(fresh_server, tmp_path: Path) -> None:
    """bind_names_to_client_certificate = false restores the old behaviour, for one label."""
    server = fresh_server(free={"bind_names_to_client_certificate": False})
    csr = openssl_csr(tmp_path, cn="first.example.com")
    first = curl(
        server.est_url("simpleenroll", "free"),
        cacert=server.paths.ca_certificates,
        cert=server.paths.device_certificate,
        key=server.paths.device_key,
        data=csr.b64,
        workdir=tmp_path,
    )
    assert first.status == 200, first.text
    enrolled = pkcs7_to_pem(first.body, tmp_path)
    other = openssl_csr(tmp_path, cn="second.example.com")
    for label, status in (("free", 200), (None, 403)):
        response = curl(
            server.est_url("simpleenroll", label),
            cacert=server.paths.ca_certificates,
            cert=enrolled,
            key=csr.key,
            data=other.b64,
            workdir=tmp_path,
        )
        assert response.status == status, (label, response.text)


def test_serverkeygen_issues_the_vetted_names_for_the_generated_key(
    estkit_server: EstkitTestServer, tmp_path: Path
) -> None:
    """serverkeygen takes the same path: spoofed O/serialNumber are not issued, and the
    certificate certifies the generated key, not the CSR's."""
    key = generate_private_key("p256")
    body = tmp_path / "csr.b64"
    body.write_bytes(
        base64.encodebytes(
            hostile_csr(key, [(CN, "skg.example.com"), (NameOID.SERIAL_NUMBER, "SPOOF9")])
        )
    )
    response = curl(
        estkit_server.est_url("serverkeygen"),
        cacert=estkit_server.paths.ca_certificates,
        cert=estkit_server.paths.device_certificate,
        key=estkit_server.paths.device_key,
        data=body,
        workdir=tmp_path,
    )
    assert response.status == 200, response.text
    from estkit.protocol.serverkeygen import parse_serverkeygen_response

    parts = parse_serverkeygen_response(response.body, response.header("Content-Type") or "")
    certificate = parts.certificates[0]
    assert certificate.subject == x509.Name(
        [
            x509.NameAttribute(CN, "skg.example.com"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, _device_serial(estkit_server)),
        ]
    )
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert certificate.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ) != key.public_key().public_bytes(serialization.Encoding.DER, spki)


def test_client_trust_judges_an_unreadable_certificate_instead_of_raising(
    tmp_path: Path,
) -> None:
    """The 500 of issue 24 row 8 came from ``ClientTrust.check`` raising
    UnsupportedGeneralNameType; it must return a verdict with the reason."""
    import datetime as dt

    from estkit.ca.manufacturer import create_manufacturer_ca
    from estkit.server.clientauth import ClientTrust, TrustGroup

    manufacturer = create_manufacturer_ca(tmp_path / "m", key_type="p256")
    group = TrustGroup.from_certificates(
        "the manufacturer", "manufacturer", [manufacturer.certificate]
    )
    trust = ClientTrust([group], lambda serial: (False, None))
    now = dt.datetime.now(dt.UTC)
    good, _ = device_certificate(manufacturer)
    assert trust.check(x509.load_der_x509_certificate(good), now).source == "manufacturer"
    for kind, reason in (
        ("x400", "a general name in it has a type this server does not handle"),
        ("dup", "it carries an extension twice"),
        ("critical", "which this server does not recognise"),
    ):
        der, _ = _hostile_device(manufacturer, kind)
        status = trust.check(x509.load_der_x509_certificate(der), now)
        assert status.source == "untrusted" and not status.trusted
        assert reason in status.reason
        assert status.subject is not None and status.fingerprint is not None
