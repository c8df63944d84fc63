"""estkit.tlsbind: the RFC 9266 tls-exporter of stdlib ssl connections, checked against OpenSSL's
own command-line tool as an independent peer, and against the RFC 8446 §7.5 formula.

Why openssl as the witness: ``openssl s_client -keymatexport EXPORTER-Channel-Binding
-keymatexportlen 32`` prints the exporter of *its* end of the connection, computed by code we do
not call; equal bytes on our end prove the pointer, the label, the empty context and the length.
The guards (unexpected struct layout, another libssl) run in a child interpreter, so a guard that
failed and dereferenced a wrong pointer would show as a crashed child, not a crashed test run.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estkit import tlsbind
from estkit.tlsbind import (
    EXPORTER_LENGTH,
    expected_exporter,
    exporter_secret_from_keylog,
    exporter_support,
    tls_exporter_for,
)

HOST = "localhost"
CHILD_TIMEOUT_SECONDS = 60
# What openssl s_client / s_server print for -keymatexport: the hex of its end's exporter value.
KEYING_MATERIAL = re.compile(r"Keying material: ([0-9A-F]+)")
TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")


@dataclass(frozen=True)
class Pem:
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Pem:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tlsbind")
    pair = Pem(folder / "cert.pem", folder / "key.pem")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pair


def _openssl() -> str:
    found = shutil.which("openssl")
    assert found, "the openssl command is the independent witness here: install openssl"
    return found


def _server_context(pem: Pem, version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem.cert, pem.key)
    context.minimum_version = context.maximum_version = version
    return context


def _client_context(pem: Pem, version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(pem.cert)
    context.minimum_version = context.maximum_version = version
    return context


@dataclass
class Seen:
    version: str | None = None
    exporter: bytes | None = None
    unique: bytes | None = None


@pytest.fixture
def one_connection_server(pem: Pem) -> Iterator[tuple[int, Seen, threading.Thread]]:
    """A blocking ``SSLSocket`` server for one connection; records its end's binding."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen = Seen()
    context = _server_context(pem)

    def serve() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            seen.version = tls.version()
            seen.exporter = tls_exporter_for(tls)
            seen.unique = tls.get_channel_binding("tls-unique")
            with contextlib.suppress(OSError, ssl.SSLError):
                tls.recv(1)  # until the peer closes

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], seen, thread
    finally:
        listener.close()


def _s_client(port: int, pem: Pem, *extra: str) -> str:
    done = subprocess.run(
        [_openssl(), "s_client", "-connect", f"127.0.0.1:{port}", "-servername", HOST,
         "-CAfile", str(pem.cert), "-keymatexport", "EXPORTER-Channel-Binding",
         "-keymatexportlen", str(EXPORTER_LENGTH), *extra],
        input=b"", capture_output=True, timeout=CHILD_TIMEOUT_SECONDS,
    )  # fmt: skip
    return done.stdout.decode("ascii", "replace")


def test_self_check_matched_the_rfc8446_known_answer() -> None:
    support = exporter_support()
    assert support.available, support.reason
    assert "known answer" in support.reason
    assert "_ssl" in support.reason  # found through the _ssl extension's own handle


@pytest.mark.parametrize("suite", TLS13_SUITES)
def test_server_end_equals_what_openssl_s_client_exports(
    one_connection_server: tuple[int, Seen, threading.Thread], pem: Pem, suite: str
) -> None:
    port, seen, thread = one_connection_server
    output = _s_client(port, pem, "-tls1_3", "-ciphersuites", suite)
    thread.join(CHILD_TIMEOUT_SECONDS)
    theirs = KEYING_MATERIAL.search(output)
    assert theirs, output
    assert seen.version == "TLSv1.3"
    assert seen.exporter is not None and len(seen.exporter) == EXPORTER_LENGTH
    assert seen.exporter.hex().upper() == theirs.group(1)
    assert suite in output  # the suite (and so the hash, SHA-256 or SHA-384) really was used


