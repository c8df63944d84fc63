"""Proof-of-possession linking with real TLS handshakes (RFC 7030 §3.5, checklist E14).

The handshakes run over ``ssl.MemoryBIO`` pairs: the same ``SSLObject`` type that asyncio (and
so aiohttp and httpx) exposes as ``ssl_object``, with no network involved at all.
"""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import pytest

from estkit.protocol import (
    PopResult,
    PrivateKey,
    build_csr,
    certificates_to_pem,
    challenge_password_for,
    check_pop,
    decode_csr_body,
    describe_csr,
    encode_csr_body,
    tls_unique_for,
)

from .helpers import make_cert, pem_key

TLS_FINISHED_LENGTH = 12  # RFC 5246 §7.4.9 verify_data length: tls-unique under TLS 1.2


def _pump(source: ssl.MemoryBIO, sink: ssl.MemoryBIO) -> None:
    data = source.read()
    if data:
        sink.write(data)


def _handshake(
    tmp_path: Path, key: PrivateKey, version: ssl.TLSVersion
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    cert = make_cert(key, "localhost", ca=False, dns=("localhost",))
    cert_path, key_path = tmp_path / "server.pem", tmp_path / "server.key"
    cert_path.write_bytes(certificates_to_pem([cert]))
    key_path.write_bytes(pem_key(key))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_path, key_path)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cadata=certificates_to_pem([cert]).decode())
    for ctx in (server_ctx, client_ctx):
        ctx.minimum_version = version
        ctx.maximum_version = version
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _round in range(10):
        for side, obj in (("client", client), ("server", server)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
            _pump(c_out, s_in)
            _pump(s_out, c_in)
        if all(done.values()):
            break
    assert all(done.values()), "the TLS handshake did not complete"
    return client, server


def test_tls12_both_sides_agree_and_pop_matches(tmp_path: Path, p256_key: PrivateKey) -> None:
    client, server = _handshake(tmp_path, p256_key, ssl.TLSVersion.TLSv1_2)
    assert client.version() == server.version() == "TLSv1.2"
    client_unique = tls_unique_for(client)
    server_unique = tls_unique_for(server)
    assert client_unique is not None and len(client_unique) == TLS_FINISHED_LENGTH
    assert client_unique == server_unique

    # The client links its CSR to the session; the server checks it against its own view.
    password = challenge_password_for(client_unique)
    assert base64.b64decode(password) == client_unique
    assert "\n" not in password
    csr = build_csr(p256_key, common_name="pop.example", challenge_password=password)
    received = describe_csr(decode_csr_body(encode_csr_body(csr)))
    assert check_pop(received.challenge_password, server_unique) is PopResult.MATCH


def test_tls12_other_session_value_mismatches(tmp_path: Path, p256_key: PrivateKey) -> None:
    first, _ = _handshake(tmp_path, p256_key, ssl.TLSVersion.TLSv1_2)
    _, second_server = _handshake(tmp_path, p256_key, ssl.TLSVersion.TLSv1_2)
    first_unique = tls_unique_for(first)
    second_unique = tls_unique_for(second_server)
    assert first_unique is not None and second_unique is not None
    assert first_unique != second_unique
    password = challenge_password_for(first_unique)
    assert check_pop(password, second_unique) is PopResult.MISMATCH
    assert check_pop(None, second_unique) is PopResult.ABSENT
    assert check_pop("not base64 at all ☃", second_unique) is PopResult.MISMATCH


def test_tls13_has_no_tls_unique(tmp_path: Path, p256_key: PrivateKey) -> None:
    client, server = _handshake(tmp_path, p256_key, ssl.TLSVersion.TLSv1_3)
    assert server.version() == "TLSv1.3"
    # Python still hands out bytes here; they must not be used (RFC 9266 §1).
    assert server.get_channel_binding("tls-unique") is not None
    assert tls_unique_for(server) is None
    assert tls_unique_for(client) is None
    assert check_pop("anything", tls_unique_for(server)) is PopResult.UNAVAILABLE
    assert check_pop(None, None) is PopResult.UNAVAILABLE


class _Broken:
    def version(self) -> str:
        return "TLSv1.2"

    def get_channel_binding(self, cb_type: str = "tls-unique") -> bytes | None:
        raise ValueError(f"{cb_type} not available before the handshake")


class _NoBinding(_Broken):
    def get_channel_binding(self, cb_type: str = "tls-unique") -> bytes | None:
        return None


@pytest.mark.parametrize("obj", [None, _Broken(), _NoBinding()])
def test_missing_or_broken_ssl_object_gives_none(obj: object) -> None:
    assert tls_unique_for(obj) is None  # type: ignore[arg-type]


def test_pop_result_values() -> None:
    assert {r.name for r in PopResult} == {"MATCH", "MISMATCH", "ABSENT", "UNAVAILABLE"}
