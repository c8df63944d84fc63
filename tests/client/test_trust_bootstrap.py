"""Explicit trust (E12), TLS failures with useful messages, bootstrap with a fingerprint (E13)."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from estkit.client import (
    ClientCredentials,
    EstBootstrapError,
    EstClient,
    EstConnectionError,
    EstTimeoutError,
    EstTlsError,
    RetryPolicy,
    TrustAnchors,
    async_bootstrap_cacerts,
    bootstrap_cacerts,
    fetch_cacerts_unverified_for_manual_confirmation,
)
from estkit.protocol import (
    build_certs_only,
    certificates_to_pem,
    encode_base64_body,
    private_key_to_pem,
    sha256_fingerprint,
)

from .pki import QuirkyPki, der, make_ca, make_leaf
from .quirky import Canned, QuirkyServer, Recorded

CACERTS = "/.well-known/est/cacerts"

Start = Callable[..., QuirkyServer]


def _cacerts(*certs: object) -> Canned:
    return Canned(
        200,
        [("Content-Type", "application/pkcs7-mime")],
        encode_base64_body(build_certs_only(certs)),  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> QuirkyPki:
    """Another, unrelated PKI: its root must not make our server trusted."""
    return QuirkyPki.create(tmp_path_factory.mktemp("stranger"), "Stranger")


# --- explicit trust -------------------------------------------------------------------------


def test_no_trust_anchors_is_refused_before_connecting() -> None:
    with pytest.raises(ValueError, match="no trust anchors"):
        EstClient("https://127.0.0.1:1")


def test_plain_http_is_refused() -> None:
    with pytest.raises(ValueError, match="HTTPS"):
        EstClient("http://127.0.0.1:1", use_system_trust=True)


def test_untrusted_server_fails_with_the_anchors_used(
    pki: QuirkyPki, stranger: QuirkyPki, quirky: Start
) -> None:
    server = quirky({CACERTS: _cacerts(pki.root)})
    with (
        EstClient(server.url, trust=stranger.files["root"]) as client,
        pytest.raises(EstTlsError) as caught,
    ):
        client.cacerts()
    error = caught.value
    assert server.requests == []  # TLS refused: no HTTP request was made
    assert "unknown ca" in server.wait_for_handshake_error().lower()
    assert "Stranger Root CA" in str(error)
    assert str(stranger.files["root"]) in (error.trust_description or "")
    assert "trust the CA that issued" in (error.hint or "")
    assert error.params == ("trust", "bootstrap_fingerprint")  # the CLI shows --trust PEM


def test_hostname_mismatch_is_reported(pki: QuirkyPki, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_leaf(
        key.public_key(), "other", pki.issuing, pki.issuing_key, dns=("other.example",)
    )
    chain = tmp_path / "other.pem"
    chain.write_bytes(certificates_to_pem([cert, pki.issuing]))
    key_file = tmp_path / "other.key"
    key_file.write_bytes(private_key_to_pem(key))
    with QuirkyServer(chain, key_file, {CACERTS: _cacerts(pki.root)}) as server:
        with (
            EstClient(server.url, trust=pki.files["root"]) as client,
            pytest.raises(EstTlsError) as caught,
        ):
            client.cacerts()
        assert server.requests == []
    assert "127.0.0.1" in (caught.value.hint or "")


def test_intermediate_as_explicit_anchor_is_enough(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky({CACERTS: _cacerts(pki.issuing)})
    with EstClient(server.url, trust=pki.files["issuing"]) as client:
        result = client.cacerts()
    assert result.certificates == [pki.issuing]
    assert any("no self-signed root" in w for w in result.warnings)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_old_tls_is_refused(pki: QuirkyPki, quirky: Start) -> None:
    # A server offering only TLS 1.0/1.1 (SECLEVEL=0 lets OpenSSL 3 offer them at all):
    # BCP-003-01 T1 and RFC 8996 forbid those versions, so the client must not talk to it.
    server = quirky(
        {CACERTS: _cacerts(pki.root)},
        minimum_version=ssl.TLSVersion.TLSv1,
        maximum_version=ssl.TLSVersion.TLSv1_1,
        ciphers="DEFAULT:@SECLEVEL=0",
    )
    with (
        EstClient(server.url, trust=pki.files["root"]) as client,
        pytest.raises(EstTlsError, match="handshake") as caught,
    ):
        client.cacerts()
    assert server.requests == []
    assert "unsupported protocol" in server.wait_for_handshake_error().lower()
    assert "VERSION" in str(caught.value).upper()


def test_unreachable_server_is_a_connection_error(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky({})
    port = server.port
    server.stop()
    with (
        EstClient(f"https://127.0.0.1:{port}", trust=pki.files["root"], timeout=5) as client,
        pytest.raises(EstConnectionError) as caught,
    ):
        client.cacerts()
    assert "running" in (caught.value.hint or "")


def test_client_certificate_is_presented(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky(
        {CACERTS: _cacerts(pki.root)}, client_ca=pki.files["root"], require_client_cert=True
    )
    credentials = ClientCredentials.from_files(pki.files["client_chain"], pki.files["client_key"])
    with EstClient(server.url, trust=pki.files["root"], credentials=credentials) as client:
        client.cacerts()
    assert server.requests[0].peer_certificate == der(pki.client_cert)


def test_client_credentials_from_objects_work_too(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky(
        {CACERTS: _cacerts(pki.root)}, client_ca=pki.files["root"], require_client_cert=True
    )
    credentials = ClientCredentials((pki.client_cert, pki.issuing), pki.client_key)
    with EstClient(server.url, trust=pki.files["root"], credentials=credentials) as client:
        client.cacerts()
    assert server.requests[0].peer_certificate is not None


def test_mismatched_client_key_is_refused(pki: QuirkyPki) -> None:
    with pytest.raises(ValueError, match="does not belong"):
        ClientCredentials.from_files(pki.files["client_chain"], pki.files["server_key"])


def test_trust_anchor_description_names_the_source(pki: QuirkyPki) -> None:
    anchors = TrustAnchors.from_files([pki.files["root"]])
    assert "Quirky Root CA" in anchors.describe()
    assert str(pki.files["root"]) in anchors.describe()
    assert not anchors.use_system_trust


# --- bootstrap --------------------------------------------------------------------------------


def test_bootstrap_with_the_root_fingerprint(pki: QuirkyPki, stranger: QuirkyPki) -> None:
    # The server's certificate is from a PKI nobody trusts: bootstrap does not verify it.
    with QuirkyServer(
        stranger.files["server_chain"],
        stranger.files["server_key"],
        {CACERTS: _cacerts(pki.root, pki.issuing)},
    ) as server:
        result = bootstrap_cacerts(server.url, expected_fingerprint=sha256_fingerprint(pki.root))
        assert server.paths() == [CACERTS]
    assert result.certificates == [pki.root, pki.issuing]
    assert result.matched == pki.root
    assert any("matched the current root CA" in w for w in result.warnings)


def test_bootstrap_fingerprint_of_the_issuing_ca(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky({CACERTS: _cacerts(pki.root, pki.issuing)})
    fingerprint = sha256_fingerprint(pki.issuing).removeprefix("sha256:").upper()
    result = bootstrap_cacerts(server.url, expected_fingerprint=fingerprint)
    assert result.matched == pki.issuing
    # The self-signed root whose key signed the matched CA is kept too.
    assert result.certificates == [pki.root, pki.issuing]
    assert any("intermediate CA" in w for w in result.warnings)


def test_bootstrap_drops_a_root_that_does_not_chain(
    pki: QuirkyPki, stranger: QuirkyPki, quirky: Start
) -> None:
    server = quirky({CACERTS: _cacerts(pki.root, stranger.root, pki.issuing)})
    result = bootstrap_cacerts(server.url, expected_fingerprint=sha256_fingerprint(pki.root))
    assert result.certificates == [pki.root, pki.issuing]
    assert any("Stranger Root CA" in w and "does not chain" in w for w in result.warnings)


def test_bootstrap_with_a_wrong_fingerprint_trusts_nothing(
    pki: QuirkyPki, stranger: QuirkyPki, quirky: Start
) -> None:
    server = quirky({CACERTS: _cacerts(pki.root, pki.issuing)})
    with pytest.raises(EstBootstrapError) as caught:
        bootstrap_cacerts(server.url, expected_fingerprint=sha256_fingerprint(stranger.root))
    assert server.paths() == [CACERTS]
    message = str(caught.value)
    assert sha256_fingerprint(pki.root) in message  # says what it did receive
    assert "intercepting" in (caught.value.hint or "")


def test_bootstrap_rejects_a_malformed_fingerprint(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky({CACERTS: _cacerts(pki.root)})
    with pytest.raises(EstBootstrapError, match="SHA-256"):
        bootstrap_cacerts(server.url, expected_fingerprint="sha256:1234")


def test_rollover_roles_are_reported(tmp_path: Path, pki: QuirkyPki, quirky: Start) -> None:
    """OldWithOld, NewWithNew, OldWithNew, NewWithOld (RFC 4210 §4.4, BCP-003-03 C5)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    old_key, new_key = pki.root_key, ec.generate_private_key(ec.SECP256R1())
    old = pki.root
    new = make_ca("Quirky Root CA", new_key)

    def cross(subject_key: object, signer_key: object) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(old.subject)
            .issuer_name(old.subject)
            .public_key(subject_key.public_key())  # type: ignore[attr-defined]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(signer_key, hashes.SHA256())  # type: ignore[arg-type]
        )

    old_with_new = cross(old_key, new_key)
    new_with_old = cross(new_key, old_key)
    server = quirky({CACERTS: _cacerts(old, new, old_with_new, new_with_old, pki.issuing)})
    unconfirmed = fetch_cacerts_unverified_for_manual_confirmation(server.url)
    roles = {candidate.sha256: candidate.role for candidate in unconfirmed.candidates}
    assert roles[sha256_fingerprint(new)] == "current root CA (NewWithNew)"
    assert roles[sha256_fingerprint(old)] == "old root CA (OldWithOld)"
    assert roles[sha256_fingerprint(old_with_new)] == "OldWithNew rollover certificate"
    assert roles[sha256_fingerprint(new_with_old)] == "NewWithOld rollover certificate"
    # Confirming the OLD root still vouches for the new one through NewWithOld.
    confirmed = unconfirmed.confirm(sha256_fingerprint(old))
    assert {sha256_fingerprint(c) for c in confirmed.certificates} == set(roles)
    assert confirmed.ca_set.current_root == new


