"""Bad-input classes not covered elsewhere (the README's "Bad input" table lists them all).

Each refusal is shown to have reached the server and been refused for the stated reason: the
answer is ``text/plain`` naming the problem, and (for refusals made by the EST handler) the
server recorded a "refused" audit event with the same status.
"""

from __future__ import annotations

import base64
import datetime as dt
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from estkit.ca.authority import CertificateAuthority
from estkit.ca.profiles import Profile
from estkit.ca.store import CertificateStore, open_store
from estkit.protocol import certificates_to_pem, private_key_to_pem
from estkit.protocol.limits import MAX_LABEL_LENGTH
from estkit.server.datadir import InitResult, init_data_dir
from estkit.server.runner import RunningServer, start_server_thread

from .support import LOOPBACK, Reply, client_context, enroll, raw_tls, request


@dataclass
class Target:
    running: RunningServer
    paths: InitResult
    store: CertificateStore

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def context(self):  # type: ignore[no-untyped-def]
        return client_context(
            self.paths.ca_certificates, self.paths.device_certificate, self.paths.device_key
        )

    def last_event_id(self) -> int:
        events = self.store.list_events()
        return events[-1].id if events else 0

    def assert_refused(self, reply: Reply, before: int, status: int, *reason: str) -> None:
        """The answer and the server's own audit record agree on status and reason."""
        assert reply.status == status, reply.text
        assert (reply.header("Content-Type") or "").startswith("text/plain"), reply.headers
        assert "Traceback" not in reply.text
        events = self.store.list_events("refused", before)
        assert events, "the server recorded no refusal: the request never reached it"
        assert events[-1].fields["status"] == status
        for fragment in reason:
            assert fragment in reply.text, reply.text
            assert fragment in events[-1].message, events[-1].message


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    paths = init_data_dir(tmp_path_factory.mktemp("bad-input"), key_type="p256")
    with start_server_thread(paths.data_dir) as running:
        store = open_store(paths.database_url)
        try:
            yield Target(running, paths, store)
        finally:
            store.close()


def _csr(
    key: object,
    common_name: str | None = "bad.example.com",
    *,
    extensions: tuple[tuple[x509.ExtensionType, bool], ...] = (),
) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else [])
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = builder.sign(key, algorithm)  # type: ignore[arg-type]
    return csr.public_bytes(serialization.Encoding.DER)


def _b64(der: bytes) -> bytes:
    return base64.encodebytes(der)


P256 = ec.generate_private_key(ec.SECP256R1())


# --- CSR content ------------------------------------------------------------------------------


def test_csr_with_an_invalid_version_field_is_400(target: Target) -> None:
    """Found by fuzz/fuzz_protocol.py: version 35 instead of 0 (v1) used to be a 500."""
    der = bytearray(_csr(P256))
    # CertificationRequestInfo: SEQUENCE { INTEGER version (02 01 00), ... }; find the version.
    position = der.index(b"\x02\x01\x00")
    der[position + 2] = 0x23
    before = target.last_event_id()
    reply = enroll(target.port, target.context, _b64(bytes(der)))
    target.assert_refused(reply, before, 400, "not a usable PKCS#10 CSR")


def test_ed25519_key_is_400(target: Target) -> None:
    before = target.last_event_id()
    reply = enroll(target.port, target.context, _b64(_csr(ed25519.Ed25519PrivateKey.generate())))
    target.assert_refused(reply, before, 400, "unsupported public key type Ed25519")


def test_curve_outside_the_allowed_list_is_400(target: Target) -> None:
    key = ec.generate_private_key(ec.SECP256K1())
    before = target.last_event_id()
    reply = enroll(target.port, target.context, _b64(_csr(key)))
    target.assert_refused(reply, before, 400, "elliptic curve secp256k1 is not accepted")


def test_csr_without_any_name_is_400(target: Target) -> None:
    before = target.last_event_id()
    reply = enroll(target.port, target.context, _b64(_csr(P256, None)))
    target.assert_refused(reply, before, 400, "neither a common name nor a DNS subjectAltName")


def test_certificate_instead_of_a_csr_is_400(target: Target) -> None:
    before = target.last_event_id()
    reply = enroll(target.port, target.context, target.paths.device_certificate.read_bytes())
    target.assert_refused(reply, before, 400, "not a usable PKCS#10 CSR")


def test_empty_body_is_400(target: Target) -> None:
    before = target.last_event_id()
    reply = enroll(target.port, target.context, b"")
    target.assert_refused(reply, before, 400, "body is empty")


