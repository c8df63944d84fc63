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
