"""`estkit client` never writes a certificate it should not use (issue 20 items 3 and 5; C9).

A hostile EST server (real TLS, trusted by the client) answers /simpleenroll and /simplereenroll
with a certificate that has exactly one defect: issued by a look-alike CA, CA:TRUE, notBefore in
2036, other names, no EKU, another key. Each test shows the request reached the server, the
refusal names the defect, and nothing was written or replaced (bytes and mtimes compared). A
control run with no defect shows the harness issues certificates that are otherwise accepted.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from estkit.cli.main import cli
from estkit.protocol import decode_csr_body, encode_certs_only_body

from .pki import QuirkyPki, make_ca
from .quirky import Canned, QuirkyServer, Recorded

PKCS7 = "application/pkcs7-mime; smime-type=certs-only"
ENROLL = "/.well-known/est/simpleenroll"
REENROLL = "/.well-known/est/simplereenroll"


def leaf_for(
    pki: QuirkyPki,
    public_key: Any,
    names: list[str],
    *,
    ca: bool = False,
    eku: bool = True,
    not_before: datetime.datetime | None = None,
    issuer: tuple[x509.Certificate, Any] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_cert, issuer_key = issuer or (pki.issuing, pki.issuing_key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650 * 2 if not_before else 30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False
        )
    )
    if eku:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def rogue_issuer(pki: QuirkyPki) -> tuple[x509.Certificate, Any]:
    """A self-signed CA with exactly the real issuing CA's name."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_ca(pki.issuing.subject.rfc4514_string().removeprefix("CN="), key)
    assert cert.subject == pki.issuing.subject
    return cert, key


Defect = Callable[[QuirkyPki, Any, list[str]], list[x509.Certificate]]


def _rogue(pki: QuirkyPki, public_key: Any, names: list[str]) -> list[x509.Certificate]:
    issuer = rogue_issuer(pki)
    return [leaf_for(pki, public_key, names, issuer=issuer), issuer[0]]


DEFECTS: dict[str, tuple[Defect, str]] = {
    "none": (lambda pki, key, names: [leaf_for(pki, key, names), pki.issuing], ""),
    "look-alike issuer": (_rogue, "does not chain to the trusted root"),
    "CA:TRUE": (
        lambda pki, key, names: [leaf_for(pki, key, names, ca=True), pki.issuing],
        "CA certificate (CA:TRUE)",
    ),
    "notBefore 2036": (
        lambda pki, key, names: [
            leaf_for(
                pki, key, names, not_before=datetime.datetime(2036, 1, 1, tzinfo=datetime.UTC)
            ),
            pki.issuing,
        ],
        "is not valid before 2036-01-01",
    ),
    "other name": (
        lambda pki, key, names: [leaf_for(pki, key, ["other.example"]), pki.issuing],
        "common name is 'other.example'",
    ),
    "no EKU": (
        lambda pki, key, names: [leaf_for(pki, key, names, eku=False), pki.issuing],
        "no TLS extended key usage",
    ),
    "another key": (
        lambda pki, key, names: [
            leaf_for(pki, ec.generate_private_key(ec.SECP256R1()).public_key(), names),
            pki.issuing,
        ],
        "different public key",  # refused while the answer is read, before validation
    ),
}


def hostile_routes(pki: QuirkyPki, defect: Defect) -> dict[str, Any]:
    def issue(record: Recorded) -> Canned:
        csr = decode_csr_body(record.body)
        names = [str(csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)]
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names += [n for n in san.get_values_for_type(x509.DNSName) if n not in names]
        except x509.ExtensionNotFound:
            pass
        certs = defect(pki, csr.public_key(), names)
        return Canned(200, [("Content-Type", PKCS7)], encode_certs_only_body(certs))

    cacerts = Canned(
        200, [("Content-Type", PKCS7)], encode_certs_only_body([pki.issuing, pki.root])
    )
    return {"/.well-known/est/cacerts": cacerts, ENROLL: issue, REENROLL: issue}