def test_csr_asking_for_a_ca_certificate_gets_a_leaf(target: Target) -> None:
    """Extensions a CSR asks for are not copied blindly: CA:true becomes CA:false."""
    der = _csr(P256, extensions=((x509.BasicConstraints(ca=True, path_length=None), True),))
    reply = enroll(target.port, target.context, _b64(der))
    assert reply.status == 200, reply.text
    constraints = reply.certificate().extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.value.ca is False


def test_reenroll_with_an_expired_certificate_of_this_ca_is_403(
    target: Target, tmp_path: Path
) -> None:
    """A certificate we issued (and recorded) that has expired cannot renew itself (E3)."""
    authority = CertificateAuthority.load(target.paths.data_dir / "ca")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.load_der_x509_csr(_csr(key, "expired.example.com"))
    # The CA is backdated an hour: a 60 s certificate issued 30 minutes ago has expired.
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)
    certificate = authority.issue(csr, Profile(validity_seconds=60), now=earlier)
    target.store.record_issued(certificate, operation="simpleenroll", label="", requester=None)
    cert_path, key_path = tmp_path / "expired.pem", tmp_path / "expired.key"
    cert_path.write_bytes(certificates_to_pem([certificate, *authority.chain]))
    key_path.write_bytes(private_key_to_pem(key))
    context = client_context(target.paths.ca_certificates, cert_path, key_path)
    before = target.last_event_id()
    reply = enroll(target.port, context, _b64(csr.public_bytes(serialization.Encoding.DER)),
                   operation="simplereenroll")  # fmt: skip
    target.assert_refused(reply, before, 403, "expired")


# --- HTTP framing -----------------------------------------------------------------------------


def test_compressed_body_is_415(target: Target) -> None:
    """EST bodies are never content-coded; a gzip claim is refused, not decompressed."""
    before = target.last_event_id()
    reply = request(
        target.port,
        "POST",
        "/.well-known/est/simpleenroll",
        target.context,
        body=b"\x1f\x8bnot really gzip",
        headers={"Content-Type": "application/pkcs10", "Content-Encoding": "gzip"},
    )
    target.assert_refused(reply, before, 415, "Content-Encoding gzip")


def _raw_exchange(target: Target, data: bytes) -> bytes:
    with raw_tls(target.port, client_context(target.paths.ca_certificates)) as tls:
        tls.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = tls.recv(65536)
            if not chunk:
                break
            received += chunk
    return received


def _status(answer: bytes) -> int | None:
    """Status code of a raw HTTP/1.x answer (the parser's own errors come as HTTP/1.0)."""
    if not answer.startswith(b"HTTP/1."):
        return None
    return int(answer.split(b" ", 2)[1])


def test_request_smuggling_framing_is_400(target: Target) -> None:
    """Both Content-Length and Transfer-Encoding: refused by the HTTP parser (RFC 9112 6.1)."""
    answer = _raw_exchange(
        target,
        b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/pkcs10\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    assert _status(answer) == 400, answer[:300]
    assert b"Transfer-Encoding can't be present with Content-Length" in answer


def test_invalid_content_length_is_400(target: Target) -> None:
    answer = _raw_exchange(
        target,
        b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/pkcs10\r\nContent-Length: -5\r\n\r\n",
    )
    assert _status(answer) == 400, answer[:300]
    assert b"Invalid character in Content-Length" in answer


def test_too_many_headers_is_400(target: Target) -> None:
    headers = {f"X-Header-{index}": "x" for index in range(200)}
    reply = request(target.port, "GET", "/.well-known/est/cacerts", target.context, headers=headers)
    assert reply.status == 400, reply.text
    assert "Too many headers" in reply.text


def test_plain_http_on_the_tls_port_gets_no_http_answer(target: Target) -> None:
    """No plain-HTTP service (T5): a cleartext request gets a TLS alert or a close."""
    with socket.create_connection((LOOPBACK, target.port), timeout=10) as sock:
        sock.sendall(b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\n\r\n")
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"HTTP/"), answer[:100]
    assert answer == b"" or answer[0] == 0x15  # nothing, or a TLS alert record


# --- paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/.well-known/est/%2e%2e/cacerts", "invalid label"),
        ("/.well-known/est/../est/cacerts", "too many segments"),
        ("/.well-known/est/" + "a" * (MAX_LABEL_LENGTH + 1) + "/cacerts", "at most 64"),
        ("/.well-known/est//cacerts", "non-empty path segment"),
        ("/.well-known/est/cacerts/", "operation name"),
    ],
)
def test_malformed_paths_are_404(target: Target, path: str, reason: str) -> None:
    before = target.last_event_id()
    reply = request(target.port, "GET", path, target.context)
    target.assert_refused(reply, before, 404, reason)
