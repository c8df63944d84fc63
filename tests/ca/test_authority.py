"""Creating and loading the CA, its on-disk layout, CA key types, the server's own TLS
certificates (used in a real TLS handshake with curl) and the demo manufacturer CA."""

from __future__ import annotations

import json
import ssl
import stat
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from estkit.ca import (
    CaError,
    CaExistsError,
    CaNotFoundError,
    CertificateAuthority,
    ManufacturerCA,
    Profile,
    RevokedEntry,
    create_manufacturer_ca,
    issue_device_certificate,
)
from estkit.ca.authority import ISSUING_CA_VALIDITY_SECONDS, ROOT_CA_VALIDITY_SECONDS
from estkit.protocol import (
    PrivateKey,
    build_csr,
    certificates_to_pem,
    generate_private_key,
    private_key_to_pem,
)

from .conftest import OpenSSL

try:
    from tests.system_packages import ensure_program
except ModuleNotFoundError:
    from system_packages import ensure_program  # type: ignore[no-redef]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_create_writes_the_layout_with_private_keys_0600(tmp_path: Path) -> None:
    directory = tmp_path / "ca"
    authority = CertificateAuthority.create(directory, key_type="p256")
    pointer = json.loads((directory / "authority.json").read_text())
    assert pointer == {"format": 1, "generation": "g1"}
    generation = directory / "generations" / "g1"
    for key_file in ("root.key", "issuing.key"):
        assert _mode(generation / key_file) == 0o600
    assert _mode(generation) == 0o700
    assert x509.load_pem_x509_certificate((directory / "root.pem").read_bytes()) == (
        authority.root_certificate
    )
    bundle = x509.load_pem_x509_certificates((directory / "cacerts.pem").read_bytes())
    assert bundle == authority.cacerts == [authority.root_certificate, authority.issuer_certificate]
    assert x509.load_pem_x509_certificates((directory / "chain.pem").read_bytes()) == (
        authority.chain
    )
    assert not list((directory / "generations").glob(".*tmp"))


@pytest.mark.parametrize(
    ("key_type", "hash_type", "key_class"),
    [
        ("p256", hashes.SHA256, ec.EllipticCurvePrivateKey),
        ("p384", hashes.SHA384, ec.EllipticCurvePrivateKey),
        ("rsa2048", hashes.SHA256, rsa.RSAPrivateKey),
        ("rsa3072", hashes.SHA256, rsa.RSAPrivateKey),
    ],
)
def test_ca_key_types_and_ca_certificate_extensions(
    key_type: str, hash_type: type, key_class: type, tmp_path: Path, openssl: OpenSSL
) -> None:
    authority = CertificateAuthority.create(tmp_path / key_type, key_type=key_type)
    root, issuing = authority.root_certificate, authority.issuer_certificate
    assert isinstance(authority._issuer_key, key_class)
    for cert, path_length, years in ((root, None, 20), (issuing, 0, 10)):
        assert isinstance(cert.signature_hash_algorithm, hash_type)
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert basic.critical and basic.value.ca and basic.value.path_length == path_length
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign and usage.crl_sign and not usage.key_encipherment
        cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert timedelta(days=365 * years) <= lifetime <= timedelta(days=365 * years, hours=2)
    assert root.subject.rfc4514_string() == "CN=estkit Root CA"
    assert issuing.subject.rfc4514_string() == "CN=estkit Issuing CA"
    aki = issuing.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    root_ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest
    result = openssl.verify(issuing, roots=[root])
    assert result.returncode == 0, result.stderr
    assert ROOT_CA_VALIDITY_SECONDS == 20 * 365 * 86400
    assert ISSUING_CA_VALIDITY_SECONDS == 10 * 365 * 86400


def test_load_returns_the_same_ca_and_issues_with_the_same_key(
    tmp_path: Path, subject_keys: dict[str, PrivateKey]
) -> None:
    created = CertificateAuthority.create(tmp_path / "ca", key_type="p256")
    loaded = CertificateAuthority.load(tmp_path / "ca")
    assert loaded.cacerts == created.cacerts
    assert loaded.generation == created.generation == "g1"
    cert = loaded.issue(build_csr(subject_keys["p256"], common_name="l.nmos.test"), Profile())
    cert.verify_directly_issued_by(created.issuer_certificate)