def test_client_end_equals_what_openssl_s_server_exports(pem: Pem) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = subprocess.Popen(
        [_openssl(), "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "1", "-tls1_3",
         "-cert", str(pem.cert), "-key", str(pem.key),
         "-keymatexport", "EXPORTER-Channel-Binding", "-keymatexportlen", str(EXPORTER_LENGTH)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        for line in server.stdout:
            if b"ACCEPT" in line:
                break
        context = _client_context(pem)
        with (
            socket.create_connection(("127.0.0.1", port), timeout=CHILD_TIMEOUT_SECONDS) as raw,
            context.wrap_socket(raw, server_hostname=HOST) as tls,
        ):
            ours = tls_exporter_for(tls)
            printed = b""
            for line in server.stdout:
                printed += line
                if b"Keying material:" in line:
                    break
        theirs = KEYING_MATERIAL.search(printed.decode("ascii", "replace"))
        assert theirs, printed
        assert ours is not None and ours.hex().upper() == theirs.group(1)
    finally:
        server.kill()
        server.wait(CHILD_TIMEOUT_SECONDS)


async def test_asyncio_server_end_equals_openssl_s_client(pem: Pem) -> None:
    """aiohttp's server sees an ``ssl.SSLObject`` (asyncio's memory-BIO transport): same value."""
    seen: dict[str, object] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        seen["type"] = type(ssl_object)
        seen["exporter"] = tls_exporter_for(ssl_object)
        await reader.read()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=_server_context(pem))
    port = server.sockets[0].getsockname()[1]
    async with server:
        child = await asyncio.create_subprocess_exec(
            _openssl(), "s_client", "-connect", f"127.0.0.1:{port}", "-servername", HOST,
            "-CAfile", str(pem.cert), "-keymatexport", "EXPORTER-Channel-Binding",
            "-keymatexportlen", str(EXPORTER_LENGTH),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        stdout, _ = await asyncio.wait_for(child.communicate(), CHILD_TIMEOUT_SECONDS)
    theirs = KEYING_MATERIAL.search(stdout.decode("ascii", "replace"))
    assert theirs, stdout
    assert seen["type"] is ssl.SSLObject
    exporter = seen["exporter"]
    assert isinstance(exporter, bytes) and exporter.hex().upper() == theirs.group(1)


def _memory_pair(
    pem: Pem, version: ssl.TLSVersion, keylog: Path | None = None
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    server_context = _server_context(pem, version)
    if keylog is not None:
        server_context.keylog_filename = str(keylog)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = _client_context(pem, version).wrap_bio(c_in, c_out, server_hostname=HOST)
    server = server_context.wrap_bio(s_in, s_out, server_side=True)
    for _round in range(10):
        done = 0
        for end in (client, server):
            try:
                end.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done == 2:
            return client, server
    raise AssertionError("handshake did not finish")


def test_both_ends_agree_with_the_rfc8446_formula_and_connections_differ(
    pem: Pem, tmp_path: Path
) -> None:
    keylog = tmp_path / "keylog"
    client, server = _memory_pair(pem, ssl.TLSVersion.TLSv1_3, keylog)
    secret = exporter_secret_from_keylog(keylog.read_text())
    assert secret is not None
    assert tls_exporter_for(client) == tls_exporter_for(server) == expected_exporter(secret)
    # httpx's synchronous stream hands out the _ssl._SSLSocket inside the SSLSocket: same value.
    assert tls_exporter_for(client._sslobj) == tls_exporter_for(client)
    other_client, _other_server = _memory_pair(pem, ssl.TLSVersion.TLSv1_3)
    assert tls_exporter_for(other_client) != tls_exporter_for(client)


def test_tls12_and_non_tls_objects_have_no_exporter(pem: Pem) -> None:
    client, server = _memory_pair(pem, ssl.TLSVersion.TLSv1_2)
    assert client.version() == "TLSv1.2"
    assert client.get_channel_binding("tls-unique")  # TLS 1.2 links with tls-unique instead
    assert tls_exporter_for(client) is None and tls_exporter_for(server) is None
    assert tls_exporter_for(None) is None
    assert tls_exporter_for(object()) is None
    c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    unfinished = _client_context(pem).wrap_bio(c_in, c_out, server_hostname=HOST)
    assert tls_exporter_for(unfinished) is None  # no handshake yet: version() is None


def test_a_pointer_that_fails_the_finished_proof_is_never_exported_from(
    pem: Pem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-connection proof gates the export: Finished bytes that are not the stdlib's mean
    "this is not our connection's SSL", so nothing is read through it."""
    client, _server = _memory_pair(pem, ssl.TLSVersion.TLSv1_3)
    assert tls_exporter_for(client) is not None
    exported: list[int] = []
    monkeypatch.setattr(tlsbind, "_finished", lambda _function, _pointer: b"\x00" * 32)
    monkeypatch.setattr(tlsbind, "_export", lambda _lib, pointer: exported.append(pointer))
    assert tls_exporter_for(client) is None
    assert exported == []


@pytest.mark.parametrize("shift_words", [-1, 1])
def test_a_word_that_fails_the_neighbour_check_is_never_passed_to_libssl(
    pem: Pem, monkeypatch: pytest.MonkeyPatch, shift_words: int
) -> None:
    """With the offsets moved by a word, not one libssl function sees the wrong pointer: the
    ``ctx`` neighbour check reads only the Python object's own memory and stops first."""
    client, _server = _memory_pair(pem, ssl.TLSVersion.TLSv1_3)
    lib, support = tlsbind._binding()
    assert lib is not None, support.reason
    called: list[str] = []
    for name in ("ssl_version", "is_server", "get_finished", "get_peer_finished", "export"):
        monkeypatch.setattr(lib, name, lambda *_args, _name=name: called.append(_name) or 0)
    word = tlsbind._WORD * shift_words
    monkeypatch.setattr(tlsbind, "_SSL_OFFSET", tlsbind._SSL_OFFSET + word)
    monkeypatch.setattr(tlsbind, "_CTX_OFFSET", tlsbind._CTX_OFFSET + word)
    assert tls_exporter_for(client) is None
    assert called == []


def _child(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter: a crash there is a negative return code here."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_SECONDS,
    )


@pytest.mark.parametrize("shift_words", [-1, 1, 2, 40])
def test_an_unexpected_struct_layout_means_unavailable_not_a_crash(
    pem: Pem, shift_words: int
) -> None:
    """A future CPython that moved ``SSL *ssl`` inside PySSLSocket: the neighbour check fails on
    the object's own memory, the self-check reports it, every connection reads None."""
    done = _child(f"""
        import ssl
        from estkit import tlsbind
        word = tlsbind._WORD * {shift_words}
        tlsbind._SSL_OFFSET += word
        tlsbind._CTX_OFFSET += word
        support = tlsbind.exporter_support()
        print("available", support.available)
        print("reason", support.reason)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain({str(pem.cert)!r}, {str(pem.key)!r})
        print("value", tlsbind.tls_exporter_for(context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(),
              server_side=True)))
    """)
    assert done.returncode == 0, done.stderr  # a segfault would be -11
    assert "available False" in done.stdout
    assert "could not be proven" in done.stdout and "unexpected layout" in done.stdout
    assert "value None" in done.stdout


def test_another_openssl_than_the_ssl_modules_means_unavailable() -> None:
    done = _child("""
        import ssl
        from estkit import tlsbind
        tlsbind.ssl.OPENSSL_VERSION = "OpenSSL 3.99.0 (not the one loaded)"
        support = tlsbind.exporter_support()
        print("available", support.available)
        print("reason", support.reason)
    """)
    assert done.returncode == 0, done.stderr
    assert "available False" in done.stdout
    assert "not 'OpenSSL 3.99.0 (not the one loaded)'" in done.stdout


def test_a_non_openssl3_library_is_not_even_opened() -> None:
    done = _child("""
        import ssl
        from estkit import tlsbind
        tlsbind.ssl.OPENSSL_VERSION = "LibreSSL 3.8.2"
        support = tlsbind.exporter_support()
        print("available", support.available, support.reason)
    """)
    assert done.returncode == 0, done.stderr
    assert "available False needs OpenSSL 3" in done.stdout
