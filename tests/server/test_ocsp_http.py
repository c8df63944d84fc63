"""The plain-HTTP revocation listener (issue 17 item 7; RFC 5019 §5, RFC 6960 App. A): `openssl
ocsp -url http://...` as the real client (good, revoked, unknown, nonce, POST; GET through curl
and `openssl ocsp -respin`), curl for the CRL, AIA/CDP of enrolled certificates pointing at it,
and what a hostile client may send (each refusal's status and reason, on real sockets)."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from estkit.ca.ocsp import MAX_OCSP_REQUEST_BYTES
from estkit.server.config import ConfigError, UpstreamConfig, load_config, set_limits
from estkit.server.datadir import init_data_dir
from estkit.server.limits import (
    MAX_HEADERS,
    RESERVED_DESCRIPTORS,
    REVOCATION_MAX_CONNECTIONS,
    connection_budget,
)
from estkit.server.revocation_http import MAX_HEAD_BYTES, MAX_PIPELINED, MAX_TARGET_BYTES
from estkit.server.runner import revocation_address, start_server_thread

from .ocsp_support import Issued, issue, issuer_pem, openssl_ocsp
from .test_ocsp_pointers import _enroll, _pointers
from .witness import curl, run, tool

if TYPE_CHECKING:
    from conftest import EstkitTestServer

# Short limits for this module's server, so the timeout tests take seconds.
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0
IDLE_TIMEOUT = 2.0
# How long a refusal that waits for a timeout may take (timeout + the listener's 1 s sweep +
# slack for a loaded machine).
TIMEOUT_SLACK = 4.0
# max_connections of this module's server: the smallest budget, so the cap test opens few.
CAP = 16
OCSP_REQUEST = "application/ocsp-request"
MODULE_LIMITS = {
    "header_timeout": HEADER_TIMEOUT,
    "body_timeout": BODY_TIMEOUT,
    "idle_timeout": IDLE_TIMEOUT,
    "max_connections": CAP,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EstkitTestServer]:
    from conftest import EstkitTestServer

    paths = init_data_dir(tmp_path_factory.mktemp("ocsp-http-server"), key_type="p256")
    set_limits(paths.config, **MODULE_LIMITS)
    running = EstkitTestServer(
        running=start_server_thread(paths.data_dir, revocation_port=0), paths=paths
    )
    yield running
    running.stop()


def _http_port(server: EstkitTestServer) -> int:
    url = server.running.info.revocation_url
    assert url is not None and url.startswith("http://127.0.0.1:")
    return int(url.rsplit(":", 1)[1])


def _url(server: EstkitTestServer) -> str:
    return f"http://127.0.0.1:{_http_port(server)}"


def _openssl_ocsp(server: EstkitTestServer, issuer: Path, cert: Path, *extra: str) -> str:
    """`openssl ocsp -url http://.../ocsp` (a POST); stdout + stderr."""
    result = openssl_ocsp(server, issuer, cert, *extra, url=f"{_url(server)}/ocsp")
    return result.stdout + result.stderr


def _request_der(leaf: Issued, issuer: Path, nonce: bytes | None = None) -> bytes:
    issuer_cert = x509.load_pem_x509_certificate(issuer.read_bytes())
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        leaf.certificate, issuer_cert, hashes.SHA1()
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def _post_bytes(der: bytes, *, close: bool = False, content_type: str = OCSP_REQUEST) -> bytes:
    connection = "Connection: close\r\n" if close else ""
    return (
        f"POST /ocsp HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(der)}\r\n{connection}\r\n"
    ).encode() + der


def _raw(
    server: EstkitTestServer, data: bytes, *, wait: float = 5.0, keep_open: bool = False
) -> bytes:
    """Send ``data`` on a new connection; everything the server sent until it closed (or
    ``wait`` s passed; ``keep_open``: do not half-close our side)."""
    with socket.create_connection(("127.0.0.1", _http_port(server)), timeout=wait) as sock:
        sock.sendall(data)
        if not keep_open:
            sock.shutdown(socket.SHUT_WR)
        return _read_all(sock, wait)


def _read_all(sock: socket.socket, wait: float) -> bytes:
    received = b""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return received


def _responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The HTTP responses in ``raw``, in order: (status, headers, body)."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        found.append((int(lines[0].split()[1]), headers, rest[:length]))
        raw = rest[length:]
    return found


def _one(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    responses = _responses(raw)
    assert len(responses) == 1, raw[:500]
    return responses[0]


def _status_of(body: bytes) -> ocsp.OCSPResponse:
    return ocsp.load_der_ocsp_response(body)


# --- openssl and curl as the real clients ------------------------------------------------------


def test_openssl_good_with_nonce_and_without(server: EstkitTestServer, tmp_path: Path) -> None:
    issuer = issuer_pem(server, tmp_path)
    leaf = issue(server, tmp_path, "http-good.example")
    with_nonce = _openssl_ocsp(server, issuer, leaf.path)
    assert f"{leaf.path}: good" in with_nonce, with_nonce
    assert "Response verify OK" in with_nonce
    # openssl warns when the nonce it sent is missing from the answer (RFC 8954).
    assert "WARNING: no nonce in response" not in with_nonce
    without = _openssl_ocsp(server, issuer, leaf.path, "-no_nonce")
    assert f"{leaf.path}: good" in without and "Response verify OK" in without


def test_openssl_revoked_after_the_cli_revokes(server: EstkitTestServer, tmp_path: Path) -> None:
    """The exact-bytes lookup must not hide a revocation: the same request bytes (openssl
    -no_nonce sends the same bytes each time) are answered revoked by the next request after
    `estkit server revoke` returns (it rewrites DIR/crl.der, which the lookup watches at most
    1 ms late; the store poll alone would take up to 0.25 s)."""
    issuer = issuer_pem(server, tmp_path)
    leaf = issue(server, tmp_path, "http-revoked.example")
    first = _openssl_ocsp(server, issuer, leaf.path, "-no_nonce")
    assert f"{leaf.path}: good" in first, first
    assert f"{leaf.path}: good" in _openssl_ocsp(server, issuer, leaf.path, "-no_nonce")
    revoke = [tool("estkit"), "server", "revoke", server.paths.data_dir, leaf.serial_hex]
    assert run([*revoke, "--reason", "keyCompromise"]).returncode == 0
    result = _openssl_ocsp(server, issuer, leaf.path, "-no_nonce")
    assert f"{leaf.path}: revoked" in result, result
    assert "Reason: keyCompromise" in result and "Revocation Time" in result
    assert "Response verify OK" in result


def test_openssl_unknown_and_another_cas_certificate(
    server: EstkitTestServer, tmp_path: Path
) -> None:
    from estkit.ca.authority import CertificateAuthority
    from estkit.ca.profiles import Profile
    from estkit.protocol.csr import build_csr
    from estkit.protocol.keys import generate_private_key

    issuer = issuer_pem(server, tmp_path)
    authority = CertificateAuthority.load(server.paths.data_dir / "ca")
    unrecorded = authority.issue(
        build_csr(generate_private_key("p256"), common_name="x.example"), Profile()
    )
    path = tmp_path / "unrecorded.pem"
    path.write_bytes(unrecorded.public_bytes(serialization.Encoding.PEM))
    result = _openssl_ocsp(server, issuer, path)
    assert f"{path}: unknown" in result and "Response verify OK" in result, result
    other = _openssl_ocsp(
        server, server.paths.manufacturer_ca, server.paths.device_certificate, "-no_nonce"
    )
    assert "Responder Error: unauthorized (6)" in other, other


def test_get_with_curl_cacheable_and_checked_by_openssl(
    server: EstkitTestServer, tmp_path: Path
) -> None:
    issuer = issuer_pem(server, tmp_path)
    leaf = issue(server, tmp_path, "http-get.example")
    der = _request_der(leaf, issuer)
    url = f"{_url(server)}/ocsp/{base64.urlsafe_b64encode(der).decode().rstrip('=')}"
    first = curl(url, cacert=server.paths.ca_certificates, content_type=None, workdir=tmp_path)
    assert first.status == 200
    assert first.header("Content-Type") == "application/ocsp-response"
    assert "max-age=" in (first.header("Cache-Control") or "")
    etag = first.header("ETag")
    assert etag and first.header("Last-Modified") and first.header("Expires")
    assert first.header("Date")
    # Pre-signed, then served from the cache: ECDSA signatures differ each time they are made.
    second = curl(url, cacert=server.paths.ca_certificates, content_type=None, workdir=tmp_path)
    assert second.body == first.body
    not_modified = curl(
        url,
        cacert=server.paths.ca_certificates,
        content_type=None,
        headers=(f"If-None-Match: {etag}",),
        workdir=tmp_path,
    )
    assert not_modified.status == 304 and not not_modified.body
    response_file = tmp_path / "response.der"
    response_file.write_bytes(first.body)
    check = openssl_ocsp(server, issuer, leaf.path, "-no_nonce", respin=response_file)
    assert f"{leaf.path}: good" in check.stdout, check.stderr
    assert "Response verify OK" in check.stderr


def test_nonce_answers_are_signed_per_request(server: EstkitTestServer, tmp_path: Path) -> None:
    issuer = issuer_pem(server, tmp_path)
    leaf = issue(server, tmp_path, "http-nonce.example")
    bodies = []
    for nonce in (b"n" * 16, b"m" * 16):
        status, headers, body = _one(_raw(server, _post_bytes(_request_der(leaf, issuer, nonce))))
        assert status == 200 and headers["cache-control"] == "no-store"
        answer = _status_of(body)
        nonces = [e.value.nonce for e in answer.extensions if isinstance(e.value, x509.OCSPNonce)]
        assert nonces == [nonce]
        bodies.append(body)
    assert bodies[0] != bodies[1]


def test_absolute_form_targets_are_answered(server: EstkitTestServer, tmp_path: Path) -> None:
    """RFC 9112 §3.2.2: a server must accept a request target in absolute form (what a client
    configured with a proxy, or a proxy itself, sends): the same answers as for the path alone;
    a look-alike path is still not served."""
    issuer = issuer_pem(server, tmp_path)
    leaf = issue(server, tmp_path, "http-absolute.example")
    der = _request_der(leaf, issuer)
    host = f"127.0.0.1:{_http_port(server)}"
    post = _post_bytes(der).replace(b"POST /ocsp ", f"POST http://{host}/ocsp ".encode(), 1)
    status, headers, body = _one(_raw(server, post))
    assert status == 200 and headers["content-type"] == "application/ocsp-response"
    assert _status_of(body).certificate_status is ocsp.OCSPCertStatus.GOOD
    status, _, body = _one(
        _raw(server, f"GET HTTP://{host}/crl HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    )
    assert status == 200
    assert x509.load_der_x509_crl(body).issuer == leaf.certificate.issuer
    status, _, _ = _one(
        _raw(server, f"GET http://{host}/crlx HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    )
    assert status == 404


def test_crl_with_curl(server: EstkitTestServer, tmp_path: Path) -> None:
    issuer = issuer_pem(server, tmp_path)
    leaf = issue(server, tmp_path, "http-crl.example")
    revoke = [tool("estkit"), "server", "revoke", server.paths.data_dir, leaf.serial_hex]
    assert run(revoke).returncode == 0
    for path in ("/crl", "/crl/g1"):
        reply = curl(
            f"{_url(server)}{path}",
            cacert=server.paths.ca_certificates,
            content_type=None,
            workdir=tmp_path,
        )
        assert reply.status == 200 and reply.header("Content-Type") == "application/pkix-crl"
        crl = x509.load_der_x509_crl(reply.body)
        issuer_cert = x509.load_pem_x509_certificate(issuer.read_bytes())
        assert crl.is_signature_valid(issuer_cert.public_key())
        assert crl.get_revoked_certificate_by_serial_number(leaf.certificate.serial_number)
    status, headers, body = _one(_raw(server, b"HEAD /crl HTTP/1.1\r\n\r\n"))
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    missing = curl(
        f"{_url(server)}/crl/g9",
        cacert=server.paths.ca_certificates,
        content_type=None,
        workdir=tmp_path,
    )
    assert missing.status == 404 and "no CA generation 'g9'" in missing.text


def test_enrolled_certificates_point_at_the_http_listener(
    server: EstkitTestServer, tmp_path: Path
) -> None:
    leaf_path = _enroll(server, tmp_path)
    leaf = x509.load_pem_x509_certificate(leaf_path.read_bytes())
    ocsp_urls, crl_urls = _pointers(leaf)
    port = _http_port(server)
    assert ocsp_urls == [f"http://localhost:{port}/ocsp"]
    assert crl_urls == [f"http://localhost:{port}/crl/g1"]
    uri = run([tool("openssl"), "x509", "-in", leaf_path, "-noout", "-ocsp_uri"]).stdout.decode()
    result = openssl_ocsp(server, issuer_pem(server, tmp_path), leaf_path, url=uri.strip())
    assert f"{leaf_path}: good" in result.stdout, result.stdout + result.stderr
    crl = curl(
        crl_urls[0], cacert=server.paths.ca_certificates, content_type=None, workdir=tmp_path
    )
    assert crl.status == 200 and x509.load_der_x509_crl(crl.body).issuer == leaf.issuer
    # estkit's own checker (the node's, C16) follows the http URL too.
    chain = tmp_path / "chain.pem"
    chain.write_bytes(leaf_path.read_bytes() + issuer_pem(server, tmp_path).read_bytes())
    status = run([tool("estkit"), "client", "status", "--cert", chain, "--json"], check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    answer = json.loads(status.stdout)
    assert (answer["status"], answer["method"]) == ("good", "ocsp"), answer
    assert answer["source"] == f"http://localhost:{port}/ocsp", answer


def test_listener_off_by_default_and_from_the_config(tmp_path: Path) -> None:
    paths = init_data_dir(tmp_path / "d", key_type="p256")
    assert load_config(paths.config).revocation_port is None
    off = start_server_thread(paths.data_dir)
    try:
        assert off.info.revocation_url is None
    finally:
        off.stop()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with paths.config.open("a", encoding="utf-8") as handle:
        handle.write(f"\n[revocation]\nport = {port}\n")
    on = start_server_thread(paths.data_dir)
    try:
        assert on.info.revocation_url == f"http://127.0.0.1:{port}"
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        raw.sendall(b"GET /crl HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _read_all(raw, 5).startswith(b"HTTP/1.1 200 OK\r\n")
        raw.close()
    finally:
        on.stop()


def test_renewed_tls_certificates_point_at_the_listener(tmp_path: Path) -> None:
    """Renewing the server's own TLS certificates (as `server rollover` does) keeps AIA/CDP,
    at the plain-HTTP listener when [revocation] port is set."""
    from estkit.server.tls_certs import renew_tls_certificates

    paths = init_data_dir(tmp_path / "d", key_type="p256")
    with paths.config.open("a", encoding="utf-8") as handle:
        handle.write("\n[revocation]\nport = 8080\n")
    renewed = renew_tls_certificates(load_config(paths.config))
    assert renewed
    for item in renewed:
        assert _pointers(item.certificate) == (
            ["http://localhost:8080/ocsp"],
            ["http://localhost:8080/crl/g1"],
        )


def test_registration_authority_refuses_the_listener(tmp_path: Path) -> None:
    paths = init_data_dir(tmp_path / "d", key_type="p256")
    with paths.config.open("a", encoding="utf-8") as handle:
        handle.write(
            '\n[revocation]\nport = 8080\n\n[upstream]\nurl = "https://ca.example"\n'
            'trust = "t.pem"\ncertificate = "c.pem"\nkey = "k.pem"\n'
        )
    with pytest.raises(ConfigError, match="registration authority"):
        load_config(paths.config)
    # The same asked for on the command line (serve --revocation-port) of an RA.
    ra = dataclasses.replace(
        load_config(init_data_dir(tmp_path / "ra", key_type="p256").config),
        upstream=UpstreamConfig("https://ca.example", Path("t"), Path("c"), Path("k")),
    )
    with pytest.raises(ConfigError, match="upstream CA answers OCSP"):
        revocation_address(ra, port=8080)


# --- what a hostile client may send --------------------------------------------------------------


def test_only_revocation_paths_are_served(server: EstkitTestServer) -> None:
    status, _, body = _one(_raw(server, b"GET /.well-known/est/cacerts HTTP/1.1\r\n\r\n"))
    assert status == 404 and b"this port serves only revocation status" in body


def test_bad_methods_are_405(server: EstkitTestServer) -> None:
    status, headers, body = _one(_raw(server, b"DELETE /ocsp HTTP/1.1\r\n\r\n"))
    assert status == 405 and headers["allow"] == "GET, POST"
    assert b"DELETE is not allowed on /ocsp" in body
    status, headers, _ = _one(_raw(server, b"POST /crl HTTP/1.1\r\nContent-Length: 0\r\n\r\n"))
    assert status == 405 and headers["allow"] == "GET, HEAD"


def test_refusals_of_head_requests_carry_no_body(server: EstkitTestServer) -> None:
    """RFC 9110 §9.3.2: no content in an answer to HEAD. A refusal's text after a HEAD answer
    would be read as the start of the next answer on the connection (a desynchronised proxy)."""
    follow = b"GET /crl HTTP/1.1\r\nConnection: close\r\n\r\n"
    for head in (b"HEAD /ocsp HTTP/1.1\r\n\r\n", b"HEAD /nothing HTTP/1.1\r\n\r\n"):
        raw = _raw(server, head + follow)
        first, _, rest = raw.partition(b"\r\n\r\n")
        assert first.split(b" ", 2)[1] in (b"405", b"404"), raw[:300]
        assert b"Content-Length: " in first  # the length a GET's refusal would have
        assert rest.startswith(b"HTTP/1.1 200 OK\r\n"), raw[:400]  # nothing between answers
        assert _crl_of(rest.partition(b"\r\n\r\n")[2])


def _crl_of(body: bytes) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(body)


def test_not_modified_does_not_announce_an_empty_body(server: EstkitTestServer) -> None:
    """RFC 9110 §8.6: a 304 carries no Content-Length but the 200's. A `Content-Length: 0` would
    be copied by an RFC 7234 cache into its stored CRL's headers (§4.3.4), emptying it."""
    status, headers, body = _one(_raw(server, b"GET /crl HTTP/1.1\r\n\r\n"))
    assert status == 200
    request = f"GET /crl HTTP/1.1\r\nIf-None-Match: {headers['etag']}\r\n\r\n".encode()
    raw = _raw(server, request)
    assert raw.startswith(b"HTTP/1.1 304 Not Modified\r\n"), raw[:300]
    assert raw.endswith(b"\r\n\r\n")  # no body
    length = _responses(raw)[0][1].get("content-length")
    assert length in (None, str(len(body))), raw


