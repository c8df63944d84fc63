"""Registration-authority mode (issue 21): two real estkit servers over real TLS on loopback,
an upstream CA and an RA in front of it; devices talk to the RA only."""

from __future__ import annotations

import contextlib
import datetime as dt
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from conftest import EstkitTestServer, make_server
from estkit.ca.authority import CertificateAuthority
from estkit.ca.store import open_store
from estkit.client import (
    ClientCredentials,
    CsrSpec,
    EstAuthError,
    EstClient,
    EstHttpError,
    EstRetryLaterError,
    RetryPolicy,
)
from estkit.protocol.certs import certificates_to_pem, is_signed_by, sha256_fingerprint
from estkit.protocol.keys import generate_private_key, private_key_to_pem
from estkit.server.approval import approve_if_allowed
from estkit.server.config import load_config
from estkit.server.datadir import DEMO_DEVICE_SERIAL
from estkit.server.ra import init_ra_data_dir, issue_ra_certificate
from estkit.server.runner import start_server_thread
from estkit.server.upstream import UpstreamError

ONE_TRY = RetryPolicy(max_attempts=1)


class Pair:
    def __init__(self, upstream: EstkitTestServer, ra: EstkitTestServer, ra_cert: Path) -> None:
        self.upstream, self.ra, self.ra_cert = upstream, ra, ra_cert

    def device(self, **options: object) -> EstClient:
        creds = ClientCredentials.from_files(
            self.ra.paths.device_certificate, self.ra.paths.device_key
        )
        return EstClient(
            self.ra.url,
            trust=[self.upstream.paths.root_ca],
            credentials=creds,
            retry=ONE_TRY,
            **options,  # type: ignore[arg-type]
        )

    def upstream_seen(self) -> tuple[int, int]:
        """(certificates issued, events logged) on the upstream: any request that reaches its
        enrollment path leaves one of them."""
        with open_store(self.upstream.paths.database_url) as store:
            return len(store.list_issued()), len(store.list_events())


def _ra(
    tmp: Path,
    upstream: EstkitTestServer,
    *,
    label: str | None = None,
    trust_ra: bool = True,
) -> tuple[EstkitTestServer, Path]:
    cert, key = tmp / "ra.pem", tmp / "ra.key"
    issue_ra_certificate(upstream.paths.data_dir, "ra-one", cert, key, trust=trust_ra)
    paths = init_ra_data_dir(
        tmp / "ra",
        upstream_url=upstream.url,
        upstream_trust=upstream.paths.ca_certificates,
        ra_certificate=cert,
        ra_key=key,
        upstream_label=label,
    )
    return EstkitTestServer(running=start_server_thread(paths.data_dir), paths=paths), cert


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    upstream = make_server(
        tmp_path / "up", {"manual": {"approval": "manual", "retry_after_seconds": 1}}
    )
    ra, cert = _ra(tmp_path, upstream)
    try:
        yield Pair(upstream, ra, cert)
    finally:
        ra.stop()
        upstream.stop()


def _spec(name: str = "cam-1.example.com", serial: str | None = DEMO_DEVICE_SERIAL) -> CsrSpec:
    return CsrSpec(
        key=generate_private_key("p256"), common_name=name, dns_names=(name,), serial_number=serial
    )


def test_device_enrolls_through_the_ra_and_gets_the_upstreams_certificate(pair: Pair) -> None:
    upstream_ca = CertificateAuthority.load(pair.upstream.paths.data_dir / "ca")
    with pair.device() as client:
        result = client.simpleenroll(_spec(), pop=True)
        cacerts = client.cacerts().certificates
    cert = result.certificate
    # Signed by the upstream CA (the RA has no CA key at all).
    assert is_signed_by(cert, upstream_ca.issuer_certificate)
    assert not (pair.ra.paths.data_dir / "ca").exists()
    assert cacerts == upstream_ca.cacerts
    serial = format(cert.serial_number, "x")
    # The RA recorded what it obtained and who asked; the upstream saw the RA as requester.
    with open_store(pair.ra.paths.database_url) as store:
        mine = [r for r in store.list_issued() if int(r.serial, 16) == cert.serial_number]
        events = [e for e in store.list_events("upstream")]
    assert len(mine) == 1 and mine[0].requester.startswith("sha256:"), mine
    assert any(serial.lstrip("0") in e.message for e in events), events
    ra_fp = sha256_fingerprint(x509.load_pem_x509_certificate(pair.ra_cert.read_bytes()))
    with open_store(pair.upstream.paths.database_url) as store:
        theirs = [r for r in store.list_issued() if int(r.serial, 16) == cert.serial_number]
    assert theirs[0].requester == f"ra:{ra_fp}"


