"""``estkit client …`` against the real estkit server: outputs, files, exit codes, failures.

Most tests go through ``click.testing.CliRunner`` (fast); the terminal-confirmation path of
``--insecure-bootstrap`` runs the real ``estkit`` program on a pseudo-terminal.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from estkit.cli.main import cli
from estkit.protocol import (
    load_pem_certificates,
    load_private_key,
    public_keys_equal,
    sha256_fingerprint,
)

from .pki import QuirkyPki
from .quirky import Canned, QuirkyServer


def run(*args: str | Path, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["client", *map(str, args)], input=input)


def _common(server: Any, *, device: bool = True) -> list[str]:
    args = ["--server", server.url, "--trust", str(server.paths.ca_certificates)]
    if device:
        args += ["--cert", str(server.paths.device_certificate)]
        args += ["--key", str(server.paths.device_key)]
    return args


def assert_clean_failure(result: Result, *fragments: str) -> None:
    """Non-zero exit, one or two lines on stderr, never a traceback."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output + result.stderr
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 4, result.stderr  # message + hint, each maybe wrapped once
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- cacerts -----------------------------------------------------------------------------------


def test_cacerts_with_trust_writes_the_bundle(estkit_server: Any, tmp_path: Path) -> None:
    out = tmp_path / "ca.pem"
    result = run("cacerts", *_common(estkit_server, device=False), "--out", out)
    assert result.exit_code == 0, result.output + result.stderr
    written = load_pem_certificates(out.read_bytes())
    expected = load_pem_certificates(Path(estkit_server.paths.ca_certificates).read_bytes())
    assert written == expected
    assert "wrote 2 CA certificate(s)" in result.stdout


