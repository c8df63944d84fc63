"""`estkit client status` and estkit.client.status: OCSP via the certificate's AIA, the CRL
distribution point as fallback, and answers that must not be believed (forged signer, another
certificate, oversized), against a real estkit server and small in-test responders."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from estkit.ca.authority import CertificateAuthority
from estkit.ca.ocsp import issue_responder_certificate
from estkit.ca.pointers import revocation_pointer_extensions
from estkit.ca.profiles import Profile
from estkit.client.status import (
    MAX_OCSP_RESPONSE_BYTES,
    StatusError,
    check_status,
)

from .quirky import Canned, QuirkyServer

REVOCATION_VISIBLE_SECONDS = 5.0


@pytest.fixture(scope="module")
def est(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from conftest import make_server

    server = make_server(tmp_path_factory.mktemp("status-server"), {})
    yield server
    server.stop()


def _issue(
    est: Any, name: str, extensions: list[x509.Extension[x509.ExtensionType]] | None = None
) -> tuple[x509.Certificate, x509.Certificate]:
    """A leaf from the server's CA, recorded in its store; default AIA/CDP → this server."""
    authority = CertificateAuthority.load(est.paths.data_dir / "ca")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    if extensions is None:
        base = f"https://localhost:{est.port}"
        extensions = revocation_pointer_extensions(f"{base}/ocsp", f"{base}/crl")
    leaf = authority.issue(csr, Profile(), extensions=extensions)
    est.open_store().record_issued(leaf, operation="simpleenroll", label=None)
    return leaf, authority.issuer_certificate


def _wait_for(predicate: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + REVOCATION_VISIBLE_SECONDS
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_good_then_revoked_via_ocsp(est: Any) -> None:
    leaf, issuer = _issue(est, "status-good.example")
    result = check_status(leaf, issuer)
    assert (result.status, result.method) == ("good", "ocsp")
    assert result.source == f"https://localhost:{est.port}/ocsp"
    assert result.next_update is not None and result.next_update > datetime.now(UTC)
    est.open_store().revoke(format(leaf.serial_number, "x"), "superseded")
    assert _wait_for(lambda: check_status(leaf, issuer).revoked)
    revoked = check_status(leaf, issuer)
    assert revoked.reason == "superseded" and revoked.revoked_at is not None


def test_crl_fallback_when_the_responder_is_down(est: Any) -> None:
    with QuirkySocketless() as dead_port:
        extensions = revocation_pointer_extensions(
            f"http://127.0.0.1:{dead_port}/ocsp", f"https://localhost:{est.port}/crl"
        )
        leaf, issuer = _issue(est, "status-crl.example", extensions)
        good = check_status(leaf, issuer)
        assert (good.status, good.method) == ("good", "crl")
        assert any("OCSP http://127.0.0.1" in problem for problem in good.problems)
        est.open_store().revoke(format(leaf.serial_number, "x"), "keyCompromise")
        assert _wait_for(lambda: check_status(leaf, issuer).revoked)
        revoked = check_status(leaf, issuer)
        assert (revoked.method, revoked.reason) == ("crl", "keyCompromise")


class QuirkySocketless:
    """A port on which nothing listens (bound, never listening, released at exit)."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        return int(self._sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


def _forged_response(
    leaf: x509.Certificate, issuer: x509.Certificate, signer_issuer: x509.Certificate, key: Any
) -> bytes:
    responder = issue_responder_certificate(signer_issuer, key)
    now = datetime.now(UTC)
    return (
        ocsp.OCSPResponseBuilder()
        .add_response(
            leaf,
            issuer,
            hashes.SHA1(),
            ocsp.OCSPCertStatus.REVOKED,
            now,
            now + timedelta(hours=1),
            now,
            x509.ReasonFlags.key_compromise,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, responder.certificate)
        .certificates([responder.certificate])
        .sign(responder.key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )


@pytest.fixture
def hostile(pki: Any) -> Iterator[Callable[[dict[str, Any]], QuirkyServer]]:
    started: list[QuirkyServer] = []

    def start(routes: dict[str, Any]) -> QuirkyServer:
        server = QuirkyServer(pki.files["server_chain"], pki.files["server_key"], routes)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_forged_revoked_answer_is_not_believed(est: Any, hostile: Any, pki: Any) -> None:
    """An on-path responder signs "revoked" with a delegate of *another* CA: unknown, not
    revoked, and the problem says why (the device keeps its certificate)."""
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Mallory CA")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Mallory CA")]))
        .public_key(other_key.public_key())
        .serial_number(1)
        .not_valid_before(datetime.now(UTC) - timedelta(days=1))
        .not_valid_after(datetime.now(UTC) + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(other_key, hashes.SHA256())
    )
    server = hostile({})
    leaf, issuer = _issue(
        est, "status-forged.example", revocation_pointer_extensions(f"{server.url}/ocsp", None)
    )
    server.routes["/ocsp"] = Canned(
        200,
        [("Content-Type", "application/ocsp-response")],
        _forged_response(leaf, issuer, other_ca, other_key),
    )
    tls = ssl.create_default_context(cafile=str(pki.files["root"]))
    result = check_status(leaf, issuer, tls=tls)
    assert result.status == "unknown"
    assert any("not signed by the issuer" in problem for problem in result.problems)
    assert [r.path for r in server.requests] == ["/ocsp"]  # it did ask


def test_oversized_answer_is_refused(est: Any, hostile: Any, pki: Any) -> None:
    server = hostile(
        {
            "/ocsp": Canned(
                200,
                [("Content-Type", "application/ocsp-response")],
                b"\x30" * (MAX_OCSP_RESPONSE_BYTES + 1),
            )
        }
    )
    leaf, issuer = _issue(
        est, "status-big.example", revocation_pointer_extensions(f"{server.url}/ocsp", None)
    )
    result = check_status(
        leaf, issuer, tls=ssl.create_default_context(cafile=str(pki.files["root"]))
    )
    assert result.status == "unknown"
    assert any(f"over the limit of {MAX_OCSP_RESPONSE_BYTES}" in p for p in result.problems)


def test_nothing_to_ask_and_wrong_issuer_are_errors(est: Any) -> None:
    leaf, issuer = _issue(est, "status-none.example", [])
    with pytest.raises(StatusError, match="names no OCSP responder"):
        check_status(leaf, issuer)
    other, _ = _issue(est, "status-other.example")
    with pytest.raises(StatusError, match="is not the issuer of certificate"):
        check_status(other, other)


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "estkit.cli.main", "client", "status", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, COLUMNS="200"),
    )


def test_cli_status_json_and_exit_codes(est: Any, tmp_path: Path) -> None:
    leaf, issuer = _issue(est, "status-cli.example")
    chain = tmp_path / "chain.pem"
    chain.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, issuer)))
    good = _cli("--cert", chain, "--json")
    assert good.returncode == 0, good.stderr
    import json

    document = json.loads(good.stdout)
    assert document["status"] == "good" and document["method"] == "ocsp"
    assert document["serial"] == format(leaf.serial_number, "x")
    est.open_store().revoke(format(leaf.serial_number, "x"), "keyCompromise")
    assert _wait_for(lambda: check_status(leaf, issuer).revoked)
    revoked = _cli("--cert", chain)
    assert revoked.returncode == 3, revoked.stderr
    assert "revoked: serial" in revoked.stdout and "keyCompromise" in revoked.stdout
    lone = tmp_path / "leaf.pem"
    lone.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    missing = _cli("--cert", lone)
    assert missing.returncode == 2
    assert "no issuer was given" in missing.stderr