def test_ra_refuses_names_its_policy_refuses_and_the_upstream_sees_nothing(pair: Pair) -> None:
    before = pair.upstream_seen()
    with pair.device() as client, pytest.raises(EstHttpError) as caught:
        client.simpleenroll(_spec("*.example.com"), pop=True)
    assert caught.value.status == 400
    assert "wildcard" in caught.value.server_text.lower(), caught.value.server_text
    assert pair.upstream_seen() == before


def test_pop_is_checked_on_the_ras_session(pair: Pair, tmp_path: Path) -> None:
    from estkit.server.config import add_label

    add_label(pair.ra.paths.config, "pop", require_pop=True)
    before = pair.upstream_seen()
    creds = ClientCredentials.from_files(pair.ra.paths.device_certificate, pair.ra.paths.device_key)
    with EstClient(
        pair.ra.url,
        label="pop",
        trust=[pair.upstream.paths.ca_certificates],
        credentials=creds,
        retry=ONE_TRY,
    ) as client:
        with pytest.raises(EstHttpError) as caught:
            client.simpleenroll(_spec(), pop=False)
        assert caught.value.status == 400 and "proof-of-possession" in caught.value.server_text
        assert pair.upstream_seen() == before
        assert client.simpleenroll(_spec(), pop=True).certificate is not None


def test_upstream_skips_pop_only_for_a_trusted_ra(tmp_path: Path) -> None:
    """Forwarded to an upstream label that requires PoP: the RA cannot link the CSR to the
    upstream's TLS session; a trusted RA certificate is enough there."""
    upstream = make_server(tmp_path / "up", {"pop": {"require_pop": True}})
    try:
        ra, _cert = _ra(tmp_path, upstream, label="pop")
        try:
            pair = Pair(upstream, ra, _cert)
            with pair.device() as client:
                assert client.simpleenroll(_spec(), pop=True).certificate is not None

            # The same RA certificate, no longer listed in [ra] trusted: an ordinary client.
            def untrust(doc: dict) -> None:  # type: ignore[type-arg]
                doc["ra"] = {"trusted": []}

            from estkit.server.config import _edit

            _edit(upstream.paths.config, untrust)
            with pair.device() as client, pytest.raises(EstHttpError) as caught:
                client.simpleenroll(_spec("cam-2.example.com"), pop=True)
            assert caught.value.status == 400
            assert "proof-of-possession" in caught.value.server_text
        finally:
            ra.stop()
    finally:
        upstream.stop()


def test_a_cmcra_certificate_not_in_ra_trusted_gets_no_ra_rights(tmp_path: Path) -> None:
    upstream = make_server(tmp_path / "up", {})
    try:
        cert, key = tmp_path / "ra.pem", tmp_path / "ra.key"
        issue_ra_certificate(upstream.paths.data_dir, "ra-x", cert, key, trust=False)
        creds = ClientCredentials.from_files(cert, key)
        with (
            EstClient(
                upstream.url,
                trust=[upstream.paths.ca_certificates],
                credentials=creds,
                retry=ONE_TRY,
            ) as client,
            pytest.raises(EstAuthError) as caught,
        ):
            client.simpleenroll(_spec(), pop=True)
        assert caught.value.status == 403
        assert "may only ask for that certificate's names" in caught.value.server_text
    finally:
        upstream.stop()