def test_unconfirmed_certificates_need_confirmation(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky({CACERTS: _cacerts(pki.root, pki.issuing)})
    unconfirmed = fetch_cacerts_unverified_for_manual_confirmation(server.url)
    assert "NOT TRUSTED" in repr(unconfirmed)
    assert not hasattr(unconfirmed, "certificates")
    assert [c.fingerprint for c in unconfirmed.candidates] == [
        sha256_fingerprint(pki.root),
        sha256_fingerprint(pki.issuing),
    ]
    assert unconfirmed.candidates[0].role == "current root CA"
    confirmed = unconfirmed.confirm()
    assert confirmed.certificates == [pki.root, pki.issuing]
    with pytest.raises(EstBootstrapError):
        unconfirmed.confirm(
            sha256_fingerprint(make_ca("x", ec.generate_private_key(ec.SECP256R1())))
        )


async def test_async_bootstrap(pki: QuirkyPki, quirky: Start) -> None:
    server = quirky({CACERTS: _cacerts(pki.root, pki.issuing)})
    result = await async_bootstrap_cacerts(
        server.url, expected_fingerprint=sha256_fingerprint(pki.root)
    )
    assert result.certificates == [pki.root, pki.issuing]


def test_silent_server_is_a_timeout(pki: QuirkyPki, quirky: Start) -> None:
    release = threading.Event()

    def stall(request: Recorded) -> Canned:
        release.wait(30)  # answers only after the client has given up
        return Canned(500)

    server = quirky({CACERTS: stall})
    try:
        with (
            # One attempt: a timed-out one is otherwise repeated (tests/client/test_retry.py).
            EstClient(
                server.url, trust=pki.files["root"], timeout=1.5, retry=RetryPolicy(max_attempts=1)
            ) as client,
            pytest.raises(EstTimeoutError) as caught,
        ):
            client.cacerts()
    finally:
        release.set()
    assert server.paths() == [CACERTS]  # the request arrived; the answer did not
    assert "timeout" in (caught.value.hint or "")