def test_malformed_ocsp_request_and_wrong_media_type(server: EstkitTestServer) -> None:
    status, _, body = _one(_raw(server, _post_bytes(b"\x30\x03\x02\x01\x00")))
    assert status == 200
    assert _status_of(body).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    status, _, body = _one(_raw(server, b"GET /ocsp/!!!notbase64 HTTP/1.1\r\n\r\n"))
    assert _status_of(body).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    status, _, body = _one(_raw(server, _post_bytes(b"x", content_type="text/plain")))
    assert status == 415 and b"needs Content-Type: application/ocsp-request" in body


def test_oversized_body_is_413_before_it_is_read(server: EstkitTestServer) -> None:
    """Only the head is sent: the answer comes without the body, and the connection closes."""
    head = (
        f"POST /ocsp HTTP/1.1\r\nContent-Type: {OCSP_REQUEST}\r\n"
        f"Content-Length: {MAX_OCSP_REQUEST_BYTES + 1}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    status, headers, body = _one(_raw(server, head, keep_open=True))
    assert time.monotonic() - started < HEADER_TIMEOUT  # not a timeout: refused at once
    assert status == 413 and headers["connection"] == "close"
    assert f"over the limit of {MAX_OCSP_REQUEST_BYTES} bytes".encode() in body


def test_oversized_chunked_body_is_413(server: EstkitTestServer) -> None:
    chunk = b"a" * 4096
    chunks = b"".join(b"1000\r\n" + chunk + b"\r\n" for _ in range(3))
    request = (
        f"POST /ocsp HTTP/1.1\r\nContent-Type: {OCSP_REQUEST}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode() + chunks
    status, _, body = _one(_raw(server, request, keep_open=True))
    assert status == 413 and b"request body is over the limit" in body


def test_long_target_head_and_header_count_are_refused(server: EstkitTestServer) -> None:
    target = b"/ocsp/" + b"A" * MAX_TARGET_BYTES
    status, _, body = _one(_raw(server, b"GET " + target + b" HTTP/1.1\r\n\r\n"))
    assert status == 414 and f"over {MAX_TARGET_BYTES} bytes".encode() in body
    big = b"X-Big: " + b"b" * MAX_HEAD_BYTES + b"\r\n"
    status, _, body = _one(_raw(server, b"GET /crl HTTP/1.1\r\n" + big + b"\r\n"))
    assert status == 431 and f"over {MAX_HEAD_BYTES} bytes".encode() in body
    many = b"".join(f"X-{n}: 1\r\n".encode() for n in range(MAX_HEADERS + 1))
    status, headers, _ = _one(_raw(server, b"GET /crl HTTP/1.1\r\n" + many + b"\r\n"))
    assert status == 431 and headers["connection"] == "close"


def test_malformed_http_and_upgrade(server: EstkitTestServer) -> None:
    status, headers, body = _one(_raw(server, b"NOT HTTP AT ALL\r\n\r\n"))
    assert status == 400 and b"malformed HTTP request" in body
    assert headers["connection"] == "close"
    upgrade = b"GET /ocsp HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    raw = _raw(server, upgrade + b"GARBAGE AFTER THE UPGRADE", keep_open=True)
    status, _, body = _one(raw)  # answered as a plain GET, never switched, then closed
    assert status == 200 and b"101" not in raw.split(b"\r\n")[0]
    assert _status_of(body).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_pipelined_requests_in_order_and_bounded(server: EstkitTestServer, tmp_path: Path) -> None:
    issuer = issuer_pem(server, tmp_path)
    leaves = [issue(server, tmp_path, f"pipe-{n}.example") for n in range(3)]
    data = b"".join(_post_bytes(_request_der(leaf, issuer)) for leaf in leaves)
    answers = _responses(_raw(server, data + b"GET /crl HTTP/1.1\r\nConnection: close\r\n\r\n"))
    assert [status for status, _, _ in answers] == [200, 200, 200, 200]
    serials = [_status_of(body).serial_number for _, _, body in answers[:3]]
    assert serials == [leaf.certificate.serial_number for leaf in leaves]
    too_many = b"GET /crl HTTP/1.1\r\n\r\n" * (MAX_PIPELINED + 5)
    answers = _responses(_raw(server, too_many, keep_open=True))
    assert [status for status, _, _ in answers] == [200] * MAX_PIPELINED + [429]
    assert b"more than 32 pipelined requests" in answers[-1][2]


def test_nothing_is_sent_after_an_answer_that_closes(server: EstkitTestServer) -> None:
    """Bytes after a request with Connection: close are not answered (RFC 9112 §9.6): the
    answer saying Connection: close is the last thing on the connection, not followed by a 400
    about those bytes, which the client would have to read as a response to nothing."""
    close = b"GET /crl HTTP/1.1\r\nConnection: close\r\n\r\n"
    raw = _raw(server, close + b"GET /crl HTTP/1.1\r\n\r\n", keep_open=True)
    status, headers, _ = _one(raw)
    assert status == 200 and headers["connection"] == "close"


def test_slow_head_and_slow_body_get_408(server: EstkitTestServer) -> None:
    started = time.monotonic()
    raw = _raw(server, b"GET /crl HTTP/1.1\r\nX-Slow:", wait=TIMEOUT_SLACK, keep_open=True)
    status, headers, body = _one(raw)
    assert status == 408 and b"request head not received within header_timeout=1 s" in body
    assert headers["connection"] == "close"
    assert HEADER_TIMEOUT - 0.05 <= time.monotonic() - started < TIMEOUT_SLACK
    head = f"POST /ocsp HTTP/1.1\r\nContent-Type: {OCSP_REQUEST}\r\nContent-Length: 100\r\n\r\n"
    raw = _raw(server, head.encode() + b"x", wait=BODY_TIMEOUT + TIMEOUT_SLACK, keep_open=True)
    status, _, body = _one(raw)
    assert status == 408 and b"request body not received within body_timeout=2 s" in body


@contextlib.contextmanager
def _revocation_thread_held(server: EstkitTestServer) -> Iterator[tuple[Any, threading.Event]]:
    """The server's revocation cache, its one thread held (signing, catching up) until the
    event is set (at the latest when the block ends)."""
    from estkit.server.app import REVOCATION_KEY

    cache = server.running._runner.app[REVOCATION_KEY]
    gate = threading.Event()
    cache._executor.submit(gate.wait, 30)
    try:
        yield cache, gate
    finally:
        gate.set()


def test_next_head_waits_while_an_answer_is_being_signed(
    server: EstkitTestServer, tmp_path: Path
) -> None:
    """One read carries a request whose answer must be signed (a nonce) and the start of the
    next request. While the signature waits (here: the revocation thread held for longer than
    header_timeout), the unfinished head is not timed out: no 408 goes out ahead of the
    answer to the earlier request, and that answer is not written after a closing 408."""
    issuer = issuer_pem(server, tmp_path)
    leaf = issue(server, tmp_path, "http-held.example")
    signed = _post_bytes(_request_der(leaf, issuer, b"h" * 16))
    with (
        _revocation_thread_held(server) as (_, gate),
        socket.create_connection(("127.0.0.1", _http_port(server)), timeout=10) as sock,
    ):
        sock.sendall(signed + b"GET /crl HTTP/1.1\r\n")  # the second head unfinished
        time.sleep(HEADER_TIMEOUT + 1.5)  # past its header_timeout and a sweep
        gate.set()
        time.sleep(0.3)
        sock.sendall(b"Connection: close\r\n\r\n")
        answers = _responses(_read_all(sock, 5))
    assert [status for status, _, _ in answers] == [200, 200], answers
    assert _status_of(answers[0][2]).certificate_status is ocsp.OCSPCertStatus.GOOD


def test_connection_being_answered_is_not_evicted(server: EstkitTestServer, tmp_path: Path) -> None:
    """At the cap, the oldest connection whose answer is being signed is passed over, even with
    the next request's head begun in the same read; a newer idle one is closed instead."""
    issuer = issuer_pem(server, tmp_path)
    leaf = issue(server, tmp_path, "http-kept.example")
    signed = _post_bytes(_request_der(leaf, issuer, b"e" * 16))
    with _revocation_thread_held(server) as (_, gate):
        first = socket.create_connection(("127.0.0.1", _http_port(server)), timeout=10)
        first.sendall(signed + b"GET /crl HTTP/1.1\r\n")
        time.sleep(0.2)
        held = [socket.create_connection(("127.0.0.1", _http_port(server))) for _ in range(CAP)]
        try:
            time.sleep(0.2)  # the last one made the listener close one to make room
            gate.set()
            first.sendall(b"Connection: close\r\n\r\n")
            answers = _responses(_read_all(first, 5))
            held[0].settimeout(2)
            assert held[0].recv(10) == b""  # the oldest idle one was closed instead
        finally:
            for sock in [first, *held]:
                sock.close()
    assert [status for status, _, _ in answers] == [200, 200], answers


def test_idle_connection_is_closed(server: EstkitTestServer) -> None:
    with socket.create_connection(("127.0.0.1", _http_port(server)), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /crl HTTP/1.1\r\n\r\n")
        # Everything until the server closes: one answer, then nothing until idle_timeout.
        raw = _read_all(sock, IDLE_TIMEOUT + TIMEOUT_SLACK)
        waited = time.monotonic() - started
    assert _one(raw)[0] == 200, raw[:300]
    # uvloop's clock is read once per loop turn, in milliseconds: a few ms of tolerance.
    assert IDLE_TIMEOUT - 0.05 <= waited < IDLE_TIMEOUT + TIMEOUT_SLACK, f"closed after {waited} s"


def _socket_queues(port: int, peer_port: int) -> tuple[int, int] | None:
    """(send queue, receive queue) in bytes of the loopback TCP connection end on ``port``
    talking to ``peer_port`` (/proc/net/tcp), None once that end has dropped it."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
        if local == port and remote == peer_port and fields[3] == "01":  # ESTABLISHED
            tx, rx = fields[4].split(":")
            return int(tx, 16), int(rx, 16)
    return None


def _pipeline_unread(
    server: EstkitTestServer, tmp_path: Path, sock: socket.socket, *, until_stalled: bool
) -> tuple[int, int]:
    """On ``sock`` (connected, a small receive buffer) send batches of MAX_PIPELINED cached OCSP
    GETs and read nothing, each batch once the server has taken the last (never more than
    MAX_PIPELINED per read): ``until_stalled``, until the server leaves our requests unread for
    a second (its answers backed up, it stopped reading); else until the kernel takes no more
    of its answers (they wait in the listener's own buffer, under its high-water mark). The
    listener end's (send queue, receive queue) then."""
    issuer = issuer_pem(server, tmp_path)
    der = _request_der(issue(server, tmp_path, "never-reads.example"), issuer)
    batch = f"GET /ocsp/{base64.urlsafe_b64encode(der).decode()} HTTP/1.1\r\n\r\n".encode()
    port, client_port = _http_port(server), sock.getsockname()[1]
    sock.sendall(batch)  # signed once, then cached
    time.sleep(0.5)
    batch *= MAX_PIPELINED
    deadline = time.monotonic() + 20
    unread_since, sent_on = time.monotonic(), -1
    queues = _socket_queues(port, client_port)
    while queues is not None and time.monotonic() < deadline:
        ours = _socket_queues(client_port, port)  # our end: requests not yet taken
        if queues[1] or (ours is not None and ours[0]):
            if time.monotonic() - unread_since > 1.0:
                break
        elif not until_stalled and queues[0] <= sent_on:
            break
        else:
            unread_since, sent_on = time.monotonic(), queues[0]
            sock.sendall(batch)
        time.sleep(0.05)
        queues = _socket_queues(port, client_port)
    assert queues is not None and queues[0] > 0, queues  # answers backed up, not refused
    return queues


def _small_receive_buffer(server: EstkitTestServer) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", _http_port(server)))
    return sock


def _wait_dropped(server: EstkitTestServer, sock: socket.socket) -> None:
    """The listener drops its end of ``sock``'s connection within idle_timeout (+ slack)."""
    started, client_port = time.monotonic(), sock.getsockname()[1]
    while _socket_queues(_http_port(server), client_port) is not None:
        assert time.monotonic() - started < IDLE_TIMEOUT + TIMEOUT_SLACK, "never dropped"
        time.sleep(0.1)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the kernel's socket table")
def test_client_that_never_reads_is_dropped_after_idle_timeout(
    server: EstkitTestServer, tmp_path: Path
) -> None:
    """A client pipelines requests and reads nothing: the server stops reading once its answers
    back up, and after idle_timeout drops the connection. A graceful close would wait for the
    client to read the megabytes the kernel holds for it, which it never does: socket and
    buffers would stay until an eviction."""
    with _small_receive_buffer(server) as sock:
        _pipeline_unread(server, tmp_path, sock, until_stalled=True)
        _wait_dropped(server, sock)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the kernel's socket table")
def test_closing_connection_with_unread_answers_is_dropped(
    server: EstkitTestServer, tmp_path: Path
) -> None:
    """The last request says Connection: close (a 429 closes the same way) while earlier answers
    wait unread in the listener's buffer: the close waits for the client, which never reads.
    Such a connection counted as being answered: never expired, never evicted at the cap, so
    max_connections of them would shut the listener for everyone."""
    with _small_receive_buffer(server) as sock:
        _pipeline_unread(server, tmp_path, sock, until_stalled=False)
        sock.sendall(b"GET /crl HTTP/1.1\r\nConnection: close\r\n\r\n")
        _wait_dropped(server, sock)


def test_connection_cap_evicts_the_oldest_idle(server: EstkitTestServer) -> None:
    budget = connection_budget("revocation")
    assert budget >= CAP  # the configured max_connections is the cap here
    held = [socket.create_connection(("127.0.0.1", _http_port(server))) for _ in range(CAP)]
    try:
        time.sleep(0.2)  # every one accepted and idle (fresh)
        status, _, _ = _one(_raw(server, b"GET /crl HTTP/1.1\r\nConnection: close\r\n\r\n"))
        assert status == 200  # the newcomer is served ...
        held[0].settimeout(2)
        assert held[0].recv(10) == b""  # ... and the oldest was closed to make room
        held[-1].sendall(b"GET /crl HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert _read_all(held[-1], 5).startswith(b"HTTP/1.1 200 OK")
    finally:
        for sock in held:
            sock.close()


def test_revocation_budget_is_its_own_share() -> None:
    """The listener's descriptors come out of the EST port's share, only when it is on."""
    assert connection_budget("revocation", 1 << 20) == REVOCATION_MAX_CONNECTIONS
    assert connection_budget("revocation", 4096) == (4096 - RESERVED_DESCRIPTORS) // 8
    without = connection_budget("est", 1 << 20)
    assert without == (1 << 20) - RESERVED_DESCRIPTORS - 64
    with_listener = connection_budget("est", 1 << 20, revocation_listener=True)
    assert with_listener == without - REVOCATION_MAX_CONNECTIONS


# --- several workers ------------------------------------------------------------------------------


def test_workers_agree_and_see_a_revocation(tmp_path: Path) -> None:
    """`serve --workers 2 --revocation-port 0`: every worker answers on the shared port (many
    new connections), and a revocation reaches all of them."""
    paths = init_data_dir(tmp_path / "d", key_type="p256")
    command = [sys.executable, "-m", "estkit.cli.main", "server", "serve", str(paths.data_dir)]
    command += ["--port", "0", "--workers", "2", "--revocation-port", "0", "--json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        port = int(ready["revocation_url"].rsplit(":", 1)[1])
        from conftest import EstkitTestServer

        holder = EstkitTestServer(running=None, paths=paths)  # type: ignore[arg-type]
        issuer = issuer_pem(holder, tmp_path)
        leaf = issue(holder, tmp_path, "workers.example")
        request = _post_bytes(_request_der(leaf, issuer), close=True)

        def statuses() -> set[ocsp.OCSPCertStatus]:
            seen = set()
            for _ in range(20):
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    sock.sendall(request)
                    _, _, body = _one(_read_all(sock, 5))
                    seen.add(_status_of(body).certificate_status)
            return seen

        assert statuses() == {ocsp.OCSPCertStatus.GOOD}
        revoke = [tool("estkit"), "server", "revoke", paths.data_dir, leaf.serial_hex]
        assert run(revoke).returncode == 0
        time.sleep(1.0)  # the workers' store poll (0.25 s) with room to spare
        assert statuses() == {ocsp.OCSPCertStatus.REVOKED}
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_exact_bytes_lookup_only_for_requests_without_nonce(
    server: EstkitTestServer, tmp_path: Path
) -> None:
    """A request without a nonce is remembered by its bytes (the next one skips the parse); a
    request with a nonce never is, or a replayed nonce would get an answer signed for another."""
    from estkit.server.app import REVOCATION_KEY

    cache = server.running._runner.app[REVOCATION_KEY]
    issuer = issuer_pem(server, tmp_path)
    leaf = issue(server, tmp_path, "http-bytes.example")
    plain, with_nonce = _request_der(leaf, issuer), _request_der(leaf, issuer, b"k" * 16)
    assert cache.cached_answer(plain) is None
    _, _, body = _one(_raw(server, _post_bytes(plain)))
    artifact = cache.cached_answer(plain)
    assert artifact is not None and artifact.body == body
    _one(_raw(server, _post_bytes(with_nonce)))
    assert cache.cached_answer(with_nonce) is None


def test_exact_bytes_lookup_remembers_only_small_requests(
    server: EstkitTestServer, tmp_path: Path
) -> None:
    """The remembered request bytes are bounded in size, not only in number: a hostile client
    padding each request with a non-critical extension up to the 8 KiB request limit would
    otherwise make every worker keep MAX_REMEMBERED_REQUESTS of them (about 400 MB). Such a
    request is still answered, from the answer cache, but parsed each time."""
    from estkit.server.app import REVOCATION_KEY
    from estkit.server.revocation_cache import MAX_REMEMBERED_REQUEST_BYTES

    cache = server.running._runner.app[REVOCATION_KEY]
    issuer = issuer_pem(server, tmp_path)
    leaf = issue(server, tmp_path, "http-padded.example")
    issuer_cert = x509.load_pem_x509_certificate(issuer.read_bytes())
    padding = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"p" * 7000)
    padded = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(leaf.certificate, issuer_cert, hashes.SHA1())
        .add_extension(padding, critical=False)
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    assert MAX_REMEMBERED_REQUEST_BYTES < len(padded) <= MAX_OCSP_REQUEST_BYTES
    for _ in range(2):
        status, _, body = _one(_raw(server, _post_bytes(padded)))
        assert status == 200
        assert _status_of(body).certificate_status is ocsp.OCSPCertStatus.GOOD
    assert cache.cached_answer(padded) is None  # answered, not remembered
    plain = _request_der(leaf, issuer)
    assert len(plain) <= MAX_REMEMBERED_REQUEST_BYTES  # what relying parties send is
    _one(_raw(server, _post_bytes(plain)))
    assert cache.cached_answer(plain) is not None


def test_exact_bytes_lookup_sees_a_local_revocation_within_its_recheck_time(
    server: EstkitTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lookup looks at DIR/crl.der at most once per LOCAL_CRL_RECHECK_SECONDS: once that
    time has passed after the file changed, the remembered answer is no longer given (the
    request is parsed and the cache catches up); within it, no file is looked at again."""
    from estkit.server import revocation_cache
    from estkit.server.app import REVOCATION_KEY

    cache = server.running._runner.app[REVOCATION_KEY]
    issuer = issuer_pem(server, tmp_path)
    leaf = issue(server, tmp_path, "http-recheck.example")
    plain = _request_der(leaf, issuer)
    _one(_raw(server, _post_bytes(plain)))
    clock = [time.monotonic() + 10.0]  # past the look the request above made
    monkeypatch.setattr(revocation_cache.time, "monotonic", lambda: clock[0])
    looks: list[int] = []
    real_stat = cache._stat_local

    def counting_stat() -> tuple[int, int, int] | None:
        looks.append(1)
        return real_stat()

    monkeypatch.setattr(cache, "_stat_local", counting_stat)
    assert cache.cached_answer(plain) is not None
    assert len(looks) == 1
    crl = server.paths.data_dir / "crl.der"  # what `server revoke` rewrites
    if crl.exists():
        stat = crl.stat()
        os.utime(crl, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    else:
        crl.write_bytes(b"")
    clock[0] += revocation_cache.LOCAL_CRL_RECHECK_SECONDS / 2
    assert cache.cached_answer(plain) is not None  # within the recheck time: as before
    assert len(looks) == 1
    clock[0] += revocation_cache.LOCAL_CRL_RECHECK_SECONDS
    assert cache.cached_answer(plain) is None  # looked again: changed, so not from the bytes
    assert len(looks) == 2
    assert cache.cached_answer(plain) is None  # a change is never remembered as "unchanged"
    assert len(looks) == 3


def test_client_leaving_during_a_catch_up_does_not_bring_back_the_old_answer(
    server: EstkitTestServer, tmp_path: Path
) -> None:
    """The first request after `server revoke` makes the cache catch up (re-sign) before it
    answers; its client resets the connection meanwhile. Another request for the same
    certificate arriving before the re-signing ends must wait for it and be answered revoked,
    not be given the remembered answer signed before the revocation (were the first request
    cancelled with its connection, the catch-up it led would end early for every waiter)."""
    issuer = issuer_pem(server, tmp_path)
    leaf = issue(server, tmp_path, "http-leaves.example")
    request = _post_bytes(_request_der(leaf, issuer))
    status, _, body = _one(_raw(server, request))
    assert _status_of(body).certificate_status is ocsp.OCSPCertStatus.GOOD
    # The revocation thread held: the catch-up stays in progress.
    with _revocation_thread_held(server) as (cache, gate):
        revoke = [tool("estkit"), "server", "revoke", server.paths.data_dir, leaf.serial_hex]
        assert run(revoke).returncode == 0
        time.sleep(0.01)  # past LOCAL_CRL_RECHECK_SECONDS
        with socket.create_connection(("127.0.0.1", _http_port(server))) as leaving:
            leaving.sendall(request)
            deadline = time.monotonic() + 5
            while cache._catching_up is None and time.monotonic() < deadline:
                time.sleep(0.005)
            assert cache._catching_up is not None  # the catch-up began for that request
            leaving.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        time.sleep(0.2)  # the reset has reached the server
        with socket.create_connection(("127.0.0.1", _http_port(server)), timeout=10) as other:
            other.sendall(request)
            time.sleep(0.2)
            gate.set()
            status, _, body = _responses(_read_all(other, 5))[0]
    assert status == 200
    assert _status_of(body).certificate_status is ocsp.OCSPCertStatus.REVOKED


def test_presigning_lets_other_work_in_after_each_slice(
    server: EstkitTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pre-signing queues one slice at a time on the revocation thread: work queued while it
    runs (a first request, a nonce, a catch-up after a revocation) waits for the slice in
    progress only, not for every slice."""
    import threading
    from datetime import UTC, datetime

    from estkit.ca.store import open_store
    from estkit.server import revocation_cache
    from estkit.server.app import REVOCATION_KEY

    cache = server.running._runner.app[REVOCATION_KEY]
    for n in range(3):
        issue(server, tmp_path, f"presign-{n}.example")
    monkeypatch.setattr(revocation_cache, "PRESIGN_BATCH", 1)
    order: list[str] = []
    gate = threading.Event()
    real = cache._presign_batch

    def held_batch(records: list[object], ids: dict[object, object]) -> None:
        gate.wait(10)  # the first slice holds the thread until the request below is queued
        order.append("slice")
        real(records, ids)

    monkeypatch.setattr(cache, "_presign_batch", held_batch)
    with open_store(server.paths.database_url) as store:
        now = datetime.now(UTC)
        slices = len(
            [
                r
                for r in store.list_issued()
                if r.not_after > now and r.status in ("valid", "revoked")
            ]
        )
        assert slices >= 3
        cache._executor.submit(cache._presign, store, datetime.now(UTC)).result(timeout=10)
    request = cache._executor.submit(order.append, "request")
    gate.set()
    request.result(timeout=30)
    assert order.index("request") <= 1, order  # behind the slice in progress at most
    deadline = time.monotonic() + 30
    while order.count("slice") < slices and time.monotonic() < deadline:
        time.sleep(0.05)
    assert order.count("slice") == slices  # and every slice still ran


FUZZED = {"inputs": 0}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzzed_http_is_never_a_500(server: EstkitTestServer, data: st.DataObject) -> None:
    """Random bytes and mutated requests (a byte flipped, cut, junk inserted): every answer is a
    4xx or an OCSP answer, never a 5xx, and the connection ends (the client half-closes)."""
    valid = _post_bytes(b"\x30\x03\x02\x01\x00") + b"GET /crl HTTP/1.1\r\n\r\n"
    position = data.draw(st.integers(0, len(valid) - 1))
    junk = data.draw(st.binary(max_size=64))
    candidates = [
        junk,
        valid[:position] + junk + valid[position + 1 :],
        valid[:position],
        valid[:position] + junk + valid[position:],
    ]
    payload = candidates[data.draw(st.integers(0, len(candidates) - 1))]
    FUZZED["inputs"] += 1
    raw = _raw(server, payload, wait=5.0)
    assert not raw or raw.startswith(b"HTTP/1.1 "), raw[:300]
    for status, _, _ in _responses(raw):
        assert status < 500, raw[:300]
    # The listener still answers.
    assert _one(_raw(server, b"GET /crl HTTP/1.1\r\n\r\n"))[0] == 200


def test_fuzzer_ran() -> None:
    assert FUZZED["inputs"] >= 40, FUZZED
