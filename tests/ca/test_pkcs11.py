"""CA keys in a PKCS#11 token: SoftHSM2 (a real PKCS#11 module) initialised by the fixture,
`estkit server init --ca-key-uri`, issuing and CRLs over real TLS, rollover, and bad input."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib import request as urllib_request

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from estkit.ca.authority import CaError, CertificateAuthority
from estkit.ca.pkcs11 import MAX_URI_CHARS, Pkcs11Error, Pkcs11Uri
from estkit.ca.profiles import Profile
from estkit.protocol.certs import load_pem_certificates
from estkit.protocol.csr import build_csr, encode_csr_body
from estkit.protocol.keys import generate_private_key
from estkit.protocol.pkcs7 import decode_certs_only_body
from estkit.server.runner import start_server_thread

try:
    from tests.system_packages import ensure_program
except ModuleNotFoundError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from system_packages import ensure_program  # type: ignore[no-redef]

TOKEN_LABEL = "estkit-test"
USER_PIN = "123456"
SO_PIN = "12345678"
CLI_TIMEOUT_SECONDS = 120
CLI = (sys.executable, "-m", "estkit.cli.main")
# New connections are spread over the workers by the kernel; 12 makes it all but certain that
# both workers sign at least once (the test checks that they did).
ENROLLMENTS_ACROSS_WORKERS = 80
_MODULE_GLOBS = ("usr/lib/softhsm/libsofthsm2.so", "usr/lib/*/softhsm/libsofthsm2.so")


@dataclass(frozen=True)
class Hsm:
    module: Path
    conf: Path
    pin_file: Path

    def uri(self, *, pin: str | None = None, token: str = TOKEN_LABEL, module: str = "") -> str:
        pin_part = f"pin-value={pin}" if pin is not None else f"pin-source=file:{self.pin_file}"
        return f"pkcs11:token={token}?module-path={module or self.module}&{pin_part}"


@pytest.fixture(scope="session")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hsm]:
    """One SoftHSM2 token for the session (python-pkcs11 reads SOFTHSM2_CONF once per process,
    when the module is initialised, so the configuration is set before any test uses it)."""
    util = ensure_program("softhsm2-util", "softhsm2")
    modules = [p for pattern in _MODULE_GLOBS for p in Path("/").glob(pattern)]
    assert modules, "softhsm2 is installed but libsofthsm2.so was not found"
    directory = tmp_path_factory.mktemp("softhsm")
    (directory / "tokens").mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\n"
        "log.level = ERROR\n"
    )
    pin_file = directory / "pin"
    pin_file.write_text(USER_PIN + "\n")
    pin_file.chmod(0o600)
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [
            util,
            "--init-token",
            "--free",
            "--label",
            TOKEN_LABEL,
            "--so-pin",
            SO_PIN,
            "--pin",
            USER_PIN,
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield Hsm(modules[0], conf, pin_file)
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous


def _token_objects(hsm: Hsm) -> dict[str, dict[str, Any]]:
    """Private keys in the token by label, with their protection attributes (a fresh process,
    so that this test's own sessions do not colour what is seen)."""
    script = (
        "import json,sys,pkcs11\n"
        "from pkcs11 import Attribute as A, ObjectClass as O\n"
        "lib=pkcs11.lib(sys.argv[1])\n"
        "with lib.get_token(token_label=sys.argv[2]).open(user_pin=sys.argv[3]) as s:\n"
        "  print(json.dumps({k.label: {'sensitive': bool(k[A.SENSITIVE]),"
        " 'extractable': bool(k[A.EXTRACTABLE])}"
        " for k in s.get_objects({A.CLASS: O.PRIVATE_KEY})}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(hsm.module), TOKEN_LABEL, USER_PIN],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        env=dict(os.environ, COLUMNS="200"),
    )


def _openssl() -> str:
    return ensure_program("openssl", "openssl")


def _enroll(port: int, data: Path, body: bytes) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(data / "ca" / "cacerts.pem"))
    context.load_cert_chain(
        data / "manufacturer" / "device.pem", data / "manufacturer" / "device.key"
    )
    connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=30)
    try:
        headers = {"Content-Type": "application/pkcs10"}
        connection.request("POST", "/.well-known/est/simpleenroll", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _get(port: int, data: Path, path: str) -> bytes:
    context = ssl.create_default_context(cafile=str(data / "ca" / "cacerts.pem"))
    with urllib_request.urlopen(f"https://localhost:{port}{path}", context=context) as response:
        assert response.status == 200
        return response.read()


def _label_of(uri_file: Path) -> str:
    uri = Pkcs11Uri.parse(uri_file.read_text())
    return uri.path["object"]


def test_init_creates_the_ca_keys_in_the_token_and_writes_no_key_file(
    hsm: Hsm, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    result = _cli("server", "init", str(data), "--ca-key-uri", hsm.uri())
    assert result.returncode == 0, result.stderr
    ca = data / "ca"
    generation = ca / "generations" / "g1"
    assert sorted(p.name for p in ca.rglob("*.key")) == []
    for name in ("root.uri", "issuing.uri"):
        assert (generation / name).stat().st_mode & 0o777 == 0o600
        # Only the URI is stored: it names the module and the PIN source, never the PIN.
        text = (generation / name).read_text()
        assert text.startswith("pkcs11:token=estkit-test;object=estkit-")
        assert "id=%" in text and USER_PIN not in text
    objects = _token_objects(hsm)
    for name in ("root.uri", "issuing.uri"):
        label = _label_of(generation / name)
        assert objects[label] == {"sensitive": True, "extractable": False}
    # The certificates verify with openssl: the token's signatures are well-formed DER.
    issuing = generation / "issuing.pem"
    check = subprocess.run(
        [_openssl(), "verify", "-CAfile", str(ca / "root.pem"), str(issuing)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0 and ": OK" in check.stdout, check.stdout + check.stderr
    root = load_pem_certificates((ca / "root.pem").read_bytes())[0]
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)


def test_server_issues_and_signs_crls_through_the_token(hsm: Hsm, tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert _cli("server", "init", str(data), "--ca-key-uri", hsm.uri()).returncode == 0
    with start_server_thread(data) as server:
        body = encode_csr_body(build_csr(generate_private_key("p256"), common_name="n1.example"))
        status, answer = _enroll(server.port, data, body)
        assert status == 200, answer
        (leaf,) = decode_certs_only_body(answer)
        crl = x509.load_der_x509_crl(_get(server.port, data, "/crl"))
    issuing_pem = data / "ca" / "generations" / "g1" / "issuing.pem"
    issuing = load_pem_certificates(issuing_pem.read_bytes())[0]
    leaf.verify_directly_issued_by(issuing)
    assert crl.is_signature_valid(issuing.public_key())  # type: ignore[arg-type]
    assert crl.issuer == issuing.subject
    leaf_pem = tmp_path / "leaf.pem"
    leaf_pem.write_bytes(leaf.public_bytes(Encoding.PEM))
    chain = data / "ca" / "chain.pem"
    command = [_openssl(), "verify", "-CAfile", str(data / "ca" / "root.pem")]
    check = subprocess.run(
        [*command, "-untrusted", str(chain), str(leaf_pem)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_rollover_creates_the_new_generation_keys_in_the_token(hsm: Hsm, tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert _cli("server", "init", str(data), "--ca-key-uri", hsm.uri()).returncode == 0
    before = set(_token_objects(hsm))
    result = _cli("server", "rollover", str(data), "--json")
    assert result.returncode == 0, result.stderr
    g2 = data / "ca" / "generations" / "g2"
    created = set(_token_objects(hsm)) - before
    assert created == {_label_of(g2 / "root.uri"), _label_of(g2 / "issuing.uri")}
    assert not list((data / "ca").rglob("*.key"))
    new_root = load_pem_certificates((g2 / "root.pem").read_bytes())[0]
    new_with_old = load_pem_certificates((g2 / "new-with-old.pem").read_bytes())[0]
    old_root = load_pem_certificates((g2 / "old-with-old.pem").read_bytes())[0]
    issuing = load_pem_certificates((g2 / "issuing.pem").read_bytes())[0]
    new_root.verify_directly_issued_by(new_root)
    new_with_old.verify_directly_issued_by(old_root)  # signed by the OLD token key
    issuing.verify_directly_issued_by(new_root)
    # The reloaded CA signs with the new token key.
    authority = CertificateAuthority.load(data / "ca")
    csr = build_csr(generate_private_key("p256"), common_name="after.example")
    authority.issue(csr, Profile()).verify_directly_issued_by(issuing)


def test_rsa_keys_in_the_token(hsm: Hsm, tmp_path: Path) -> None:
    authority = CertificateAuthority.create(
        tmp_path / "ca", key_type="rsa2048", key_uri=hsm.uri(pin=USER_PIN)
    )
    assert isinstance(authority.root_certificate.public_key(), rsa.RSAPublicKey)
    csr = build_csr(generate_private_key("p256"), common_name="rsa.example")
    leaf = authority.issue(csr, Profile())
    leaf.verify_directly_issued_by(authority.issuer_certificate)
    crl = x509.load_der_x509_crl(authority.build_crl([]))
    assert crl.is_signature_valid(authority.issuer_certificate.public_key())  # type: ignore[arg-type]
    assert not list((tmp_path / "ca").rglob("*.key"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pin": "000000"}, "the PIN for PKCS#11 token 'estkit-test' is wrong"),
        ({"token": "no-such-token"}, "no PKCS#11 token 'no-such-token'"),
        ({"module": "/nonexistent/libpkcs11.so"}, "the PKCS#11 module /nonexistent/libpkcs11.so"),
        ({"pin_file": "/nonexistent/pin"}, "cannot read the PIN file /nonexistent/pin"),
        ({"raw": "token=x"}, "not a PKCS#11 URI"),
    ],
    ids=["wrong-pin", "missing-token", "missing-module", "missing-pin-file", "not-a-uri"],
)
def test_bad_token_input_fails_init_and_writes_nothing(
    hsm: Hsm, tmp_path: Path, change: dict[str, str], message: str
) -> None:
    if "raw" in change:
        uri = change["raw"]
    elif "pin_file" in change:
        uri = hsm.uri().replace(str(hsm.pin_file), change["pin_file"])
    else:
        uri = hsm.uri(**change)
    before = set(_token_objects(hsm))
    data = tmp_path / "data"
    result = _cli("server", "init", str(data), "--ca-key-uri", uri)
    assert result.returncode != 0
    assert message in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr
    assert not data.exists(), "a failed init left a half-made data directory"
    assert set(_token_objects(hsm)) == before


def test_a_key_missing_from_the_token_fails_serve_clearly(hsm: Hsm, tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert _cli("server", "init", str(data), "--ca-key-uri", hsm.uri()).returncode == 0
    label = _label_of(data / "ca" / "generations" / "g1" / "issuing.uri")
    script = (
        "import sys,pkcs11\nfrom pkcs11 import Attribute as A\n"
        "lib=pkcs11.lib(sys.argv[1])\n"
        "with lib.get_token(token_label=sys.argv[2]).open(user_pin=sys.argv[3], rw=True) as s:\n"
        "  [o.destroy() for o in list(s.get_objects({A.LABEL: sys.argv[4]}))]\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(hsm.module), TOKEN_LABEL, USER_PIN, label], check=True
    )
    result = _cli("server", "serve", str(data), "--port", "0")
    assert result.returncode != 0
    text = " ".join(result.stderr.split())
    assert f"the CA key '{label}' is not in the PKCS#11 token" in text, result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_pin_at_serve_is_a_clear_error(hsm: Hsm, tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert _cli("server", "init", str(data), "--ca-key-uri", hsm.uri()).returncode == 0
    pin_file = tmp_path / "other-pin"
    pin_file.write_text("999999\n")
    for uri_file in (data / "ca" / "generations" / "g1").glob("*.uri"):
        uri_file.write_text(uri_file.read_text().replace(str(hsm.pin_file), str(pin_file)))
    result = _cli("server", "serve", str(data), "--port", "0")
    assert result.returncode != 0
    assert "the PIN for PKCS#11 token 'estkit-test' is wrong" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def test_uri_parsing_round_trips_and_bounds() -> None:
    text = (
        "pkcs11:token=My%20Token;object=ca;type=private;id=%01%ff"
        "?module-path=/usr/lib/x.so&pin-value=12%2634"
    )
    uri = Pkcs11Uri.parse(text)
    assert uri.path["token"] == "My Token" and uri.key_id == b"\x01\xff"
    assert uri.pin() == "12&34"
    assert Pkcs11Uri.parse(str(uri)) == uri
    assert "12" not in uri.redacted().split("?")[1] and "pin-value=***" in uri.redacted()
    with pytest.raises(Pkcs11Error, match="longer than"):
        Pkcs11Uri.parse("pkcs11:token=" + "a" * MAX_URI_CHARS)
    with pytest.raises(Pkcs11Error, match="names token= twice"):
        Pkcs11Uri.parse("pkcs11:token=a;token=b?module-path=/x&pin-value=1")
    with pytest.raises(Pkcs11Error, match="no module-path="):
        Pkcs11Uri.parse("pkcs11:token=a?pin-value=1")
    with pytest.raises(Pkcs11Error, match="has no PIN"):
        Pkcs11Uri.parse("pkcs11:token=a?module-path=/x")
    with pytest.raises(Pkcs11Error, match="unknown PKCS#11 URI path attribute 'tokn=a'"):
        Pkcs11Uri.parse("pkcs11:tokn=a?module-path=/x&pin-value=1")


def test_file_key_path_still_writes_pem_keys(tmp_path: Path) -> None:
    authority = CertificateAuthority.create(tmp_path / "ca", key_type="p256")
    generation = tmp_path / "ca" / "generations" / "g1"
    assert (generation / "root.key").exists() and not (generation / "root.uri").exists()
    leaf = authority.issue(
        build_csr(generate_private_key("p256"), common_name="f.example"), Profile()
    )
    leaf.verify_directly_issued_by(authority.issuer_certificate)


def test_wrong_pin_in_process_is_refused_even_when_another_session_is_open(
    hsm: Hsm, tmp_path: Path
) -> None:
    CertificateAuthority.create(tmp_path / "ok", key_uri=hsm.uri())
    with pytest.raises(CaError) as caught:
        CertificateAuthority.create(tmp_path / "bad", key_uri=hsm.uri(pin="000000"))
    assert "PKCS#11 token" in str(caught.value)
    assert not (tmp_path / "bad").exists()


@pytest.mark.xfail(
    reason="two worker processes signing through one SoftHSM2 token intermittently reset "
    "connections (about one run in four here); serve defaults to one worker for a token CA "
    "until this is understood",
    strict=False,
)
def test_two_workers_sign_through_the_token_after_fork(hsm: Hsm, tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert _cli("server", "init", str(data), "--ca-key-uri", hsm.uri()).returncode == 0
    process = subprocess.Popen(
        [*CLI, "server", "serve", str(data), "--port", "0", "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200"),
    )
    log: list[str] = []
    assert process.stderr is not None
    stderr = process.stderr
    reader = threading.Thread(target=lambda: log.extend(stderr), daemon=True)
    reader.start()
    try:
        assert process.stdout is not None
        port = None
        for line in process.stdout:
            match = re.search(r"listening on https://localhost:(\d+) \(2 workers\)", line)
            if match:
                port = int(match.group(1))
                break
        assert port, "the server did not start"
        issuing_pem = data / "ca" / "generations" / "g1" / "issuing.pem"
        issuing = load_pem_certificates(issuing_pem.read_bytes())[0]

        def one(index: int) -> None:
            csr = build_csr(generate_private_key("p256"), common_name=f"w{index}.example")
            status, answer = _enroll(port, data, encode_csr_body(csr))
            assert status == 200, answer
            decode_certs_only_body(answer)[0].verify_directly_issued_by(issuing)

        # The kernel decides which worker accepts a connection: enroll until the log shows both
        # workers issuing (bounded), reading stderr as it comes.
        issued = 0
        while issued < ENROLLMENTS_ACROSS_WORKERS:
            one(issued)
            issued += 1
            if len(set(re.findall(r"\[(\d+)\]: issued ", "".join(log)))) == 2:
                break
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=CLI_TIMEOUT_SECONDS)
        reader.join(timeout=CLI_TIMEOUT_SECONDS)
    errors = "".join(log)
    assert process.returncode == 0, errors
    assert "Traceback" not in errors
    # Both forked workers issued (each logs its pid): each re-initialised the module itself.
    pids = set(re.findall(r"\[(\d+)\]: issued ", errors))
    assert len(pids) == 2, errors
    # The token survived two processes initialising and finalising the module.
    objects = _token_objects(hsm)
    for name in ("root.uri", "issuing.uri"):
        assert _label_of(data / "ca" / "generations" / "g1" / name) in objects


def test_benchmark_runs_briefly_and_reports_every_figure(hsm: Hsm) -> None:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_pkcs11.py"
    result = subprocess.run(
        [sys.executable, str(script), "--duration", "0.1"],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    figures = re.findall(r"\(n=(\d+), errors=(\d+)\)", result.stdout)
    # p256 and rsa2048: raw in-process, raw token, certificates from a key file and the token.
    assert len(figures) == 8, result.stdout
    assert all(int(n) > 0 and errors == "0" for n, errors in figures), result.stdout
    assert result.stdout.count("token/in-process: raw") == 2
