"""A tiny PKI for the purpose-built faulty EST servers: EST root, TLS certificates, manufacturer.

Why not the estkit CA: the faulty servers must be independent of the code they help judge, and
their certificates must be bendable (a wildcard server name, a missing EKU) in ways a correct CA
refuses to produce.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from estkit.fileio import write_file_atomic, write_private_file_atomic
from estkit.protocol import certificates_to_pem, private_key_to_pem

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

SERVER_NAME = "est.fake.test"
DEVICE_SERIAL = "FAKE-DEVICE-0001"
ISSUED_VALIDITY = timedelta(days=90)
BACKDATE = timedelta(minutes=5)


def _name(common_name: str, *, serial: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if serial:
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial))
    return x509.Name(attributes)


def _key_usage(*, ca: bool, rsa_key: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=rsa_key and not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def sign(
    subject: x509.Name,
    public_key: object,
    issuer: x509.Name,
    issuer_key: PrivateKey,
    *,
    ca: bool = False,
    san: x509.SubjectAlternativeName | None = None,
    ekus: tuple[x509.ObjectIdentifier, ...] = (),
    validity: timedelta = ISSUED_VALIDITY,
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            _key_usage(ca=ca, rsa_key=isinstance(public_key, rsa.RSAPublicKey)), critical=True
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key),  # type: ignore[arg-type]
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class FakePki:
    directory: Path
    root_key: PrivateKey
    root: x509.Certificate
    maker_key: PrivateKey
    maker: x509.Certificate
    device_key: PrivateKey
    device: x509.Certificate

    @property
    def cacert(self) -> Path:
        return self.directory / "cacert.pem"

    @property
    def device_cert(self) -> Path:
        return self.directory / "device.pem"

    @property
    def device_key_path(self) -> Path:
        return self.directory / "device.key"

    @property
    def client_roots_pem(self) -> str:
        return certificates_to_pem([self.maker, self.root]).decode("ascii")

    def issue(
        self,
        public_key: object,
        subject: x509.Name,
        san: x509.SubjectAlternativeName | None,
        ekus: tuple[x509.ObjectIdentifier, ...],
    ) -> x509.Certificate:
        return sign(subject, public_key, self.root.subject, self.root_key, san=san, ekus=ekus)

    def server_pair(
        self, kind: str, names: tuple[str, ...], directory: Path, *, self_signed: bool = False
    ) -> tuple[Path, Path]:
        """A TLS server certificate (RSA or ECDSA) for ``names``, written to ``directory``."""
        key: PrivateKey = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if kind == "rsa"
            else ec.generate_private_key(ec.SECP256R1())
        )
        san = x509.SubjectAlternativeName([x509.DNSName(name) for name in names])
        subject, ekus = _name(names[0]), (ExtendedKeyUsageOID.SERVER_AUTH,)
        if self_signed:
            cert = sign(subject, key.public_key(), subject, key, san=san, ekus=ekus)
        else:
            cert = self.issue(key.public_key(), subject, san, ekus)
        cert_path, key_path = directory / f"tls-{kind}.pem", directory / f"tls-{kind}.key"
        write_file_atomic(cert_path, certificates_to_pem([cert]))
        write_private_file_atomic(key_path, private_key_to_pem(key))
        return cert_path, key_path


def make_pki(directory: Path) -> FakePki:
    directory.mkdir(parents=True, exist_ok=True)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name("Fake EST Root CA")
    root = sign(root_name, root_key.public_key(), root_name, root_key, ca=True,
                validity=timedelta(days=3650))  # fmt: skip
    maker_key = ec.generate_private_key(ec.SECP256R1())
    maker_name = _name("Fake Manufacturer CA")
    maker = sign(maker_name, maker_key.public_key(), maker_name, maker_key, ca=True,
                 validity=timedelta(days=3650))  # fmt: skip
    device_key = ec.generate_private_key(ec.SECP256R1())
    device = sign(
        _name("fake-device", serial=DEVICE_SERIAL),
        device_key.public_key(),
        maker_name,
        maker_key,
        ekus=(ExtendedKeyUsageOID.CLIENT_AUTH,),
        validity=timedelta(days=3650),
    )
    pki = FakePki(directory, root_key, root, maker_key, maker, device_key, device)
    write_file_atomic(pki.cacert, certificates_to_pem([root]))
    write_file_atomic(pki.device_cert, certificates_to_pem([device, maker]))
    write_private_file_atomic(pki.device_key_path, private_key_to_pem(device_key))
    return pki
