"""The client against the real estkit EST server on loopback (issue 3's integration tests).

Every operation, RSA and ECDSA, labels, proof-of-possession on ``pop`` (the server offers TLS
1.3, so this also covers the pin-to-TLS-1.2 retry), Basic and Digest on ``http``, the approval
round trip on ``manual`` with Retry-After, bootstrap with right and wrong fingerprints, an
untrusted server. ``openssl`` and ``curl`` act as independent witnesses where they can.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from estkit.client import (
    AsyncEstClient,
    ClientCredentials,
    CsrSpec,
    EstAuthError,
    EstBootstrapError,
    EstClient,
    EstHttpError,
    EstNotFoundError,
    EstTlsError,
    bootstrap_cacerts,
)
from estkit.protocol import (
    certificates_to_pem,
    common_name,
    decode_certs_only_body,
    describe_public_key,
    dns_names,
    generate_private_key,
    load_pem_certificates,
    public_keys_equal,
    sha256_fingerprint,
)

from .conftest import SleepRecorder
from .pki import QuirkyPki

HTTP_USER, HTTP_PASSWORD = "alice", "wonderland"


def _device(server: Any) -> ClientCredentials:
    return ClientCredentials.from_files(server.paths.device_certificate, server.paths.device_key)


def _client(server: Any, **options: Any) -> EstClient:
    options.setdefault("trust", server.paths.ca_certificates)
    return EstClient(server.url, **options)


def _spec(key_type: str, name: str = "node-1.example") -> CsrSpec:
    return CsrSpec(
        key=generate_private_key(key_type),
        common_name=name,
        dns_names=(name,),
        serial_number="SN-0001",
    )


def _openssl_verify(tmp_path: Path, root: Path, leaf_and_chain: bytes) -> str:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed as a witness"
    bundle = tmp_path / "issued.pem"
    bundle.write_bytes(leaf_and_chain)
    certs = load_pem_certificates(leaf_and_chain)
    untrusted = tmp_path / "untrusted.pem"
    untrusted.write_bytes(certificates_to_pem(certs[1:]))
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(certificates_to_pem(certs[:1]))
    args = [openssl, "verify", "-CAfile", str(root), "-untrusted", str(untrusted), str(leaf)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    return done.stdout + done.stderr


def test_cacerts_matches_what_curl_sees(estkit_server: Any) -> None:
    with _client(estkit_server) as client:
        result = client.cacerts()
    expected = load_pem_certificates(Path(estkit_server.paths.ca_certificates).read_bytes())
    assert result.certificates == expected
    assert result.ca_set.current_root is not None
    curl = shutil.which("curl")
    assert curl, "curl is needed as a witness"
    done = subprocess.run(
        [
            curl,
            "--silent",
            "--fail",
            "--cacert",
            str(estkit_server.paths.ca_certificates),
            estkit_server.est_url("cacerts"),
        ],
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert decode_certs_only_body(done.stdout) == result.certificates


def test_csrattrs(estkit_server: Any) -> None:
    with _client(estkit_server) as client:
        plain = client.csrattrs()
    with _client(estkit_server, label="pop") as client:
        pop = client.csrattrs()
    assert plain.status in (200, 204, 404)
    assert not plain.requires_pop
    assert pop.requires_pop


@pytest.mark.parametrize("key_type", ["rsa2048", "p256", "p384"])
def test_enroll_rsa_and_ecdsa(estkit_server: Any, key_type: str, tmp_path: Path) -> None:
    spec = _spec(key_type)
    with _client(estkit_server, credentials=_device(estkit_server)) as client:
        result = client.simpleenroll(spec, pop=False)
        if not result.chain:
            result.chain = client.chain_for(result.certificate)
    cert = result.certificate
    assert public_keys_equal(cert.public_key(), spec.key.public_key())
    assert describe_public_key(cert.public_key()).family == ("rsa" if "rsa" in key_type else "ec")
    assert common_name(cert) == "node-1.example"
    assert "node-1.example" in dns_names(cert)
    assert cert.not_valid_before_utc <= datetime.now(UTC)
    assert result.private_key is spec.key
    output = _openssl_verify(tmp_path, Path(estkit_server.paths.root_ca), result.fullchain_pem())
    assert "leaf.pem: OK" in output, output
    with estkit_server.open_store() as store:
        record = store.get_issued(format(cert.serial_number, "x"))
    assert record is not None and record.operation == "simpleenroll"


def test_label_selects_the_profile(estkit_server: Any) -> None:
    with _client(estkit_server, label="short", credentials=_device(estkit_server)) as client:
        result = client.simpleenroll(_spec("p256"), pop=False)
    cert = result.certificate
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    # The "short" label issues 10-second certificates (plus the profile's backdating).
    assert lifetime.total_seconds() < 3600
    with estkit_server.open_store() as store:
        record = store.get_issued(format(cert.serial_number, "x"))
    assert record is not None and record.label == "short"


def test_unknown_label_is_404(estkit_server: Any) -> None:
    with (
        _client(estkit_server, label="no-such-label", credentials=_device(estkit_server)) as c,
        pytest.raises(EstNotFoundError) as caught,
    ):
        c.simpleenroll(_spec("p256"), pop=False)
    assert caught.value.status == 404
    assert "no-such-label" in str(caught.value)


def _enrolled_credentials(server: Any, tmp_path: Path, key_type: str) -> ClientCredentials:
    with _client(server, credentials=_device(server)) as client:
        result = client.simpleenroll(_spec(key_type, "renew-me.example"), pop=False)
    cert_file, key_file = tmp_path / "current.pem", tmp_path / "current.key"
    cert_file.write_bytes(result.fullchain_pem())
    key_file.write_bytes(result.key_pem())
    return ClientCredentials.from_files(cert_file, key_file)


def test_reenroll_copies_names_and_makes_a_new_key(estkit_server: Any, tmp_path: Path) -> None:
    current = _enrolled_credentials(estkit_server, tmp_path, "p256")
    with _client(estkit_server, credentials=current) as client:
        renewed = client.simplereenroll(pop=False)
    assert renewed.certificate.subject == current.certificate.subject
    assert dns_names(renewed.certificate) == dns_names(current.certificate)
    assert not public_keys_equal(renewed.certificate.public_key(), current.key.public_key())
    assert describe_public_key(renewed.certificate.public_key()).curve == "secp256r1"
    assert renewed.certificate.serial_number != current.certificate.serial_number
    with estkit_server.open_store() as store:
        record = store.get_issued(format(renewed.certificate.serial_number, "x"))
    assert record is not None and record.operation == "simplereenroll"


def test_reenroll_can_keep_the_key(estkit_server: Any, tmp_path: Path) -> None:
    current = _enrolled_credentials(estkit_server, tmp_path, "rsa2048")
    with _client(estkit_server, credentials=current) as client:
        renewed = client.simplereenroll(reuse_key=True, pop=False)
    assert public_keys_equal(renewed.certificate.public_key(), current.key.public_key())


def test_reenroll_without_credentials_is_a_usage_error(estkit_server: Any) -> None:
    with _client(estkit_server) as client, pytest.raises(ValueError, match="being renewed"):
        client.simplereenroll()


def test_serverkeygen(estkit_server: Any) -> None:
    with _client(estkit_server, credentials=_device(estkit_server)) as client:
        result = client.serverkeygen(common_name="gen.example", dns_names=["gen.example"])
    assert public_keys_equal(result.certificate.public_key(), result.private_key.public_key())
    assert not result.key_was_encrypted
    assert common_name(result.certificate) == "gen.example"


def test_serverkeygen_encrypted_to_an_rsa_client_certificate(
    estkit_server: Any, tmp_path: Path
) -> None:
    rsa_credentials = _enrolled_credentials(estkit_server, tmp_path, "rsa2048")
    with _client(estkit_server, credentials=rsa_credentials) as client:
        result = client.serverkeygen(common_name="renew-me.example", encrypt_key=True)
    assert result.key_was_encrypted
    assert public_keys_equal(result.certificate.public_key(), result.private_key.public_key())


def test_pop_label_links_the_csr(estkit_server: Any) -> None:
    with _client(estkit_server, label="pop", credentials=_device(estkit_server)) as client:
        result = client.simpleenroll(_spec("p256"), pop=True)
    assert result.pop_linked
    # The estkit server offers TLS 1.3 and tls-exporter linking (issue 18): no TLS 1.2 reconnect.
    assert any("tls-exporter (RFC 9266)" in note for note in result.notes)
    assert not any("reconnected with TLS 1.2" in note for note in result.notes)


def test_pop_label_refuses_an_unlinked_csr(estkit_server: Any) -> None:
    with estkit_server.open_store() as store:
        since = max((event.id for event in store.list_events()), default=0)
    with (
        _client(estkit_server, label="pop", credentials=_device(estkit_server)) as client,
        pytest.raises(EstHttpError) as caught,
    ):
        client.simpleenroll(_spec("p256"), pop=False)
    assert 400 <= caught.value.status < 500
    with estkit_server.open_store() as store:
        refusals = store.list_events("refused", since_id=since)
    assert refusals, "the server recorded the refusal"
    assert any("possession" in event.message or "tls-unique" in event.message for event in refusals)


@pytest.mark.parametrize("scheme", ["basic", "digest"])
def test_http_auth_on_the_http_label(estkit_server: Any, scheme: str) -> None:
    with _client(
        estkit_server,
        label="http",
        username=HTTP_USER,
        password=HTTP_PASSWORD,
        auth_scheme=scheme,
    ) as client:
        result = client.simpleenroll(_spec("p256"), pop=False)
    assert common_name(result.certificate) == "node-1.example"
    assert client._auth is not None and client._auth.answered == scheme


def test_http_label_without_credentials_is_refused(estkit_server: Any) -> None:
    with _client(estkit_server, label="http") as client, pytest.raises(EstAuthError) as caught:
        client.simpleenroll(_spec("p256"), pop=False)
    assert caught.value.status == 401
    # The library names the parameters; the CLI maps them to --user/--password/--cert/--key.
    assert "user name and password" in (caught.value.hint or "")
    assert caught.value.params == ("username", "password", "credentials")


def test_http_label_with_a_wrong_password_is_refused(estkit_server: Any) -> None:
    with (
        _client(estkit_server, label="http", username=HTTP_USER, password="nope") as client,
        pytest.raises(EstAuthError, match="did not accept the credentials"),
    ):
        client.simpleenroll(_spec("p256"), pop=False)


def test_manual_approval_round_trip(estkit_server: Any, sleeper: SleepRecorder) -> None:
    """202 + Retry-After until an operator approves in the store; then the certificate."""
    spec = _spec("p256", "approve-me.example")

    def operator(attempt: int, seconds: float, reason: str) -> None:
        sleeper.on_wait(attempt, seconds, reason)
        if attempt == 2:  # the operator looks at the queue while the client waits
            with estkit_server.open_store() as store:
                pending = [
                    r
                    for r in store.list_requests("pending")
                    if r.common_name == "approve-me.example"
                ]
                assert len(pending) == 1, "one queued request for this CSR, not one per poll"
                store.decide_request(pending[0].id, True, by="test-operator")

    with _client(
        estkit_server,
        label="manual",
        credentials=_device(estkit_server),
        sleep=sleeper,
        on_wait=operator,
    ) as client:
        result = client.simpleenroll(spec, pop=False)
    assert result.attempts == 3
    assert sleeper.waits == [1, 1]  # the label's Retry-After, honoured each time
    assert all("202" in reason for _a, _s, reason in sleeper.progress)
    assert public_keys_equal(result.certificate.public_key(), spec.key.public_key())


def test_bootstrap_with_the_server_fingerprint(estkit_server: Any) -> None:
    fingerprint = estkit_server.paths.ca_fingerprint
    result = bootstrap_cacerts(estkit_server.url, expected_fingerprint=fingerprint)
    assert result.matched is not None and sha256_fingerprint(result.matched) == fingerprint
    root = load_pem_certificates(Path(estkit_server.paths.root_ca).read_bytes())[0]
    assert root in result.certificates


def test_bootstrap_with_a_wrong_fingerprint(estkit_server: Any, pki: QuirkyPki) -> None:
    with pytest.raises(EstBootstrapError) as caught:
        bootstrap_cacerts(estkit_server.url, expected_fingerprint=sha256_fingerprint(pki.root))
    assert estkit_server.paths.ca_fingerprint in str(caught.value)


def test_untrusted_server(estkit_server: Any, pki: QuirkyPki) -> None:
    with (
        EstClient(estkit_server.url, trust=pki.files["root"]) as client,
        pytest.raises(EstTlsError) as caught,
    ):
        client.cacerts()
    assert "Quirky Root CA" in str(caught.value)


async def test_async_client_against_the_server(estkit_server: Any) -> None:
    async with AsyncEstClient(
        estkit_server.url,
        label="pop",
        trust=estkit_server.paths.ca_certificates,
        credentials=_device(estkit_server),
    ) as client:
        cacerts = await client.cacerts()
        result = await client.simpleenroll(_spec("p384"))  # auto: /csrattrs asks for PoP
    assert cacerts.ca_set.current_root is not None
    assert result.pop_linked
    assert isinstance(result.certificate, x509.Certificate)


def test_pem_helpers_round_trip(estkit_server: Any) -> None:
    with _client(estkit_server, credentials=_device(estkit_server)) as client:
        result = client.simpleenroll(_spec("p256"), pop=False)
    assert load_pem_certificates(result.certificate_pem()) == [result.certificate]
    assert b"PRIVATE KEY" in result.key_pem()
    assert base64.b64decode(result.key_pem().split(b"-----")[2])  # PEM body is base64


async def test_async_concurrent_pop_enrollments(estkit_server: Any) -> None:
    """Several linked enrollments at once on one client: each gets its own connection."""
    import asyncio

    async with AsyncEstClient(
        estkit_server.url,
        label="pop",
        trust=estkit_server.paths.ca_certificates,
        credentials=_device(estkit_server),
    ) as client:
        specs = [_spec("p256", f"node-{i}.example") for i in range(4)]
        results = await asyncio.gather(*(client.simpleenroll(s, pop=True) for s in specs))
    assert all(result.pop_linked for result in results)
    for spec, result in zip(specs, results, strict=True):
        assert public_keys_equal(result.certificate.public_key(), spec.key.public_key())


def test_csrattrs_404_quotes_the_server_so_an_unknown_label_shows(estkit_server: Any) -> None:
    with _client(estkit_server, label="nosuch") as client:
        result = client.csrattrs()
    assert result.status == 404 and result.attrs.oids == ()
    assert any("unknown EST label 'nosuch'" in warning for warning in result.warnings)