def test_upstream_queue_202_is_passed_through_and_the_retry_gets_the_certificate(
    tmp_path: Path,
) -> None:
    upstream = make_server(
        tmp_path / "up", {"manual": {"approval": "manual", "retry_after_seconds": 7}}
    )
    try:
        # init gets the RA's TLS certificate from the default label, then RA uses "manual".
        ra, cert = _ra(tmp_path, upstream)
        from estkit.server.config import _edit

        _edit(ra.paths.config, lambda doc: doc["upstream"].__setitem__("label", "manual"))
        pair = Pair(upstream, ra, cert)
        spec = _spec()
        try:
            with pair.device() as client:
                with pytest.raises(EstRetryLaterError) as caught:
                    client.simpleenroll(spec, pop=True)
                assert caught.value.status == 202 and caught.value.retry_after == 7
                with open_store(upstream.paths.database_url) as store:
                    pending = store.list_requests(status="pending")
                    assert len(pending) == 1
                    approve_if_allowed(
                        load_config(upstream.paths.config), store, pending[0].id, by="test"
                    )
                result = client.simpleenroll(spec, pop=True)
            assert result.certificate.public_key() == spec.key.public_key()
        finally:
            ra.stop()
    finally:
        upstream.stop()


def test_upstream_down_is_503_with_retry_after_and_the_retry_succeeds(tmp_path: Path) -> None:
    upstream = make_server(tmp_path / "up", {})
    ra, cert = _ra(tmp_path, upstream)
    port = upstream.port
    try:
        upstream.stop()
        pair = Pair(upstream, ra, cert)
        spec = _spec()
        with pair.device() as client:
            with pytest.raises(EstRetryLaterError) as caught:
                client.simpleenroll(spec, pop=True)
            assert caught.value.status == 503
            assert caught.value.retry_after == 30
            assert "cannot be reached" in caught.value.server_text
            again = start_server_thread(upstream.paths.data_dir, port=port)
            try:
                result = client.simpleenroll(spec, pop=True)
            finally:
                again.stop()
        assert result.certificate.public_key() == spec.key.public_key()
    finally:
        ra.stop()


class _Canned(BaseHTTPRequestHandler):
    """A foreign upstream answering every POST with ``answer`` (status, headers, body)."""

    answer: tuple[int, list[tuple[str, str]], bytes] = (200, [], b"")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status, headers, body = self.answer
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _canned_upstream(
    pair: Pair, status: int, headers: list[tuple[str, str]], body: bytes
) -> Iterator[None]:
    """Point the RA at a small TLS server (the upstream's TLS certificate) that answers so."""
    from estkit.server.config import _edit

    handler = type("Handler", (_Canned,), {"answer": (status, headers, body)})
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    up = pair.upstream.paths
    tls.load_cert_chain(up.server_certificates[1], up.server_keys[1])
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"https://localhost:{httpd.server_address[1]}"
        _edit(pair.ra.paths.config, lambda doc: doc["upstream"].__setitem__("url", url))
        yield
    finally:
        httpd.shutdown()


def test_upstream_garbage_is_502_with_the_reason(pair: Pair) -> None:
    certs_only = [("Content-Type", "application/pkcs7-mime; smime-type=certs-only")]
    with (
        _canned_upstream(pair, 200, certs_only, b"this is not PKCS#7\n"),
        pair.device() as client,
        pytest.raises(EstHttpError) as caught,
    ):
        client.simpleenroll(_spec(), pop=True)
    assert caught.value.status == 502
    assert "unusable" in caught.value.server_text, caught.value.server_text


@pytest.mark.parametrize("status", [202, 503])
def test_an_upstreams_huge_retry_after_is_clamped(pair: Pair, status: int) -> None:
    text = [("Content-Type", "text/plain"), ("Retry-After", "99999999")]
    with (
        _canned_upstream(pair, status, text, b"later\n"),
        pair.device() as client,
        pytest.raises(EstRetryLaterError) as caught,
    ):
        client.simpleenroll(_spec(), pop=True)
    assert caught.value.status == status
    assert caught.value.headers.get("retry-after") == "3600", caught.value.headers