def test_create_refuses_to_replace_an_existing_ca_unless_forced(tmp_path: Path) -> None:
    first = CertificateAuthority.create(tmp_path / "ca", key_type="p256")
    with pytest.raises(CaExistsError, match=r"already exists in .*refusing") as refused:
        CertificateAuthority.create(tmp_path / "ca", key_type="p256")
    assert refused.value.params == ("force",) and "old keys are kept" in (refused.value.hint or "")
    second = CertificateAuthority.create(tmp_path / "ca", key_type="p256", force=True)
    assert second.generation == "g2"
    assert second.root_certificate != first.root_certificate
    assert (tmp_path / "ca" / "generations" / "g1" / "root.key").exists()  # never deleted
    assert CertificateAuthority.load(tmp_path / "ca").root_certificate == second.root_certificate
    # A forced new CA is not a rollover: no cross certificates, no old root served.
    assert second.cacerts == [second.root_certificate, second.issuer_certificate]


def test_load_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(CaNotFoundError, match=r"no certificate authority in .*estkit server init"):
        CertificateAuthority.load(tmp_path / "nothing")
    CertificateAuthority.create(tmp_path / "ca", key_type="p256")
    generation = tmp_path / "ca" / "generations" / "g1"
    (generation / "issuing.key").write_bytes(private_key_to_pem(generate_private_key("p256")))
    with pytest.raises(CaError, match="does not hold the private key of the certificate"):
        CertificateAuthority.load(tmp_path / "ca")
    (tmp_path / "ca" / "authority.json").write_text('{"format": 99}')
    with pytest.raises(CaError, match="unsupported format"):
        CertificateAuthority.load(tmp_path / "ca")


def test_unknown_ca_key_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CaError, match="unknown CA key type 'ed25519'; use one of"):
        CertificateAuthority.create(tmp_path / "ca", key_type="ed25519")


def test_ca_without_issuing_ca_signs_leaves_with_the_root(
    tmp_path: Path, subject_keys: dict[str, PrivateKey], openssl: OpenSSL
) -> None:
    authority = CertificateAuthority.create(tmp_path / "ca", key_type="p256", with_issuing_ca=False)
    assert authority.chain == [authority.root_certificate]
    assert authority.cacerts == [authority.root_certificate]
    assert authority.issuer_certificate == authority.root_certificate
    cert = authority.issue(build_csr(subject_keys["p256"], common_name="d.nmos.test"), Profile())
    assert openssl.verify(cert, roots=[authority.root_certificate]).returncode == 0


