"""A small, self-contained PKI for the quirky fixture servers (root → issuing CA → leaves).

Why not the estkit CA: these fixtures imitate *other* servers, so they are built straight from
``cryptography`` and stay independent of the code under test.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from estkit.protocol import certificates_to_pem, private_key_to_pem

ONE_DAY = datetime.timedelta(days=1)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(
    cn: str,
    key: PrivateKeyTypes,
    *,
    issuer: x509.Certificate | None = None,
    issuer_key: PrivateKeyTypes | None = None,
    days: int = 3650,
) -> x509.Certificate:
    """A CA certificate, self-signed unless an issuer is given."""
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer.subject if issuer else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - ONE_DAY)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    return builder.sign(issuer_key or key, hashes.SHA256())  # type: ignore[arg-type]


def make_leaf(
    public_key: object,
    cn: str | None,
    issuer: x509.Certificate,
    issuer_key: PrivateKeyTypes,
    *,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    days: int = 30,
) -> x509.Certificate:
    """An end-entity certificate with serverAuth + clientAuth (BCP-003-03 S7)."""
    now = _now()
    subject = _name(cn) if cn else x509.Name([])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)  # type: ignore[arg-type]
    )
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]


@dataclass
class QuirkyPki:
    """Root → issuing CA, a TLS server certificate for 127.0.0.1/localhost, a client cert."""

    directory: Path
    root_key: PrivateKeyTypes
    root: x509.Certificate
    issuing_key: PrivateKeyTypes
    issuing: x509.Certificate
    server_key: PrivateKeyTypes
    server_cert: x509.Certificate
    client_key: rsa.RSAPrivateKey
    client_cert: x509.Certificate
    files: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def create(cls, directory: Path, name: str = "Quirky") -> QuirkyPki:
        directory.mkdir(parents=True, exist_ok=True)
        root_key = ec.generate_private_key(ec.SECP256R1())
        root = make_ca(f"{name} Root CA", root_key)
        issuing_key = ec.generate_private_key(ec.SECP256R1())
        issuing = make_ca(f"{name} Issuing CA", issuing_key, issuer=root, issuer_key=root_key)
        server_key = ec.generate_private_key(ec.SECP256R1())
        server_cert = make_leaf(
            server_key.public_key(),
            "localhost",
            issuing,
            issuing_key,
            dns=("localhost",),
            ips=("127.0.0.1", "::1"),
        )
        # RSA, so the server can encrypt a generated key to it (RFC 7030 §4.4.1.2).
        client_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        client_cert = make_leaf(client_key.public_key(), "device-1", issuing, issuing_key)
        pki = cls(
            directory,
            root_key,
            root,
            issuing_key,
            issuing,
            server_key,
            server_cert,
            client_key,
            client_cert,
        )
        pki.files = {
            "root": pki.write("root.pem", certificates_to_pem([root])),
            "issuing": pki.write("issuing.pem", certificates_to_pem([issuing])),
            "server_chain": pki.write("server.pem", certificates_to_pem([server_cert, issuing])),
            "server_key": pki.write("server.key", private_key_to_pem(server_key)),
            "client_chain": pki.write("client.pem", certificates_to_pem([client_cert, issuing])),
            "client_key": pki.write("client.key", private_key_to_pem(client_key)),
        }
        return pki

    def write(self, name: str, data: bytes) -> Path:
        path = self.directory / name
        path.write_bytes(data)
        return path

    def issue(
        self, public_key: object, cn: str | None, dns: tuple[str, ...] = ()
    ) -> x509.Certificate:
        return make_leaf(public_key, cn, self.issuing, self.issuing_key, dns=dns)

    def pem(self, name: str) -> bytes:
        return self.files[name].read_bytes()


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)
