"""Fuzzing the OCSP request path: the parser, the cache's answer function and the live /ocsp
route. Whatever the bytes, the answer is a well-formed OCSP response (malformedRequest,
unauthorized or a signed answer) — never an exception, never a 500."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from estkit.ca.authority import CertificateAuthority
from estkit.ca.ocsp import OcspRequestError, ParsedRequest, parse_ocsp_request
from estkit.server.datadir import init_data_dir
from estkit.server.revocation_cache import RevocationCache
from estkit.server.state import ServerState

FUZZ_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
LIVE_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
ANSWER_STATUSES = {
    ocsp.OCSPResponseStatus.SUCCESSFUL,
    ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
    ocsp.OCSPResponseStatus.UNAUTHORIZED,
}
COUNTED: dict[str, int] = {"parser": 0, "cache": 0, "live": 0}


@pytest.fixture(scope="module")
def valid_request(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    data_dir = tmp_path_factory.mktemp("ocsp-fuzz")
    init_data_dir(data_dir)
    authority = CertificateAuthority.load(data_dir / "ca")
    issuer = authority.issuer_certificate
    der = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(issuer, issuer, hashes.SHA1())  # any certificate: only bytes matter
        .add_extension(x509.OCSPNonce(b"n" * 16), critical=False)
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    return data_dir, der


def _mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    def mutate(data: tuple[int, int, int, bytes]) -> bytes:
        kind, position, value, junk = data
        position %= len(seed)
        if kind == 0:  # flip a byte
            return seed[:position] + bytes([value]) + seed[position + 1 :]
        if kind == 1:  # truncate
            return seed[:position]
        if kind == 2:  # insert junk
            return seed[:position] + junk + seed[position:]
        return seed + junk  # trailing data

    return st.tuples(
        st.integers(0, 3), st.integers(0, 10_000), st.integers(0, 255), st.binary(max_size=40)
    ).map(mutate)


def _check_parse(data: bytes) -> None:
    try:
        parsed = parse_ocsp_request(data)
    except OcspRequestError:
        return
    assert isinstance(parsed, ParsedRequest)


@FUZZ_SETTINGS
@given(data=st.binary(max_size=600))
def test_parser_raises_only_its_own_error(data: bytes) -> None:
    COUNTED["parser"] += 1
    _check_parse(data)


@FUZZ_SETTINGS
@given(data=st.data())
def test_parser_on_mutated_requests(valid_request: tuple[Path, bytes], data: st.DataObject) -> None:
    COUNTED["parser"] += 1
    _check_parse(data.draw(_mutations(valid_request[1])))


@pytest.fixture(scope="module")
def cache(
    valid_request: tuple[Path, bytes],
) -> Iterator[tuple[asyncio.AbstractEventLoop, RevocationCache]]:
    state = ServerState(valid_request[0])
    loop = asyncio.new_event_loop()
    revocation = RevocationCache(state)
    loop.run_until_complete(revocation.start())
    yield loop, revocation
    loop.run_until_complete(revocation.stop())
    loop.close()
    state.close()


@FUZZ_SETTINGS
@given(data=st.data())
def test_cache_answers_anything_with_an_ocsp_response(
    valid_request: tuple[Path, bytes],
    cache: tuple[asyncio.AbstractEventLoop, RevocationCache],
    data: st.DataObject,
) -> None:
    loop, revocation = cache
    body = data.draw(st.one_of(st.binary(max_size=300), _mutations(valid_request[1])))
    COUNTED["cache"] += 1
    answer = loop.run_until_complete(revocation.ocsp(body))
    assert ocsp.load_der_ocsp_response(answer.body).response_status in ANSWER_STATUSES


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    from conftest import make_server

    server = make_server(tmp_path_factory.mktemp("ocsp-fuzz-live"), {})
    yield server.url, server.paths.ca_certificates
    server.stop()


@LIVE_SETTINGS
@given(data=st.data())
def test_live_route_never_500(
    live: tuple[str, Path], valid_request: tuple[Path, bytes], data: st.DataObject
) -> None:
    url, cacert = live
    body = data.draw(st.one_of(st.binary(max_size=300), _mutations(valid_request[1])))
    use_get = data.draw(st.booleans())
    COUNTED["live"] += 1
    with httpx.Client(verify=ssl.create_default_context(cafile=str(cacert)), timeout=20) as client:
        if use_get:
            encoded = base64.urlsafe_b64encode(body).decode().rstrip("=")
            reply = client.get(f"{url}/ocsp/{encoded}")
        else:
            reply = client.post(
                f"{url}/ocsp", content=body, headers={"Content-Type": "application/ocsp-request"}
            )
    assert reply.status_code == 200, reply.text
    assert ocsp.load_der_ocsp_response(reply.content).response_status in ANSWER_STATUSES


def test_fuzzers_ran() -> None:
    """Hypothesis can silently generate nothing (e.g. a filtered strategy): count the inputs."""
    assert COUNTED["parser"] >= 300 and COUNTED["cache"] >= 100 and COUNTED["live"] >= 20, COUNTED