# ----- the server's own TLS certificates, in a real handshake -----------------------------------


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        peer = self.connection.getpeercert()
        subject = dict(item[0] for item in peer["subject"]) if peer else {}
        body = f"hello {subject.get('commonName', '?')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tls_server(tmp_path: Path, ca_p384: CertificateAuthority) -> Iterator:
    """Start an HTTPS server on 127.0.0.1 with a given key/certificate; stops at teardown."""
    servers: list[ThreadingHTTPServer] = []

    def start(key: PrivateKey, cert: x509.Certificate) -> int:
        chain_path = tmp_path / f"server-{len(servers)}.pem"
        key_path = tmp_path / f"server-{len(servers)}.key"
        chain_path.write_bytes(certificates_to_pem([cert, *ca_p384.chain[:-1]]))
        key_path.write_bytes(private_key_to_pem(key))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain_path, key_path)
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(
            cadata=certificates_to_pem([ca_p384.root_certificate]).decode()
        )
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("server_key_type", ["rsa2048", "p256"])
def test_tls_server_certificate_works_with_curl_and_a_client_certificate(
    server_key_type: str,
    subject_keys: dict[str, PrivateKey],
    ca_p384: CertificateAuthority,
    tls_server,
    tmp_path: Path,
    openssl: OpenSSL,
) -> None:
    curl = ensure_program("curl", "curl")
    server_key = subject_keys[server_key_type]
    server_cert = ca_p384.issue_tls_server_certificate(
        server_key.public_key(), ["localhost", "127.0.0.1", "::1"], validity_seconds=86400
    )
    san = server_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    eku = server_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert server_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"
    checked = openssl.verify(
        server_cert,
        roots=[ca_p384.root_certificate],
        untrusted=[ca_p384.issuer_certificate],
        extra=["-purpose", "sslserver", "-verify_ip", "127.0.0.1"],
    )
    assert checked.returncode == 0, checked.stderr

    # A node certificate issued from a CSR authenticates as TLS client (EKU clientAuth, S7).
    client_key = subject_keys["p384"]
    client_cert = ca_p384.issue(build_csr(client_key, common_name="node.nmos.test"), Profile())
    client_chain = tmp_path / "client.pem"
    client_chain.write_bytes(certificates_to_pem([client_cert, ca_p384.issuer_certificate]))
    (tmp_path / "client.key").write_bytes(private_key_to_pem(client_key))
    root = tmp_path / "root.pem"
    root.write_bytes(certificates_to_pem([ca_p384.root_certificate]))

    port = tls_server(server_key, server_cert)
    for url, extra in (
        (f"https://127.0.0.1:{port}/", []),
        (f"https://localhost:{port}/", ["--resolve", f"localhost:{port}:127.0.0.1"]),
    ):
        result = subprocess.run(
            [
                curl,
                "--silent",
                "--show-error",
                "--cacert",
                str(root),
                "--cert",
                str(client_chain),
                "--key",
                str(tmp_path / "client.key"),
                *extra,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == "hello node.nmos.test\n"


def test_tls_server_certificate_refuses_bad_host_names(ca_p384: CertificateAuthority) -> None:
    key = generate_private_key("p256")
    with pytest.raises(CaError, match="neither a DNS host name nor an IP address"):
        ca_p384.issue_tls_server_certificate(key, ["bad host!"], validity_seconds=60)
    with pytest.raises(CaError, match="at least one host name"):
        ca_p384.issue_tls_server_certificate(key, [], validity_seconds=60)


# ----- the demo manufacturer ------------------------------------------------------------------


def test_manufacturer_ca_and_device_certificate(tmp_path: Path, openssl: OpenSSL) -> None:
    manufacturer = create_manufacturer_ca(tmp_path / "manufacturer")
    assert _mode(manufacturer.key_path) == 0o600
    ca_cert = manufacturer.certificate
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca_life = ca_cert.not_valid_after_utc - ca_cert.not_valid_before_utc
    assert ca_life >= timedelta(days=30 * 365)

    device = issue_device_certificate(manufacturer, device_serial="SN-000123")
    cert = device.certificate
    assert cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "SN-000123"
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "estkit-device-SN-000123"
    )
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= timedelta(days=30 * 365)
    assert cert.not_valid_after_utc <= ca_cert.not_valid_after_utc
    client = openssl.verify(cert, roots=[ca_cert], extra=["-purpose", "sslclient"])
    assert client.returncode == 0, client.stderr
    server = openssl.verify(cert, roots=[ca_cert], extra=["-purpose", "sslserver"])
    assert server.returncode != 0  # a factory identity, not a server certificate

    cert_path, key_path = tmp_path / "device" / "device.pem", tmp_path / "device" / "device.key"
    device.write(cert_path, key_path)
    assert _mode(key_path) == 0o600
    assert x509.load_pem_x509_certificates(cert_path.read_bytes()) == [cert, ca_cert]

    reloaded = ManufacturerCA.load(tmp_path / "manufacturer")
    assert reloaded.certificate == ca_cert
    second = issue_device_certificate(reloaded, device_serial="SN-2", key_type="rsa2048")
    assert isinstance(second.private_key, rsa.RSAPrivateKey)
    second.certificate.verify_directly_issued_by(ca_cert)


def test_manufacturer_crl_verifies_and_revokes(tmp_path: Path, openssl: OpenSSL) -> None:
    manufacturer = create_manufacturer_ca(tmp_path / "manufacturer", key_type="p256")
    revoked = issue_device_certificate(manufacturer, device_serial="SN-BAD")
    good = issue_device_certificate(manufacturer, device_serial="SN-GOOD")
    crl_der = manufacturer.build_crl(
        [
            RevokedEntry(
                revoked.certificate.serial_number,
                revoked.certificate.not_valid_before_utc,
                "keyCompromise",
            )
        ]
    )
    crl_pem = tmp_path / "manufacturer.crl.pem"
    openssl.run(
        "crl", "-inform", "DER", "-in", _write(tmp_path / "m.crl", crl_der), "-out", crl_pem
    )
    ca_file = openssl.write_pem([manufacturer.certificate])
    assert "verify OK" in openssl.run("crl", "-in", crl_pem, "-CAfile", ca_file, "-noout").stderr
    bad = openssl.verify(
        revoked.certificate,
        roots=[manufacturer.certificate],
        extra=["-crl_check", "-CRLfile", str(crl_pem)],
    )
    assert bad.returncode != 0 and "certificate revoked" in bad.stdout + bad.stderr
    ok = openssl.verify(
        good.certificate,
        roots=[manufacturer.certificate],
        extra=["-crl_check", "-CRLfile", str(crl_pem)],
    )
    assert ok.returncode == 0, ok.stderr


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
