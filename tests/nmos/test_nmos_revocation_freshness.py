"""OCSP and CRL freshness (issue 20 item 6; C16): no replayable "good".

OCSP answers come from OpenSSL's own responder (`openssl ocsp -index ... -reqin ... -respout`):
one that echoes the request's nonce and, when asked to, omits nextUpdate. CRLs are the estkit
CA's own. Each refusal says why; a control shows the same answer is accepted when fresh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import ocsp

from estkit.ca.authority import CertificateAuthority
from estkit.client.status import (
    MAX_OCSP_RESPONSE_AGE,
    NONCE_BYTES,
    CertificateStatus,
    build_request,
    interpret_crl,
    interpret_ocsp_response,
)

from .test_nmos_revocation import NOW, authority, leaf  # noqa: F401  (module fixture)


def openssl_answer(
    authority: CertificateAuthority,  # noqa: F811
    cert: x509.Certificate,
    tmp_path: Path,
    *,
    nonce: bytes | None,
    next_update: bool,
) -> bytes:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    generation = authority.directory / "generations" / authority.generation
    expiry = cert.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
    serial = format(cert.serial_number, "X").rjust(2, "0")
    serial = "0" + serial if len(serial) % 2 else serial
    (tmp_path / "index.txt").write_text(f"V\t{expiry}\t\t{serial}\tunknown\t/CN=n.nmos.test\n")
    request = build_request(cert, authority.issuer_certificate, nonce)
    (tmp_path / "req.der").write_bytes(request)
    validity = ["-ndays", "1"] if next_update else []
    completed = subprocess.run(
        [
            openssl, "ocsp", "-index", str(tmp_path / "index.txt"),
            "-CA", str(generation / "issuing.pem"),
            "-rsigner", str(generation / "issuing.pem"), "-rkey", str(generation / "issuing.key"),
            "-reqin", str(tmp_path / "req.der"), "-respout", str(tmp_path / "resp.der"),
            *validity,
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    return (tmp_path / "resp.der").read_bytes()


def judge(
    authority: CertificateAuthority,  # noqa: F811
    cert: x509.Certificate,
    answer: bytes,
    now: datetime,
    nonce: bytes | None = None,
) -> CertificateStatus:
    return interpret_ocsp_response(
        cert, authority.issuer_certificate, answer, nonce=nonce, now=now, source="o"
    )


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def test_nonce_is_sent_and_must_come_back(
    authority: CertificateAuthority,  # noqa: F811
    tmp_path: Path,
) -> None:
    cert = leaf(authority)
    nonce = new_nonce()
    answer = openssl_answer(authority, cert, tmp_path, nonce=nonce, next_update=True)
    echoed = ocsp.load_der_ocsp_response(answer).extensions.get_extension_for_class(x509.OCSPNonce)
    assert echoed.value.nonce == nonce  # the responder supports nonces and echoed ours
    good = judge(authority, cert, answer, NOW, nonce)
    assert good.status == "good", good.problems
    replay = judge(authority, cert, answer, NOW, new_nonce())
    assert replay.status == "unknown"
    assert "the nonce in the answer is not ours" in replay.problems[0]


def test_answer_without_next_update_has_a_maximum_age(
    authority: CertificateAuthority,  # noqa: F811
    tmp_path: Path,
) -> None:
    cert = leaf(authority)
    answer = openssl_answer(authority, cert, tmp_path, nonce=None, next_update=False)
    parsed = ocsp.load_der_ocsp_response(answer)
    assert parsed.next_update_utc is None
    issued = parsed.this_update_utc
    fresh = judge(authority, cert, answer, issued)
    assert fresh.status == "good", fresh.problems
    later = issued + MAX_OCSP_RESPONSE_AGE + timedelta(minutes=1)
    old = judge(authority, cert, answer, later)
    assert old.status == "unknown"
    assert "has no nextUpdate and is older than 24 h" in old.problems[0]


def test_answer_from_the_future_is_not_trusted(
    authority: CertificateAuthority,  # noqa: F811
    tmp_path: Path,
) -> None:
    cert = leaf(authority)
    answer = openssl_answer(authority, cert, tmp_path, nonce=None, next_update=True)
    issued = ocsp.load_der_ocsp_response(answer).this_update_utc
    early = judge(authority, cert, answer, issued - timedelta(hours=1))
    assert early.status == "unknown"
    assert "issued in the future" in early.problems[0]


def test_crl_freshness(authority: CertificateAuthority) -> None:  # noqa: F811
    cert = leaf(authority)
    crl = authority.build_crl([], now=NOW)
    issuer = authority.issuer_certificate
    assert interpret_crl(cert, issuer, crl, now=NOW, source="c").status == "good"
    future = interpret_crl(cert, issuer, crl, now=NOW - timedelta(hours=1), source="c")
    assert future.status == "unknown" and "in the future" in future.problems[0]