def test_expired_ra_certificate_stops_the_start_with_the_reason(pair: Pair) -> None:
    key = generate_private_key("p256")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old-ra")])
    now = dt.datetime.now(dt.UTC)
    expired = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    updir = pair.ra.paths.data_dir / "upstream"
    pair.ra.stop()
    (updir / "ra.pem").write_bytes(certificates_to_pem([expired]))
    (updir / "ra.key").write_bytes(private_key_to_pem(key))
    with pytest.raises(UpstreamError, match="expired on"):
        start_server_thread(pair.ra.paths.data_dir)


def test_issued_subject_keeps_the_device_serial_and_a_forged_serial_is_refused(
    pair: Pair,
) -> None:
    """BCP-003-03 C7 through the RA: the upstream takes serialNumber from the CSR only because
    the RA checked it against the device certificate."""
    with pair.device() as client:
        cert = client.simpleenroll(_spec(), pop=True).certificate
        serial = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
        assert [a.value for a in serial] == [DEMO_DEVICE_SERIAL]
        before = pair.upstream_seen()
        with pytest.raises(EstHttpError) as caught:
            client.simpleenroll(_spec("cam-9.example.com", serial="SOMEONE-ELSE"), pop=True)
    assert caught.value.status == 400
    assert f"must carry subject serialNumber '{DEMO_DEVICE_SERIAL}'" in caught.value.server_text
    assert pair.upstream_seen() == before


def test_reenroll_and_serverkeygen_are_forwarded(pair: Pair, tmp_path: Path) -> None:
    with pair.device() as client:
        first = client.simpleenroll(_spec(), pop=True)
        keygen = client.serverkeygen(
            common_name="cam-1.example.com",
            dns_names=("cam-1.example.com",),
            serial_number=DEMO_DEVICE_SERIAL,
            pop=True,
        )
    assert keygen.certificate.public_key() == keygen.private_key.public_key()
    assert not keygen.key_was_encrypted
    cert, key = tmp_path / "issued.pem", tmp_path / "issued.key"
    cert.write_bytes(first.fullchain_pem())
    key.write_bytes(first.key_pem())
    renewer = EstClient(
        pair.ra.url,
        trust=[pair.upstream.paths.ca_certificates],
        credentials=ClientCredentials.from_files(cert, key),
        retry=ONE_TRY,
    )
    with renewer:
        renewed = renewer.simplereenroll(pop=True)
    assert renewed.certificate.subject == first.certificate.subject
    assert renewed.certificate.serial_number != first.certificate.serial_number
    with open_store(pair.ra.paths.database_url) as store:
        operations = {r.operation for r in store.list_issued()}
    assert {"simpleenroll", "serverkeygen", "simplereenroll"} <= operations
    # The RA refuses an encrypted server-generated key it could not deliver (with the reason).
    before = pair.upstream_seen()
    with pair.device() as client, pytest.raises(EstHttpError) as caught:
        client.serverkeygen(
            common_name="cam-1.example.com",
            serial_number=DEMO_DEVICE_SERIAL,
            encrypt_key=True,
            pop=True,
        )
    assert caught.value.status == 501
    assert "not available through this registration authority" in caught.value.server_text
    assert pair.upstream_seen() == before


