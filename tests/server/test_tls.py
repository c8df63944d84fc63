"""TLS policy (BCP-003-01 T1-T3, T5) witnessed by ``openssl s_client``."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from estkit.server.tls import BCP_003_01_TLS12_CIPHERS

from .witness import s_client

if TYPE_CHECKING:
    from conftest import EstkitTestServer


def _negotiated(output: bytes) -> tuple[str, str] | None:
    """(protocol, cipher) from s_client's "New, TLSv1.2, Cipher is X" line, None if none."""
    match = re.search(rb"New, (TLSv[0-9.]+), Cipher is (\S+)", output)
    if match is None:
        return None
    return match.group(1).decode(), match.group(2).decode()


def test_tls_1_1_is_refused(estkit_server: EstkitTestServer) -> None:
    # @SECLEVEL=0: OpenSSL 3 would not even offer TLS 1.1 otherwise (so the server decides).
    result = s_client(
        estkit_server.host, estkit_server.port, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"
    )
    assert _negotiated(result.stdout) is None
    # asyncio closes the socket without flushing the alert, so the client may only see EOF.
    assert re.search(rb"alert protocol version|unexpected eof", result.stderr), result.stderr
    control = s_client(estkit_server.host, estkit_server.port, "-tls1_2")
    assert _negotiated(control.stdout) is not None


def test_suite_outside_bcp_003_01_is_refused(estkit_server: EstkitTestServer) -> None:
    result = s_client(estkit_server.host, estkit_server.port, "-tls1_2", "-cipher", "AES128-SHA")
    assert _negotiated(result.stdout) is None
    assert re.search(rb"handshake failure|unexpected eof", result.stderr), result.stderr


def test_tls_1_3_is_accepted_with_aes128_gcm_first(estkit_server: EstkitTestServer) -> None:
    result = s_client(estkit_server.host, estkit_server.port, "-tls1_3")
    assert _negotiated(result.stdout) == ("TLSv1.3", "TLS_AES_128_GCM_SHA256")


def test_server_order_wins_and_no_compression(estkit_server: EstkitTestServer) -> None:
    """T3 order is the server's: offered in reverse, the first BCP suite is still chosen."""
    offered = ":".join(reversed(BCP_003_01_TLS12_CIPHERS))
    result = s_client(estkit_server.host, estkit_server.port, "-tls1_2", "-cipher", offered)
    assert _negotiated(result.stdout) == ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert b"Compression: NONE" in result.stdout


@pytest.mark.parametrize("cipher", BCP_003_01_TLS12_CIPHERS)
def test_every_bcp_003_01_suite_works(estkit_server: EstkitTestServer, cipher: str) -> None:
    """T3 + T5: all twelve suites, so both the ECDSA and the RSA certificate are presented
    (and DH parameters are loaded for DHE-RSA)."""
    result = s_client(estkit_server.host, estkit_server.port, "-tls1_2", "-cipher", cipher)
    assert _negotiated(result.stdout) == ("TLSv1.2", cipher)
    key_line = re.search(rb"Server public key is (\d+) bit", result.stdout)
    assert key_line is not None
    bits = int(key_line.group(1))
    assert bits == (256 if "ECDSA" in cipher else 2048)