def test_cacerts_json(estkit_server: Any) -> None:
    result = run("cacerts", *_common(estkit_server, device=False), "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["current_root"] == estkit_server.paths.ca_fingerprint
    assert len(document["certificates"]) == 2


def test_cacerts_bootstrap_fingerprint(estkit_server: Any, tmp_path: Path) -> None:
    out = tmp_path / "ca.pem"
    result = run(
        "cacerts",
        "--server",
        estkit_server.url,
        "--bootstrap-fingerprint",
        estkit_server.paths.ca_fingerprint,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.stderr
    roots = [c for c in load_pem_certificates(out.read_bytes()) if c.issuer == c.subject]
    assert [sha256_fingerprint(c) for c in roots] == [estkit_server.paths.ca_fingerprint]


def test_cacerts_wrong_fingerprint_writes_nothing(
    estkit_server: Any, pki: QuirkyPki, tmp_path: Path
) -> None:
    out = tmp_path / "ca.pem"
    result = run(
        "cacerts",
        "--server",
        estkit_server.url,
        "--bootstrap-fingerprint",
        sha256_fingerprint(pki.root),
        "--out",
        out,
    )
    assert_clean_failure(result, "expected fingerprint", "nothing was trusted or written")
    assert not out.exists()


def test_cacerts_needs_exactly_one_trust_mode(estkit_server: Any) -> None:
    result = run("cacerts", "--server", estkit_server.url)
    assert_clean_failure(result, "exactly one of")
    assert result.exit_code == 2


def test_bootstrap_never_takes_credentials(estkit_server: Any) -> None:
    result = run(
        "cacerts",
        "--server",
        estkit_server.url,
        "--bootstrap-fingerprint",
        estkit_server.paths.ca_fingerprint,
        "--cert",
        estkit_server.paths.device_certificate,
        "--key",
        estkit_server.paths.device_key,
    )
    assert_clean_failure(result, "not verified yet", "--cert")
    assert result.exit_code == 2


def test_insecure_bootstrap_refuses_without_a_terminal(pki: QuirkyPki, tmp_path: Path) -> None:
    with QuirkyServer(pki.files["server_chain"], pki.files["server_key"], {}) as server:
        out = tmp_path / "ca.pem"
        result = run("cacerts", "--server", server.url, "--insecure-bootstrap", "--out", out)
        assert server.requests == []  # refused before talking to anyone
    assert_clean_failure(result, "without a terminal", "--bootstrap-fingerprint")
    assert not out.exists()


def _run_on_terminal(args: list[str], answer: bytes, timeout: float = 60.0) -> tuple[int, str]:
    """Run the real ``estkit`` with a pseudo-terminal as stdin; answer its question."""
    estkit = shutil.which("estkit") or sys.executable
    command = (
        [estkit, *args] if estkit.endswith("estkit") else [estkit, "-m", "estkit.cli.main", *args]
    )
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        command, stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True
    )
    os.close(terminal)
    seen = b""
    answered = False
    try:
        while True:
            ready, _, _ = select.select([controller], [], [], timeout)
            if not ready:
                break
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if not answered and b"[y/N]" in seen:
                os.write(controller, answer)
                answered = True
        return process.wait(timeout=timeout), seen.decode("utf-8", "replace")
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize(("answer", "accepted"), [(b"y\n", True), (b"n\n", False)])
def test_insecure_bootstrap_asks_a_person_on_a_terminal(
    estkit_server: Any, tmp_path: Path, answer: bytes, accepted: bool
) -> None:
    out = tmp_path / "ca.pem"
    code, transcript = _run_on_terminal(
        [
            "client",
            "cacerts",
            "--server",
            estkit_server.url,
            "--insecure-bootstrap",
            "--out",
            str(out),
        ],
        answer,
    )
    # The fingerprints were shown, whole and in the one form estkit uses (sha256:<hex>),
    # before the question.
    flat = transcript.replace("\r", "").replace("\n", "")
    assert f"fingerprint: {estkit_server.paths.ca_fingerprint}" in flat, transcript
    assert "SHA-256:" not in flat
    assert "NOT verified" in transcript
    if accepted:
        assert code == 0, transcript
        assert out.exists()
    else:
        assert code != 0
        assert not out.exists()
        assert "nothing was written" in transcript


# --- csrattrs ----------------------------------------------------------------------------------


def test_csrattrs_json_on_the_pop_label(estkit_server: Any) -> None:
    result = run("csrattrs", *_common(estkit_server), "--label", "pop", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["requires_pop"] is True


def test_csrattrs_human(estkit_server: Any) -> None:
    result = run("csrattrs", *_common(estkit_server), "--label", "pop")
    assert result.exit_code == 0, result.stderr
    assert "proof-of-possession" in result.stdout


# --- enroll / reenroll / serverkeygen --------------------------------------------------------


def _openssl(*args: str | Path) -> str:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed as a witness"
    done = subprocess.run([openssl, *map(str, args)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("key_type", ["rsa2048", "p256"])
def test_enroll_writes_chain_and_private_key(
    estkit_server: Any, tmp_path: Path, key_type: str
) -> None:
    cert, key = tmp_path / "node.pem", tmp_path / "node.key"
    result = run(
        "enroll",
        *_common(estkit_server),
        "--key-type",
        key_type,
        "--cn",
        "node.example",
        "--san",
        "node.example",
        "--san",
        "alias.example",
        "--out-cert",
        cert,
        "--out-key",
        key,
    )
    assert result.exit_code == 0, result.stderr
    assert _mode(key) == 0o600
    chain = load_pem_certificates(cert.read_bytes())
    assert len(chain) >= 2  # the certificate followed by its chain
    assert public_keys_equal(chain[0].public_key(), load_private_key(key.read_bytes()).public_key())
    # openssl as a witness: the written chain verifies up to the server's root.
    leaf, rest = tmp_path / "leaf.pem", tmp_path / "rest.pem"
    leaf.write_bytes(
        cert.read_bytes().split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    )
    rest.write_bytes(cert.read_bytes())
    verified = _openssl("verify", "-CAfile", estkit_server.paths.root_ca, "-untrusted", rest, leaf)
    assert "OK" in verified
    text = _openssl("x509", "-in", leaf, "-noout", "-ext", "subjectAltName")
    assert "DNS:node.example" in text and "DNS:alias.example" in text


def test_enroll_with_an_openssl_made_csr(estkit_server: Any, tmp_path: Path) -> None:
    csr, key, cert = tmp_path / "req.csr", tmp_path / "req.key", tmp_path / "req.pem"
    _openssl(
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
        "-subj",
        "/CN=openssl-made.example",
        "-addext",
        "subjectAltName=DNS:openssl-made.example",
        "-out",
        csr,
    )
    result = run("enroll", *_common(estkit_server), "--csr", csr, "--out-cert", cert, "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    # The server builds the subject: the CN and the device serial of the manufacturer certificate.
    assert document["certificate"]["subject"] == "2.5.4.5=ESTKIT-DEMO-0001,CN=openssl-made.example"
    issued = load_pem_certificates(cert.read_bytes())[0]
    assert public_keys_equal(issued.public_key(), load_private_key(key.read_bytes()).public_key())


def test_enroll_with_pop(estkit_server: Any, tmp_path: Path) -> None:
    result = run(
        "enroll",
        *_common(estkit_server),
        "--label",
        "pop",
        "--pop",
        "--key-type",
        "p256",
        "--cn",
        "pop.example",
        "--out-cert",
        tmp_path / "c.pem",
        "--out-key",
        tmp_path / "c.key",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["pop_linked"] is True


def test_enroll_pop_without_tls12_fallback_fails_clearly(pki: QuirkyPki, tmp_path: Path) -> None:
    """A TLS 1.3 server that does not offer tls-exporter linking (the estkit server does: see
    tests/client/test_pop13.py) leaves tls-unique, which needs TLS 1.2, the flag forbids."""
    routes = {"/.well-known/est/csrattrs": Canned(204)}
    with QuirkyServer(pki.files["server_chain"], pki.files["server_key"], routes) as server:
        result = run(
            "enroll",
            "--server",
            server.url,
            "--trust",
            pki.files["root"],
            "--pop",
            "--no-tls12-fallback",
            "--key-type",
            "p256",
            "--cn",
            "pop.example",
            "--out-key",
            tmp_path / "c.key",
        )
        assert server.paths() == ["/.well-known/est/csrattrs"]
    assert_clean_failure(result, "TLSv1.3", "tls-unique", "tls-exporter")
    assert not (tmp_path / "c.key").exists()


def test_enroll_with_http_auth_prompts_for_the_password(estkit_server: Any, tmp_path: Path) -> None:
    result = run(
        "enroll",
        *_common(estkit_server, device=False),
        "--label",
        "http",
        "--user",
        "alice",
        "--key-type",
        "p256",
        "--cn",
        "http.example",
        "--out-cert",
        tmp_path / "c.pem",
        "--out-key",
        tmp_path / "c.key",
        input="wonderland\n",
    )
    assert result.exit_code == 0, result.stderr
    assert "Password for alice" in result.stderr
    assert "wonderland" not in result.output + result.stderr


def test_reenroll_replaces_the_pair_in_place(estkit_server: Any, tmp_path: Path) -> None:
    cert, key = tmp_path / "node.pem", tmp_path / "node.key"
    first = run(
        "enroll",
        *_common(estkit_server),
        "--key-type",
        "p256",
        "--cn",
        "renew.example",
        "--out-cert",
        cert,
        "--out-key",
        key,
    )
    assert first.exit_code == 0, first.stderr
    before = load_pem_certificates(cert.read_bytes())[0]
    old_key = key.read_bytes()
    result = run(
        "reenroll",
        "--server",
        estkit_server.url,
        "--trust",
        estkit_server.paths.ca_certificates,
        "--cert",
        cert,
        "--key",
        key,
    )
    assert result.exit_code == 0, result.stderr
    after = load_pem_certificates(cert.read_bytes())[0]
    assert after.subject == before.subject
    assert after.serial_number != before.serial_number
    assert key.read_bytes() != old_key and _mode(key) == 0o600
    assert public_keys_equal(after.public_key(), load_private_key(key.read_bytes()).public_key())


def test_serverkeygen_writes_key_and_certificate(estkit_server: Any, tmp_path: Path) -> None:
    cert, key = tmp_path / "gen.pem", tmp_path / "gen.key"
    result = run(
        "serverkeygen",
        *_common(estkit_server),
        "--cn",
        "gen.example",
        "--out-cert",
        cert,
        "--out-key",
        key,
    )
    assert result.exit_code == 0, result.stderr
    assert _mode(key) == 0o600
    # openssl as a witness: the key and the certificate hold the same public key.
    from_cert = _openssl("x509", "-in", cert, "-noout", "-pubkey")
    from_key = _openssl("pkey", "-in", key, "-pubout")
    assert from_cert == from_key


def test_serverkeygen_applies_csrattrs_on_request(estkit_server: Any, tmp_path: Path) -> None:
    def serverkeygen(*extra: str) -> dict[str, Any]:
        result = run(
            "serverkeygen", *_common(estkit_server), *extra, "--cn", "fit.example",
            "--out-cert", tmp_path / "fit.pem", "--out-key", tmp_path / "fit.key", "--json",
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)

    # The nmos profile's /csrattrs asks for the device serialNumber, which was not given.
    fitted = serverkeygen("--apply-csrattrs")
    assert any("serialNumber" in w and "--serial-number" in w for w in fitted["warnings"])
    assert not any("serialNumber" in w for w in serverkeygen()["warnings"])


def test_serverkeygen_needs_somewhere_for_the_key(estkit_server: Any) -> None:
    result = run("serverkeygen", *_common(estkit_server), "--cn", "gen.example")
    assert_clean_failure(result, "--out-key")


# --- failures: one or two lines, never a traceback ----------------------------------------------


def test_unreachable_server(pki: QuirkyPki) -> None:
    server = QuirkyServer(pki.files["server_chain"], pki.files["server_key"], {})
    port = server.port
    server.stop()
    result = run(
        "csrattrs",
        "--server",
        f"https://127.0.0.1:{port}",
        "--trust",
        pki.files["root"],
        "--timeout",
        "5",
    )
    assert_clean_failure(result, "cannot connect", "hint:")


def test_untrusted_server_says_what_to_pass(estkit_server: Any, pki: QuirkyPki) -> None:
    result = run("csrattrs", "--server", estkit_server.url, "--trust", pki.files["root"])
    assert_clean_failure(result, "could not verify", "--trust PEM", "--bootstrap-fingerprint")


def test_missing_trust_is_a_usage_error(estkit_server: Any) -> None:
    result = run("csrattrs", "--server", estkit_server.url)
    assert_clean_failure(result, "no trust anchors")
    assert result.exit_code == 2


def test_forbidden_without_client_certificate(estkit_server: Any, tmp_path: Path) -> None:
    result = run(
        "enroll",
        *_common(estkit_server, device=False),
        "--key-type",
        "p256",
        "--cn",
        "nobody.example",
        "--out-key",
        tmp_path / "k.pem",
    )
    assert_clean_failure(result, "403")
    assert not (tmp_path / "k.pem").exists()


def test_pending_approval_exhausted(estkit_server: Any, tmp_path: Path) -> None:
    result = run(
        "enroll",
        *_common(estkit_server),
        "--label",
        "manual",
        "--max-attempts",
        "1",
        "--key-type",
        "p256",
        "--cn",
        "waiting.example",
        "--out-key",
        tmp_path / "k.pem",
    )
    assert_clean_failure(result, "still pending approval")


def test_bad_server_url(pki: QuirkyPki) -> None:
    result = run("csrattrs", "--server", "http://127.0.0.1:1", "--trust", pki.files["root"])
    assert_clean_failure(result, "HTTPS")


def test_quirky_server_error_text_is_shown(pki: QuirkyPki) -> None:
    routes = {
        "/.well-known/est/csrattrs": Canned(
            500, [("Content-Type", "text/plain")], b"database on fire\n"
        )
    }
    with QuirkyServer(pki.files["server_chain"], pki.files["server_key"], routes) as server:
        result = run("csrattrs", "--server", server.url, "--trust", pki.files["root"])
        assert server.paths() == ["/.well-known/est/csrattrs"]
    assert_clean_failure(result, "database on fire", "try again later")


def test_a_host_name_cn_becomes_the_csr_san_unless_san_is_given() -> None:
    from estkit.cli.client import _san_or_cn

    # The prototype never put a SAN in its CSRs; a host-name CN now is one (BCP-003-01 T4).
    assert _san_or_cn("node1.example.com", ()) == ("node1.example.com",)
    assert _san_or_cn("node1.example.com", ("a.example",)) == ("a.example",)
    assert _san_or_cn("Device 12", ()) == ()
    assert _san_or_cn(None, ("a.example",)) == ("a.example",)


# --- output files go only into existing directories (issue 15) --------------------------------


@pytest.mark.parametrize("option", ["--out-cert", "--out-key"])
def test_enroll_refuses_an_output_in_a_missing_directory_before_sending_anything(
    pki: QuirkyPki, quirky: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: str
) -> None:
    """curl -o and openssl -out refuse; so does estkit, before a request could cost an issued
    certificate that then has nowhere to go."""
    server = quirky({})
    monkeypatch.chdir(tmp_path)
    outputs = {"--out-cert": "node.pem", "--out-key": "node.key"}
    outputs[option] = f"nosuch/dir/{outputs[option]}"
    result = run(
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
        outputs["--out-cert"],
        "--out-key",
        outputs["--out-key"],
    )
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.stderr
    assert "the directory nosuch/dir does not exist; create it first" in result.stderr
    assert server.requests == []
    assert not (tmp_path / "nosuch").exists()
    assert list(tmp_path.iterdir()) == []


def test_cacerts_out_in_a_missing_directory_is_refused(estkit_server: Any, tmp_path: Path) -> None:
    result = run(
        "cacerts", *_common(estkit_server, device=False), "--out", tmp_path / "no" / "ca.pem"
    )
    assert result.exit_code == 2
    assert f"the directory {tmp_path / 'no'} does not exist" in result.stderr
    assert not (tmp_path / "no").exists()
