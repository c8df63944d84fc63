"""Property tests of the running server's HTTP endpoints: random methods, paths, content types,
headers and bodies get a 2xx/4xx answer (501 only for the documented fullcmc), never a 500, never
a hang, and the server keeps serving afterwards.

Bounded (a few hundred requests, each on a fresh TLS connection) so the run takes seconds;
``fuzz/fuzz_http.py`` runs the same properties for as long as you like, and the coverage-guided run
of the parsers underneath is ``fuzz/fuzz_protocol.py``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import ssl
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from estkit.protocol import build_csr, generate_private_key
from estkit.server.config import add_label, set_limits
from estkit.server.datadir import DEMO_DEVICE_SERIAL, InitResult, init_data_dir
from estkit.server.runner import RunningServer, start_server_thread

from .support import client_context, raw_tls, request

# fuzz/fuzz_http.py runs these same properties for longer by raising this through the environment.
EXAMPLES_ENV = "ESTKIT_HTTP_FUZZ_EXAMPLES"
# ...and counts the inputs they really ran through this file: one line per input, "name ok|fail".
# Counted here, in the properties, so the figure does not hang on another library's report wording.
COUNTS_ENV = "ESTKIT_HTTP_FUZZ_COUNTS"
DEFAULT_EXAMPLES = 150
SETTINGS = settings(
    max_examples=int(os.environ.get(EXAMPLES_ENV, DEFAULT_EXAMPLES)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# A request the server does not answer within this many seconds counts as a hang.
HANG_SECONDS = 20.0
HEADER_TIMEOUT_SECONDS = 2.0
LABELS = ("manual", "pop", "http")
OPERATIONS = ("cacerts", "simpleenroll", "simplereenroll", "csrattrs", "serverkeygen", "fullcmc")

_KEY = generate_private_key("p256")
VALID_CSR_DER = build_csr(
    _KEY, common_name="fuzz.example.com", dns_names=["fuzz.example.com"]
).public_bytes(serialization.Encoding.DER)


@contextlib.contextmanager
def _counted(name: str) -> Iterator[None]:
    """Record one input of property ``name`` (and whether it failed) for fuzz/fuzz_http.py."""
    counts = os.environ.get(COUNTS_ENV)
    outcome = "fail"
    try:
        yield
        outcome = "ok"
    finally:
        if counts:
            with open(counts, "a", encoding="ascii") as sink:
                sink.write(f"{name} {outcome}\n")


class FuzzTarget:
    def __init__(self, running: RunningServer, paths: InitResult) -> None:
        self.running = running
        self.paths = paths
        self.authenticated = client_context(
            paths.ca_certificates, paths.device_certificate, paths.device_key
        )
        self.anonymous = client_context(paths.ca_certificates)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    paths = init_data_dir(tmp_path_factory.mktemp("fuzz-server"), key_type="p256")
    add_label(paths.config, "manual", approval="manual")
    add_label(paths.config, "pop", require_pop=True)
    add_label(paths.config, "http", auth_mode="rfc7030")
    # Inputs that never complete a request head (e.g. only blank lines) wait for the header
    # timeout: keep it short here so such examples cost two seconds, not ten.
    set_limits(paths.config, header_timeout=HEADER_TIMEOUT_SECONDS)
    with start_server_thread(paths.data_dir) as running:
        yield FuzzTarget(running, paths)


# --- strategies ------------------------------------------------------------------------------

_token = st.text(
    alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."),
    min_size=1,
    max_size=24,
)
_header_value = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=0, max_size=200
)
_paths = st.one_of(
    st.builds(
        lambda label, op: f"/.well-known/est/{label}/{op}" if label else f"/.well-known/est/{op}",
        st.sampled_from((None, *LABELS)) | _token,
        st.sampled_from(OPERATIONS) | _token,
    ),
    st.sampled_from(("/", "/crl", "/.well-known/est", "/.well-known/est/", "//", "/%00", "/..")),
    st.builds(
        lambda s: "/" + s,
        st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80),
    ),
)
_content_types = st.one_of(
    st.none(),
    st.sampled_from(
        (
            "application/pkcs10",
            "application/pkcs10; charset=binary",
            "APPLICATION/PKCS10",
            "application/pkcs7-mime",
            "text/plain",
            "multipart/mixed; boundary=x",
            "application/pkcs10;;;",
            'application/pkcs10; a="unterminated',
            "",
        )
    ),
    _header_value,
)


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    mutable = bytearray(data)
    for position, value in edits:
        mutable[position % len(mutable)] = value
    return bytes(mutable)


_edits = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4)
_bodies = st.one_of(
    st.none(),
    st.binary(max_size=2048),
    st.builds(
        lambda edits: base64.encodebytes(_mutate(VALID_CSR_DER, edits)),
        _edits,
    ),
    st.builds(lambda edits: _mutate(VALID_CSR_DER, edits), _edits),
    st.builds(
        lambda junk: (
            b"-----BEGIN CERTIFICATE REQUEST-----\n"
            + base64.encodebytes(junk)
            + b"-----END CERTIFICATE REQUEST-----\n"
        ),
        st.binary(max_size=512),
    ),
    st.text(max_size=512).map(lambda t: t.encode("utf-8")),
)
# Values that steer aiohttp and our handler into their special paths (decompression,
# 100-continue, chunked framing, authentication schemes), mixed with random text.
_special_values = st.sampled_from(
    (
        "gzip",
        "deflate",
        "br",
        "identity",
        "100-continue",
        "chunked",
        "base64",
        "binary",
        "Basic YWxpY2U6d29uZGVybGFuZA==",
        'Digest username="alice", realm="estkit", nonce="x", uri="/", response="0"',
        "bytes=0-1",
    )
)
_extra_headers = st.dictionaries(
    st.sampled_from(
        (
            "Authorization",
            "Content-Transfer-Encoding",
            "Accept",
            "Accept-Encoding",
            "Content-Encoding",
            "X-Fuzz",
            "Expect",
            "Range",
            "If-None-Match",
        )
    )
    | _token,
    _special_values | _header_value,
    max_size=4,
)


def _acceptable(status: int, path: str) -> bool:
    if 200 <= status < 300 or 400 <= status < 500:
        return True
    # 501 is the documented answer for the optional fullcmc operation.
    return status == 501 and path.rstrip("/").endswith("/fullcmc")


@SETTINGS
@given(
    method=st.sampled_from(("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")),
    path=_paths,
    content_type=_content_types,
    body=_bodies,
    headers=_extra_headers,
    authenticated=st.booleans(),
)
def test_random_requests_never_get_a_5xx_or_hang(
    target: FuzzTarget,
    method: str,
    path: str,
    content_type: str | None,
    body: bytes | None,
    headers: dict[str, str],
    authenticated: bool,
) -> None:
    all_headers = dict(headers)
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    context = target.authenticated if authenticated else target.anonymous
    with _counted("random_requests"):
        # A socket timeout here (TimeoutError) fails the test: that is a hang.
        reply = request(
            target.running.port,
            method,
            path,
            context,
            body=body,
            headers=all_headers,
            timeout=HANG_SECONDS,
        )
        assert _acceptable(reply.status, path), (reply.status, method, path, reply.text[:300])
        assert "Traceback" not in reply.text


@SETTINGS
@given(raw=st.binary(min_size=1, max_size=4096))
@example(raw=b"\r")  # only blank lines: aiohttp waits for a request line (header_timeout ends it)
@example(raw=b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nContent-Length: 9")  # no body
def test_raw_bytes_instead_of_http_get_no_5xx(target: FuzzTarget, raw: bytes) -> None:
    """Whatever arrives after the TLS handshake, the answer is never a 5xx status line."""
    with _counted("raw_bytes"):
        _raw_exchange(target, raw)


def _raw_exchange(target: FuzzTarget, raw: bytes) -> None:
    received = b""
    with raw_tls(target.running.port, target.anonymous, timeout=HANG_SECONDS) as tls:
        tls.sendall(raw + b"\r\n\r\n")
        try:
            while len(received) < 64 * 1024 and b"\r\n\r\n" not in received:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                received += chunk
        except (ConnectionResetError, ssl.SSLError):
            pass  # closing on garbage is a fine answer
        except TimeoutError:
            pytest.fail(f"the server neither answered nor closed within {HANG_SECONDS} s")
    if received:
        status_line = received.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1."), status_line
        status = int(status_line.split()[1])
        assert 400 <= status < 500 or 200 <= status < 300, status_line


def test_server_still_serves_after_fuzzing(target: FuzzTarget) -> None:
    body = base64.encodebytes(VALID_CSR_DER)
    reply = request(
        target.running.port,
        "POST",
        "/.well-known/est/simpleenroll",
        target.authenticated,
        body=body,
        headers={"Content-Type": "application/pkcs10"},
    )
    assert reply.status == 200, reply.text
    # The CA-built subject: the vetted name plus the device serial of the manufacturer certificate.
    assert reply.certificate().subject.rfc4514_string() == (
        f"2.5.4.5={DEMO_DEVICE_SERIAL},CN=fuzz.example.com"
    )
