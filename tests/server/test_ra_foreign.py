"""RA mode against a foreign upstream (issue 21 item 4): a small EST server that is not estkit,
knows nothing of [ra], requires a TLS client certificate, wants HTTP Basic, and closes the
connection after its 401 challenge (the C reference server's habit). The RA must get through
with RFC 7030 alone."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from client.quirky import Canned, QuirkyServer, Recorded
from conftest import EstkitTestServer
from estkit.ca.authority import CertificateAuthority
from estkit.ca.profiles import Profile
from estkit.client import ClientCredentials, CsrSpec, EstClient, RetryPolicy
from estkit.fileio import replace_credential_pair
from estkit.protocol.certs import certificates_to_pem, is_self_signed, is_signed_by
from estkit.protocol.csr import build_csr, decode_csr_body, describe_csr
from estkit.protocol.keys import generate_private_key, private_key_to_pem
from estkit.protocol.pkcs7 import encode_certs_only_body
from estkit.server.datadir import DEMO_DEVICE_SERIAL
from estkit.server.ra import init_ra_data_dir
from estkit.server.runner import start_server_thread

EST = "/.well-known/est"
USER, PASSWORD = "ra-user", "ra-secret"
CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"


class Foreign:
    def __init__(self, directory: Path) -> None:
        self.ca = CertificateAuthority.create(directory / "ca", key_type="p256")
        self.dir = directory
        self.chain = [c for c in self.ca.chain if not is_self_signed(c)]

    def tls_pair(self, name: str) -> tuple[Path, Path]:
        key = generate_private_key("p256")
        cert = self.ca.issue_tls_server_certificate(
            key.public_key(), ["localhost"], validity_seconds=86400
        )
        paths = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        replace_credential_pair(
            paths[0], certificates_to_pem([cert, *self.chain]), paths[1], private_key_to_pem(key)
        )
        return paths

    def client_pair(self, name: str) -> tuple[Path, Path]:
        key = generate_private_key("p256")
        info = describe_csr(build_csr(key, common_name=name))
        cert = self.ca.issue(info, Profile(auth_mode="rfc7030", ekus=("clientAuth",)))
        paths = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        replace_credential_pair(
            paths[0], certificates_to_pem([cert, *self.chain]), paths[1], private_key_to_pem(key)
        )
        return paths

    def enroll(self, request: Recorded) -> Canned:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {token}":
            return Canned(401, [("WWW-Authenticate", 'Basic realm="foreign"')], b"auth\n")
        info = describe_csr(decode_csr_body(request.body))
        cert = self.ca.issue(info, Profile(auth_mode="rfc7030"))
        return Canned(200, [("Content-Type", CERTS_ONLY)], encode_certs_only_body([cert]))


@pytest.fixture
def foreign(tmp_path: Path) -> Iterator[tuple[Foreign, QuirkyServer]]:
    pki = Foreign(tmp_path / "foreign")
    chain, key = pki.tls_pair("upstream-tls")
    server = QuirkyServer(
        chain,
        key,
        {
            f"{EST}/cacerts": Canned(
                200, [("Content-Type", CERTS_ONLY)], encode_certs_only_body(pki.ca.cacerts)
            ),
            f"{EST}/simpleenroll": pki.enroll,
        },
        client_ca=pki.ca.root_path,
        require_client_cert=True,
    )
    server.drop_after_challenge = "header"  # 401, Connection: close
    try:
        yield pki, server
    finally:
        server.stop()


def test_ra_enrolls_through_a_foreign_upstream_with_basic_after_close(
    foreign: tuple[Foreign, QuirkyServer], tmp_path: Path
) -> None:
    pki, server = foreign
    ra_cert, ra_key = pki.client_pair("ra")
    tls_cert, tls_key = pki.tls_pair("ra-tls")
    paths = init_ra_data_dir(
        tmp_path / "ra",
        upstream_url=f"https://localhost:{server.port}",
        upstream_trust=pki.ca.root_path,
        ra_certificate=ra_cert,
        ra_key=ra_key,
        upstream_user=USER,
        upstream_password=PASSWORD,
        tls_certificate=tls_cert,
        tls_key=tls_key,
    )
    assert (paths.data_dir / "upstream" / "password").stat().st_mode & 0o077 == 0
    ra = EstkitTestServer(running=start_server_thread(paths.data_dir), paths=paths)
    try:
        device = EstClient(
            ra.url,
            trust=[pki.ca.root_path],
            credentials=ClientCredentials.from_files(paths.device_certificate, paths.device_key),
            retry=RetryPolicy(max_attempts=1),
        )
        spec = CsrSpec(
            key=generate_private_key("p256"),
            common_name="cam-7.example.com",
            dns_names=("cam-7.example.com",),
            serial_number=DEMO_DEVICE_SERIAL,
        )
        with device:
            result = device.simpleenroll(spec, pop=True)
    finally:
        ra.stop()
    assert is_signed_by(result.certificate, pki.ca.issuer_certificate)
    enrolls = [r for r in server.requests if r.path == f"{EST}/simpleenroll"]
    # First without credentials (401, connection closed), then Basic on a new connection.
    assert [("authorization" in r.headers) for r in enrolls] == [False, True]
    assert enrolls[0].connection_id != enrolls[1].connection_id
    # Every request carried the RA certificate, and the CSR went through unchanged.
    ra_der = (
        ClientCredentials.from_files(ra_cert, ra_key)
        .chain[0]
        .public_bytes(serialization.Encoding.DER)
    )
    assert all(r.peer_certificate == ra_der for r in enrolls)
    forwarded = decode_csr_body(enrolls[1].body)
    assert forwarded.public_key() == spec.key.public_key()
    assert forwarded.is_signature_valid
