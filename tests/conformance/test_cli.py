"""``estkit test-server``: exit status, report files that match the results, --only, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from click.testing import CliRunner

from estkit.cli.main import cli
from estkit.conformance import CASE_IDS

from .conftest import ConformanceServer


def base_args(server: ConformanceServer) -> list[str]:
    paths = server.paths
    return [
        "test-server",
        "--ip", "127.0.0.1",
        "--port", str(server.port),
        "--cacert", str(paths.ca_certificates),
        "--cert", str(paths.device_certificate),
        "--key", str(paths.device_key),
    ]  # fmt: skip


def check_reports(directory: Path, *, expect_failed: set[str]) -> dict[str, dict[str, object]]:
    """The three report files agree with each other; returns the JSON results by id."""
    document = json.loads((directory / "report.json").read_text())
    results = {r["id"]: r for r in document["results"]}
    assert set(document) == {"results", "summary", "server"}
    for result in results.values():
        assert set(result) == {
            "id", "name", "requirement", "status", "message", "evidence", "duration_ms"
        }  # fmt: skip
        assert result["status"] in ("pass", "fail", "warn", "skip", "n/a")
    failed = {i for i, r in results.items() if r["status"] == "fail"}
    assert failed == expect_failed
    summary = document["summary"]
    assert summary["total"] == len(results) and summary["fail"] == len(failed)
    assert summary["passed"] is (not failed)
    assert document["server"]["port"] > 0

    suite = ET.parse(directory / "report.xml").getroot().find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert len(cases) == len(results) == int(suite.get("tests", "-1"))
    for case in cases:
        case_id = case.get("name", "").split(":")[0]
        status = results[case_id]["status"]
        assert (case.find("failure") is not None) == (status == "fail")
        assert (case.find("skipped") is not None) == (status in ("skip", "n/a"))
        if status == "warn":
            out = case.find("system-out")
            assert out is not None and (out.text or "").startswith("warn:")
    assert int(suite.get("failures", "-1")) == len(failed)

    page = (directory / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    for case_id, result in results.items():
        assert f'<tr id="{case_id}" data-status="{result["status"]}">' in page
    return results


def test_cli_passing_run_writes_matching_reports(
    conformance_server: ConformanceServer, tmp_path: Path
) -> None:
    reports = ["--json", str(tmp_path / "report.json"), "--junit", str(tmp_path / "report.xml"),
               "--html", str(tmp_path / "report.html")]  # fmt: skip
    args = [*base_args(conformance_server), *reports]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    results = check_reports(tmp_path, expect_failed=set())
    assert set(results) == set(CASE_IDS)
    assert "PASSED" in result.output and "cacerts-root" in result.output


def test_cli_failing_run_exits_1(conformance_server: ConformanceServer, tmp_path: Path) -> None:
    args = [*base_args(conformance_server), "--label", "http", "--basic", "alice:wonderland",
            "--json", str(tmp_path / "report.json"), "--junit", str(tmp_path / "report.xml"),
            "--html", str(tmp_path / "report.html")]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    results = check_reports(tmp_path, expect_failed={"no-http-auth-challenge"})
    assert "S5" in str(results["no-http-auth-challenge"]["message"])
    assert "FAILED" in result.output


def test_cli_only_selects_cases(conformance_server: ConformanceServer, tmp_path: Path) -> None:
    out = tmp_path / "only.json"
    args = [*base_args(conformance_server), "--only", "tls12,tls13", "--only", "enroll-ecdsa",
            "--json", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    ids = [r["id"] for r in json.loads(out.read_text())["results"]]
    assert ids == ["enroll-ecdsa", "tls12", "tls13"]


def test_cli_unknown_case_id_is_a_usage_error(conformance_server: ConformanceServer) -> None:
    result = CliRunner().invoke(cli, [*base_args(conformance_server), "--only", "no-such-case"])
    assert result.exit_code == 2
    assert "no-such-case" in result.output and "Traceback" not in result.output


def test_cli_bad_key_file_is_a_clean_error(
    conformance_server: ConformanceServer, tmp_path: Path
) -> None:
    bogus = tmp_path / "bogus.key"
    bogus.write_text("not a key\n")
    args = base_args(conformance_server)
    args[args.index("--key") + 1] = str(bogus)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "bogus.key" in result.output and "Traceback" not in result.output


def test_cli_list_shows_every_case() -> None:
    result = CliRunner().invoke(cli, ["test-server", "--list"])
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.output.splitlines() if line.strip()]
    assert listed == list(CASE_IDS)
    assert len(listed) >= 25


def test_installed_entry_point_exit_status(conformance_server: ConformanceServer) -> None:
    """The installed ``estkit`` program (a separate process) exits 0 on a passing run."""
    program = shutil.which("estkit")
    command = [program] if program else [sys.executable, "-m", "estkit.cli.main"]
    args = [*base_args(conformance_server), "--only", "cacerts-root,enroll-ecdsa"]
    done = subprocess.run(
        [*command, *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "enroll-ecdsa" in done.stdout and "PASSED" in done.stdout


def test_cli_json_to_stdout_keeps_stdout_machine_readable(
    conformance_server: ConformanceServer,
) -> None:
    args = [*base_args(conformance_server), "--only", "tls12", "--json", "-"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [r["id"] for r in document["results"]] == ["tls12"]
    assert "PASSED" in result.stderr