def test_ra_trusted_by_its_ca_file_needs_the_cmcra_eku(tmp_path: Path) -> None:
    """[ra] trusted = ["ra-ca.pem"]: certificates of that (foreign) CA may forward, but only
    those carrying id-kp-cmcRA; the same CA's plain client certificate is an untrusted client."""
    from estkit.ca.profiles import Profile
    from estkit.fileio import replace_credential_pair
    from estkit.protocol.csr import build_csr, describe_csr
    from estkit.server.config import _edit

    upstream = make_server(tmp_path / "up", {})
    try:
        other = CertificateAuthority.create(tmp_path / "ra-ca", key_type="p256")
        ra_ca = tmp_path / "ra-ca.pem"
        ra_ca.write_bytes(certificates_to_pem(other.cacerts))
        _edit(upstream.paths.config, lambda doc: doc.__setitem__("ra", {"trusted": [str(ra_ca)]}))

        def client(ekus: tuple[str, ...], name: str) -> EstClient:
            key = generate_private_key("p256")
            cert = other.issue(
                describe_csr(build_csr(key, common_name=name)),
                Profile(auth_mode="rfc7030", ekus=ekus),
            )
            chain = [c for c in other.chain if c != other.root_certificate]
            paths = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
            replace_credential_pair(
                paths[0], certificates_to_pem([cert, *chain]), paths[1], private_key_to_pem(key)
            )
            return EstClient(
                upstream.url,
                trust=[upstream.paths.root_ca],
                credentials=ClientCredentials.from_files(*paths),
                retry=ONE_TRY,
            )

        with client(("clientAuth", "1.3.6.1.5.5.7.3.28"), "foreign-ra") as ra:
            issued = ra.simpleenroll(_spec("anything.example.com", serial=None), pop=False)
        assert issued.certificate.subject.rfc4514_string() == "CN=anything.example.com"
        with client(("clientAuth",), "plain-client") as plain, pytest.raises(EstAuthError) as no:
            plain.simpleenroll(_spec("anything.example.com", serial=None), pop=False)
        assert no.value.status == 403 and "not trusted" in no.value.server_text
    finally:
        upstream.stop()


def test_csrattrs_follow_the_ras_pop_setting_and_crl_names_the_upstream(pair: Pair) -> None:
    from estkit.protocol.csrattrs import CHALLENGE_PASSWORD_OID
    from estkit.server.config import add_label

    add_label(pair.ra.paths.config, "pop", require_pop=True)
    pop = x509.ObjectIdentifier(CHALLENGE_PASSWORD_OID)
    with pair.device() as client:
        assert pop not in client.csrattrs().attrs.oids
    with EstClient(pair.ra.url, label="pop", trust=[pair.upstream.paths.root_ca]) as client:
        assert pop in client.csrattrs().attrs.oids
    import httpx

    ctx = ssl.create_default_context(cafile=str(pair.upstream.paths.root_ca))
    answer = httpx.get(f"{pair.ra.url}/crl", verify=ctx)
    assert answer.status_code == 404 and "upstream CA publishes the CRL" in answer.text


def test_ras_own_approval_queue_holds_the_request_until_its_operator_approves(
    pair: Pair,
) -> None:
    from estkit.server.config import add_label

    add_label(pair.ra.paths.config, "manual", approval="manual", retry_after_seconds=3)
    creds = ClientCredentials.from_files(pair.ra.paths.device_certificate, pair.ra.paths.device_key)
    spec = _spec()
    before = pair.upstream_seen()
    with EstClient(
        pair.ra.url,
        label="manual",
        trust=[pair.upstream.paths.root_ca],
        credentials=creds,
        retry=ONE_TRY,
    ) as client:
        with pytest.raises(EstRetryLaterError) as caught:
            client.simpleenroll(spec, pop=True)
        assert caught.value.status == 202 and "operator approval" in caught.value.server_text
        assert pair.upstream_seen() == before  # waiting at the RA, not upstream
        with open_store(pair.ra.paths.database_url) as store:
            (pending,) = store.list_requests(status="pending")
            approve_if_allowed(load_config(pair.ra.paths.config), store, pending.id, by="op")
        first = client.simpleenroll(spec, pop=True).certificate
        again = client.simpleenroll(spec, pop=True).certificate
    assert again == first  # the repeat is answered from the RA's store, not issued twice
    with open_store(pair.ra.paths.database_url) as store:
        assert store.get_request(pending.id).status == "issued"
    with open_store(pair.upstream.paths.database_url) as store:
        assert [int(r.serial, 16) for r in store.list_issued()].count(first.serial_number) == 1
