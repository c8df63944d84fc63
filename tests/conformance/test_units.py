"""The suite's own parts without a server: rogue chains, case selection, the runner's guarantees,
the report formats and the cipher-suite data."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
from cryptography.exceptions import InvalidSignature

from estkit.conformance import (
    ALL_CASES,
    Case,
    CaseResult,
    Identity,
    Status,
    SuiteReport,
    Target,
    UnknownCaseError,
    make_rogue_identity,
    run_suite,
)
from estkit.conformance.cases._common import split_multipart
from estkit.conformance.model import Outcome, failed, passed
from estkit.conformance.reports import report_to_html, report_to_json, report_to_junit
from estkit.conformance.runner import select_cases
from estkit.conformance.suites import TLS12_SUITES, TLS13_SUITES, classify_suite

from .pki import FakePki


def manufacturer(pki: FakePki) -> Identity:
    return Identity("manufacturer", (pki.device, pki.maker), pki.device_key)


def offline_target(pki: FakePki, **fields: object) -> Target:
    # Port 9 (discard) on loopback: the cases below never connect.
    return Target(host="127.0.0.1", port=9, trust_anchors=(pki.root,),
                  manufacturer=manufacturer(pki), **fields)  # type: ignore[arg-type]  # fmt: skip


def test_rogue_identity_has_the_real_names_and_other_keys(fake_pki: FakePki) -> None:
    real = manufacturer(fake_pki)
    rogue, rogue_cas = make_rogue_identity(real)
    assert [c.subject for c in rogue.chain] == [c.subject for c in real.chain]
    assert [c.issuer for c in rogue.chain] == [c.issuer for c in real.chain]
    assert rogue_cas == list(rogue.chain[1:])
    for fake, genuine in zip(rogue.chain, real.chain, strict=True):
        assert fake.public_key() != genuine.public_key()
    rogue.certificate.verify_directly_issued_by(rogue_cas[0])
    with pytest.raises(InvalidSignature):
        rogue.certificate.verify_directly_issued_by(fake_pki.maker)


def test_rogue_identity_from_a_lone_leaf_invents_the_issuer(fake_pki: FakePki) -> None:
    lone = Identity("manufacturer", (fake_pki.device,), fake_pki.device_key)
    rogue, rogue_cas = make_rogue_identity(lone)
    assert len(rogue_cas) == 1 and rogue_cas[0].subject == fake_pki.device.issuer
    rogue.certificate.verify_directly_issued_by(rogue_cas[0])


def test_select_cases_keeps_catalogue_order_and_rejects_unknown_ids() -> None:
    chosen = select_cases(ALL_CASES, ["tls12", "cacerts-root"])
    assert [c.id for c in chosen] == ["cacerts-root", "tls12"]
    with pytest.raises(UnknownCaseError, match="nope"):
        select_cases(ALL_CASES, ["nope"])


def test_catalogue_has_enough_cases_each_citing_a_requirement() -> None:
    assert len(ALL_CASES) >= 25
    for case in ALL_CASES:
        assert case.requirement and all(
            part.strip()[0] in "ESTCD" for part in case.requirement.split(",")
        ), case


def test_runner_isolates_a_crashing_case_and_cites_requirements(fake_pki: FakePki) -> None:
    def crash(_session: object) -> Outcome:
        raise RuntimeError("boom")

    cases = [
        Case("crash", "crashes", "E2", "all", crash),  # type: ignore[arg-type]
        Case("uncited", "fails without citing", "S7", "all", lambda _s: failed("bad EKU")),
        Case("nmos-only", "nmos rule", "T3", "nmos", lambda _s: passed("ok")),
    ]
    report = run_suite(offline_target(fake_pki, profile="rfc7030"), cases=cases)
    crash_result, uncited, nmos_only = report.results
    assert crash_result.status is Status.FAIL and "boom" in crash_result.message
    assert "E2" in crash_result.message and "traceback" in crash_result.evidence
    assert uncited.message == "S7: bad EKU"
    assert nmos_only.status is Status.NA and "rfc7030" in nmos_only.message
    assert report.exit_status == 1


def synthetic_report() -> SuiteReport:
    results = tuple(
        CaseResult(f"case-{status.name.lower()}", f"{status} case", "E1", status,
                   f"<script>{status}</script>", {"exchanges": [{"status": 200}]}, 1.5)
        for status in Status
    )  # fmt: skip
    return SuiteReport(results, {"url": "https://127.0.0.1:1"}, datetime.now(UTC), 12.0)


def test_junit_maps_statuses() -> None:
    root = ET.fromstring(report_to_junit(synthetic_report()))
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("5", "1", "2")
    by_id = {c.get("classname", "").rsplit(".", 1)[-1]: c for c in suite.findall("testcase")}
    assert by_id["case-fail"].find("failure") is not None
    assert by_id["case-skip"].find("skipped") is not None
    assert by_id["case-na"].find("skipped") is not None
    warn = by_id["case-warn"]
    assert warn.find("failure") is None and warn.find("skipped") is None
    assert (warn.findtext("system-out") or "").startswith("warn:")
    assert len(by_id["case-pass"]) == 0


def test_html_escapes_server_text_and_json_round_trips() -> None:
    report = synthetic_report()
    page = report_to_html(report)
    assert "<script>" not in page and "&lt;script&gt;" in page
    document = json.loads(report_to_json(report))
    assert [r["status"] for r in document["results"]] == [str(s) for s in Status]
    assert document["summary"]["fail"] == 1 and document["summary"]["passed"] is False


def test_cipher_suite_data_matches_bcp_003_01() -> None:
    assert len(TLS12_SUITES) == 12 and len(TLS13_SUITES) == 3
    assert [s.openssl_name for s in TLS12_SUITES if s.strength == "SHALL"] == [
        "ECDHE-RSA-AES128-GCM-SHA256"
    ]
    assert [s.openssl_name for s in TLS13_SUITES if s.strength == "SHALL"] == [
        "TLS_AES_128_GCM_SHA256"
    ]
    assert classify_suite({"name": "AES128-GCM-SHA256", "kea": "kx-rsa",
                           "symmetric": "aes-128-gcm", "digest": None}) == "rsa-kex"  # fmt: skip
    assert classify_suite({"name": "ECDHE-RSA-AES128-SHA", "kea": "kx-ecdhe",
                           "symmetric": "aes-128-cbc", "digest": "sha1"}) == "cbc-sha1"  # fmt: skip
    assert classify_suite({"name": "DES-CBC3-SHA", "kea": "kx-rsa",
                           "symmetric": "3des-cbc", "digest": "sha1"}) == "3des"  # fmt: skip


def test_suite_never_imports_server_ca_or_client_code() -> None:
    """The suite must see any server only over the network (issue 5)."""
    code = (
        "import sys, estkit.conformance, estkit.cli.conformance\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['estkit', 'server'], ['estkit', 'ca'], ['estkit', 'client']))\n"
        "print(bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_console_table_keeps_every_message_whole_on_an_80_column_terminal() -> None:
    import io

    from rich.console import Console

    from estkit.conformance.reports import results_table

    message = "the server presented 2 certificates and refused ECDHE-RSA-AES128-SHA-final-word"
    results = [
        CaseResult("server-certificate-names", "No wildcard or IP names", "T4, E2, C9, S3",
                   status, message, {}, 1.0)
        for status in Status
    ]  # fmt: skip
    for width in (80, 200):
        out = io.StringIO()
        Console(file=out, width=width, color_system=None).print(results_table(results, width=width))
        text = out.getvalue()
        assert max(len(line) for line in text.splitlines()) <= width
        flat = "".join(ch for line in text.splitlines() for ch in line if ch not in "│┃ ")
        # Every word of the message, the id and the requirement survive (folded, never cut).
        assert flat.count("final-word") == len(results), text
        assert flat.count("server-certificate-names") == len(results)
        assert "…" not in text


def test_split_multipart_keeps_part_headers_and_bytes() -> None:
    body = (
        b"preamble\r\n--b1\r\nContent-Type: application/pkcs8\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nTUlJ\r\n"
        b"--b1\nContent-Type: x/y\n\n\x30\x03\r\n\x01\x02\n--b1--\r\nepilogue"
    )
    parts = split_multipart(body, "b1")
    assert [p.headers for p in parts] == [
        {"content-type": "application/pkcs8", "content-transfer-encoding": "base64"},
        {"content-type": "x/y"},
    ]
    assert [p.content for p in parts] == [b"TUlJ", b"\x30\x03\r\n\x01\x02"]
    with pytest.raises(ValueError, match="close delimiter"):
        split_multipart(b"--b1\r\n\r\nTUlJ\r\n", "b1")
    with pytest.raises(ValueError, match="no '--b2' delimiter"):
        split_multipart(body, "b2")