def test_rogue_client_certificate_still_completes_the_handshake(
    estkit_server: EstkitTestServer, tmp_path
) -> None:
    """The verify hook: an unknown client certificate is judged by the application (a clear
    403), not by a TLS alert."""
    from .witness import run, tool

    key, cert = tmp_path / "rogue.key", tmp_path / "rogue.pem"
    run([tool("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-subj",
         "/CN=rogue", "-days", "2"])  # fmt: skip
    result = s_client(estkit_server.host, estkit_server.port, "-tls1_2", "-cert", cert, "-key", key)
    assert _negotiated(result.stdout) is not None, result.stderr


def test_handshake_verification_fallback(fresh_server, tmp_path, monkeypatch) -> None:
    """If the verify hook cannot be installed, OpenSSL verifies in the handshake: trusted
    devices still enroll, a rogue certificate is stopped by a TLS alert."""
    import estkit.server.tls as tls_module

    from .witness import curl, openssl_csr, run, tool

    monkeypatch.setattr(tls_module, "install_accept_all_verify_callback", lambda ctx: False)
    server = fresh_server()
    assert not server.running.info.verify_in_app
    paths = server.paths
    ok = curl(
        server.est_url("simpleenroll"),
        cacert=paths.ca_certificates,
        cert=paths.device_certificate,
        key=paths.device_key,
        data=openssl_csr(tmp_path).b64,
        workdir=tmp_path,
    )
    assert ok.status == 200, ok.text
    key, cert = tmp_path / "rogue.key", tmp_path / "rogue.pem"
    run([tool("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-subj",
         "/CN=rogue", "-days", "2"])  # fmt: skip
    # curl, not s_client: under TLS 1.2 the client considers the handshake done before the
    # server's verdict arrives, so only a request shows the refusal.
    refused = run(
        [tool("curl"), "-sS", "--cacert", paths.ca_certificates, "--cert", cert, "--key", key,
         "--data-binary", "x", server.est_url("simpleenroll")],
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0, refused.stdout
    assert b"HTTP" not in refused.stdout


# BCP-003-01 T3 and T2 as the spec lists them, written out here (not taken from the server's
# constants) so the test is a witness, not an echo.
SPEC_TLS12_ORDER = [
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-SHA256", "ECDHE-RSA-AES256-SHA384",
    "DHE-RSA-AES128-SHA256", "DHE-RSA-AES256-SHA256",
]  # fmt: skip
SPEC_TLS13_ORDER = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
]


def _server_preference(
    server: EstkitTestServer, version: str, option: str, suites: list[str]
) -> list[str]:
    """Offer ``suites`` in reverse, note the server's pick, drop it, repeat: the server's order."""
    remaining = list(reversed(suites))
    picks = []
    while remaining:
        result = s_client(server.host, server.port, version, option, ":".join(remaining))
        negotiated = _negotiated(result.stdout)
        assert negotiated is not None, (remaining, result.stderr)
        picks.append(negotiated[1])
        remaining.remove(negotiated[1])
    return picks


def test_tls12_preference_is_exactly_the_bcp_003_01_order(estkit_server: EstkitTestServer) -> None:
    """Every listed suite is accepted, and the server prefers them in the spec's order."""
    assert _server_preference(estkit_server, "-tls1_2", "-cipher", SPEC_TLS12_ORDER) == (
        SPEC_TLS12_ORDER
    )


def test_tls13_preference_is_the_bcp_003_01_order(estkit_server: EstkitTestServer) -> None:
    assert _server_preference(estkit_server, "-tls1_3", "-ciphersuites", SPEC_TLS13_ORDER) == (
        SPEC_TLS13_ORDER
    )


def test_tls12_resumption_through_the_session_cache_without_tickets(
    estkit_server: EstkitTestServer,
) -> None:
    """The server issues no stateless session ticket (OpenSSL 3.0 re-encodes the whole session,
    client certificate included, for each one) and a TLS 1.2 client still resumes, by
    session ID from the server's cache."""
    result = s_client(estkit_server.host, estkit_server.port, "-tls1_2", "-reconnect")
    assert _negotiated(result.stdout) is not None, result.stderr
    assert b"TLS session ticket:" not in result.stdout
    assert re.search(rb"^Reused, TLSv1\.2", result.stdout, re.MULTILINE), result.stdout[-2000:]


def test_tls13_handshake_sends_one_ticket_and_caches_nothing(tmp_path) -> None:
    """TLS 1.3: one ticket, sent right after the handshake (without any server flight there, a
    client whose request leaves in a second segment with Nagle on waits ~40 ms for the server's
    delayed ACK), and nothing kept in the session cache (two stateful tickets keep each session,
    about 11 KB per handshake). Over real sockets with the context ``serve`` builds."""
    import socket
    import ssl
    import threading

    from estkit.server.datadir import init_data_dir
    from estkit.server.tls import CertificatePair, build_server_context

    paths = init_data_dir(tmp_path / "data", key_type="p256")
    pairs = [
        CertificatePair(*pair)
        for pair in zip(paths.server_certificates, paths.server_keys, strict=True)
    ]
    server = build_server_context(pairs).context
    client = ssl.create_default_context(cafile=str(paths.ca_certificates))
    client.minimum_version = ssl.TLSVersion.TLSv1_3
    handshakes = 20
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(handshakes):
            accepted, _ = listener.accept()
            with server.wrap_socket(accepted, server_side=True) as tls:
                tls.sendall(b"ok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        for _ in range(handshakes):
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                assert tls.recv(2) == b"ok"
                assert tls.version() == "TLSv1.3"
                session = tls.session
                assert session is not None and session.has_ticket
        thread.join(10)
    finally:
        listener.close()
    assert server.session_stats()["accept_good"] == handshakes
    assert server.session_stats()["number"] == 0


def test_handshake_skips_openssl_chain_verification(tmp_path) -> None:
    """The certificate-verify callback replaces X509_verify_cert: the per-certificate verify
    callback (a GIL round trip each) is never reached, yet a client certificate chain goes
    through and is readable by the application."""
    import contextlib
    import ctypes
    import ssl

    from cryptography import x509

    from estkit.ca.manufacturer import create_manufacturer_ca, issue_device_certificate
    from estkit.server.datadir import init_data_dir
    from estkit.server.tls import CertificatePair, build_server_context
    from estkit.server.tls_verify_hook import _load_libssl, _ssl_ctx_pointer

    paths = init_data_dir(tmp_path / "data", key_type="p256")
    tls = paths.data_dir / "tls"
    server = build_server_context([CertificatePair(tls / "server-ec.pem", tls / "server-ec.key")])
    assert server.verify_in_app
    lib = _load_libssl()
    pointer = _ssl_ctx_pointer(server.context, lib) if lib is not None else None
    assert lib is not None and pointer is not None
    calls: list[int] = []
    counting = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)(
        lambda ok, store: calls.append(ok) or 1
    )
    lib.SSL_CTX_set_verify(pointer, 1, ctypes.cast(counting, ctypes.c_void_p))

    manufacturer = create_manufacturer_ca(tmp_path / "mfr")
    device = issue_device_certificate(manufacturer, device_serial="HS-1", key_type="p256")
    device.write(tmp_path / "device.pem", tmp_path / "device.key")
    client = ssl.create_default_context(cafile=str(paths.ca_certificates))
    client.check_hostname = False
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.load_cert_chain(tmp_path / "device.pem", tmp_path / "device.key")

    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_end = server.context.wrap_bio(server_in, server_out, server_side=True)
    client_end = client.wrap_bio(client_in, client_out, server_hostname="localhost")
    ends = {
        "client": (client_end, client_out, server_in),
        "server": (server_end, server_out, client_in),
    }
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, (end, out, peer_in) in ends.items():
            if not done[name]:
                with contextlib.suppress(ssl.SSLWantReadError):
                    end.do_handshake()
                    done[name] = True
            if out.pending:
                peer_in.write(out.read())
    assert done == {"client": True, "server": True}
    presented = x509.load_der_x509_certificate(server_end.getpeercert(binary_form=True))
    assert presented.serial_number == device.certificate.serial_number
    assert calls == []