def client(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["client", *map(str, args)])


def state(*paths: Path) -> dict[str, tuple[bytes, int] | None]:
    return {
        path.name: (path.read_bytes(), path.stat().st_mtime_ns) if path.exists() else None
        for path in paths
    }


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_enroll_writes_nothing_unless_the_certificate_is_fit(
    defect: str, pki: QuirkyPki, quirky: Callable[..., QuirkyServer], tmp_path: Path
) -> None:
    make, reason = DEFECTS[defect]
    server = quirky(hostile_routes(pki, make))
    cert, key = tmp_path / "node.pem", tmp_path / "node.key"
    result = client(
        "enroll",
        "--server",
        server.url,
        "--trust",
        pki.files["root"],
        "--key-type",
        "p256",
        "--cn",
        "node.example",
        "--out-cert",
        cert,
        "--out-key",
        key,
    )
    assert ENROLL in server.paths()  # the request reached the hostile server
    if defect == "none":
        assert result.exit_code == 0, result.stderr
        assert cert.exists() and key.exists()
        return
    assert result.exit_code == 1, result.output
    assert reason in result.stderr, result.stderr
    if defect != "another key":
        assert "nothing was written" in result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert not cert.exists() and not key.exists()
    assert list(tmp_path.iterdir()) == [], "no temporary file left behind"


@pytest.mark.parametrize("defect", [d for d in DEFECTS if d != "other name"])
def test_reenroll_keeps_the_working_pair_unless_the_answer_is_fit(
    defect: str, pki: QuirkyPki, quirky: Callable[..., QuirkyServer], tmp_path: Path
) -> None:
    make, reason = DEFECTS[defect]
    server = quirky(hostile_routes(pki, make))
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    # The working pair: a certificate of the real issuing CA, with a DNS name to renew.
    working = ec.generate_private_key(ec.SECP256R1())
    from estkit.protocol import certificates_to_pem, private_key_to_pem

    live_cert.write_bytes(
        certificates_to_pem([leaf_for(pki, working.public_key(), ["live.example"]), pki.issuing])
    )
    live_key.write_bytes(private_key_to_pem(working))
    live_key.chmod(0o600)
    before = state(live_cert, live_key)
    result = client(
        "reenroll",
        "--server",
        server.url,
        "--trust",
        pki.files["root"],
        "--cert",
        live_cert,
        "--key",
        live_key,
    )
    assert REENROLL in server.paths()
    if defect == "none":
        assert result.exit_code == 0, result.stderr
        after = state(live_cert, live_key)
        assert after["live.key"] != before["live.key"]  # swapped, as a pair
        assert after["live.pem"] != before["live.pem"]
        return
    assert result.exit_code == 1, result.output
    assert reason in result.stderr, result.stderr
    assert state(live_cert, live_key) == before  # the old key survives a refused answer
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.key", "live.pem"]


def test_server_text_is_escaped_on_the_terminal(
    pki: QuirkyPki, quirky: Callable[..., QuirkyServer], tmp_path: Path
) -> None:
    """`\\x1b]0;…\\x07` would retitle the terminal and `\\x1b[2J` clear it."""
    hostile = "\x1b]0;pwned\x07\x1b[2Jplease go away\x1b[8m"
    server = quirky({ENROLL: Canned(400, [("Content-Type", "text/plain")], hostile.encode())})
    result = client(
        "enroll",
        "--server",
        server.url,
        "--trust",
        pki.files["root"],
        "--key-type",
        "p256",
        "--cn",
        "node.example",
        "--out-key",
        tmp_path / "k.pem",
    )
    assert ENROLL in server.paths()
    assert result.exit_code == 1
    assert "\x1b" not in result.output + result.stderr
    assert "\x07" not in result.output + result.stderr
    assert "\\x1b]0;pwned\\x07\\x1b[2Jplease go away" in result.stderr
