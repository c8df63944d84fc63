"""CA rollover end to end (issue 15, item 3; RFC 4210 §4.4, RFC 7030 §4.1.3): after
`estkit server rollover` the running server presents a TLS chain that validates from the old root
(through NewWithOld) and from the new root, /cacerts gives each device what it needs, and three
clients (old root only, new root only, both) keep connecting and enrolling.

Peers: curl and `openssl s_client`/`openssl verify` (OpenSSL's own path building) and the estkit
client (httpx over Python's ssl).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509

from estkit.ca.authority import CertificateAuthority
from estkit.cli.main import cli
from estkit.client import ClientCredentials, CsrSpec, EstClient, EstTlsError, TrustAnchors
from estkit.protocol import generate_private_key, load_pem_certificates
from estkit.protocol.certs import certificates_to_pem, is_self_signed
from estkit.server import tls as server_tls

from .witness import curl, openssl_csr, openssl_verify, pkcs7_to_pem, run, s_client, tool


def _estkit_enroll(server: Any, trust: Path, cn: str) -> x509.Certificate:
    with EstClient(
        server.url,
        trust=TrustAnchors.from_files([trust]),
        credentials=ClientCredentials.from_files(
            server.paths.device_certificate, server.paths.device_key
        ),
    ) as est:
        spec = CsrSpec(key=generate_private_key("p256"), common_name=cn, dns_names=(cn,))
        return est.simpleenroll(spec).certificate


def _presented_chain(server: Any, trust: Path) -> tuple[str, list[str]]:
    result = s_client(
        server.host, server.port, "-CAfile", trust, "-verify_return_error", "-showcerts"
    )
    text = (result.stdout + result.stderr).decode(errors="replace")
    subjects = [line.split("s:", 1)[1].strip() for line in text.splitlines() if " s:" in line]
    return text, subjects


@pytest.fixture
def rolled_over(fresh_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    # Look at the certificate files on every handshake instead of at most once a second.
    monkeypatch.setattr(server_tls, "RELOAD_CHECK_SECONDS", 0.0)
    server = fresh_server()
    old_root = tmp_path / "old-root.pem"
    shutil.copy(server.paths.root_ca, old_root)
    # A device enrolled before the rollover (its certificate chains to the old root).
    before = tmp_path / "before.pem"
    before.write_bytes(
        certificates_to_pem([_estkit_enroll(server, old_root, "before.example.com")])
    )
    result = CliRunner().invoke(cli, ["server", "rollover", str(server.data_dir)])
    assert result.exit_code == 0, result.output + result.stderr
    assert "issued under the new root" in result.stdout
    new_root = server.data_dir / "ca" / "generations" / "g2" / "root.pem"
    both = tmp_path / "both-roots.pem"
    both.write_bytes(old_root.read_bytes() + new_root.read_bytes())
    server.trust_files = {"old root only": old_root, "new root only": new_root, "both": both}
    server.before = before
    return server


def test_new_root_is_really_new(rolled_over: Any) -> None:
    old = load_pem_certificates(rolled_over.trust_files["old root only"].read_bytes())[0]
    new = load_pem_certificates(rolled_over.trust_files["new root only"].read_bytes())[0]
    assert old.public_key() != new.public_key() and old.subject == new.subject


@pytest.mark.parametrize("holder", ["old root only", "new root only", "both"])
def test_every_root_holder_connects_and_enrolls_after_rollover(
    rolled_over: Any, tmp_path: Path, holder: str
) -> None:
    trust = rolled_over.trust_files[holder]
    # OpenSSL: the handshake verifies, and the chain the server sent ends in NewWithOld.
    text, subjects = _presented_chain(rolled_over, trust)
    assert "Verify return code: 0 (ok)" in text, text
    assert len(subjects) == 3, text  # leaf, issuing CA G2, NewWithOld
    assert "Issuing CA G2" in subjects[1]
    assert subjects[2] == subjects[2].replace("Issuing", "") and "Root CA" in subjects[2]
    # curl: /cacerts over a verified connection.
    cacerts = curl(
        rolled_over.est_url("cacerts"), cacert=trust, content_type=None, workdir=tmp_path
    )
    assert cacerts.status == 200
    # The estkit client: a device enrolls under the new issuing CA.
    leaf = _estkit_enroll(rolled_over, trust, f"{holder.split()[0]}.example.com")
    assert "Issuing CA G2" in leaf.issuer.rfc4514_string()
    # curl with the device certificate, the way a non-estkit node enrolls.
    csr = openssl_csr(tmp_path)
    enrolled = curl(
        rolled_over.est_url("simpleenroll"),
        cacert=trust,
        cert=rolled_over.paths.device_certificate,
        key=rolled_over.paths.device_key,
        data=csr.b64,
        workdir=tmp_path,
    )
    assert enrolled.status == 200, enrolled.text


@pytest.mark.parametrize("holder", ["old root only", "new root only", "both"])
def test_cacerts_gives_each_holder_what_it_needs(
    rolled_over: Any, tmp_path: Path, holder: str
) -> None:
    """Leaves from before and after the rollover verify from either root, with what /cacerts
    (fetched over TLS verified with that root) holds as the intermediates. The self-signed
    certificates in it are roots, candidates for trust, never path elements: a device takes the
    others (NewWithOld, OldWithNew, both issuing CAs) as intermediates."""
    trust = rolled_over.trust_files[holder]
    response = curl(
        rolled_over.est_url("cacerts"), cacert=trust, content_type=None, workdir=tmp_path
    )
    assert response.status == 200
    served = load_pem_certificates(pkcs7_to_pem(response.body, tmp_path).read_bytes())
    roots = [cert for cert in served if is_self_signed(cert)]
    assert len(roots) == 2  # OldWithOld and NewWithNew (RFC 7030 §4.1.3, RFC 4210 §4.4)
    intermediates = tmp_path / "intermediates.pem"
    intermediates.write_bytes(certificates_to_pem([c for c in served if not is_self_signed(c)]))
    after = tmp_path / "after.pem"
    after.write_bytes(
        certificates_to_pem([_estkit_enroll(rolled_over, trust, "after.example.com")])
    )
    for leaf in (rolled_over.before, after):
        verdict = openssl_verify(leaf, root=trust, untrusted=intermediates)
        assert verdict.strip().endswith("OK"), (holder, leaf.name, verdict)


def test_without_the_new_chain_a_new_root_holder_fails(fresh_server: Any, tmp_path: Path) -> None:
    """The failure the issue reported, reproduced: rolling the CA over without issuing the TLS
    certificates again leaves new-root holders with 'unable to get local issuer certificate'."""
    server = fresh_server()
    CertificateAuthority.load(server.data_dir / "ca").rollover()
    new_root = server.data_dir / "ca" / "generations" / "g2" / "root.pem"
    text, _subjects = _presented_chain(server, new_root)
    assert "unable to get local issuer certificate" in text
    failed = run(
        [tool("curl"), "-sS", "--cacert", new_root, server.est_url("cacerts")], check=False
    )
    assert failed.returncode != 0
    with pytest.raises(EstTlsError):
        _estkit_enroll(server, new_root, "nope.example.com")


def test_a_client_without_sni_gets_the_new_chain_too(rolled_over: Any) -> None:
    """The reload runs on every ClientHello, with or without a server name (an IP client)."""
    result = run(
        [
            tool("openssl"), "s_client", "-connect", f"{rolled_over.host}:{rolled_over.port}",
            "-noservername", "-CAfile", rolled_over.trust_files["new root only"],
            "-verify_return_error",
        ],
        input=b"Q\n",
        check=False,
    )  # fmt: skip
    text = (result.stdout + result.stderr).decode(errors="replace")
    assert "Verify return code: 0 (ok)" in text, text
