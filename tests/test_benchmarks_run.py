"""The benchmark and fuzzing scripts still run end to end (briefly) and print their figures.

Why: benchmarks are not timed tests, so nothing else exercises them, and a change elsewhere (the
server banner now names `localhost`, not 127.0.0.1) once left two of them unable to start. These
runs are short and assert no figure, only that every request succeeded and the report is whole.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
RUN_TIMEOUT_SECONDS = 240


def _run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def test_server_enrollment_benchmark_runs_without_errors() -> None:
    out = _run("bench_server_enroll.py", "--duration", "0.5")
    figures = re.findall(r"\(n=(\d+), errors=(\d+)\)", out)
    # p256 and rsa2048: enroll x1, enroll x16, estkit handshakes; plus two openssl ceilings.
    assert len(figures) == 8, out
    assert all(int(n) > 0 and errors == "0" for n, errors in figures), out
    assert "enrollments/s at 16 clients" in out and "single-client p50" in out


def test_server_enrollment_benchmark_runs_side_by_side_with_a_baseline() -> None:
    """--baseline: HEAD's own source as the baseline (git archive), both servers driven by the
    multi-process load; every request of both answered 200 and the ratio printed."""
    out = _run(
        "bench_server_enroll.py",
        "--baseline", "HEAD", "--duration", "0.5", "--rounds", "1", "--clients", "2",
        "--key-types", "p256",
    )  # fmt: skip
    rounds = re.findall(r"round 1 (baseline|current)\s+2 clients .*\(n=(\d+), errors=(\d+)\)", out)
    assert sorted(name for name, _, _ in rounds) == ["baseline", "current"], out
    singles = re.findall(r"(baseline|current)\s+1 client .*\(n=(\d+), errors=(\d+)\)", out)
    assert len(singles) == 2, out
    assert all(int(n) > 0 and errors == "0" for _, n, errors in rounds + singles), out
    assert re.search(r"p256 at 2 clients: .* ratio current/baseline \d+\.\d\dx", out), out
    # The load processes' own CPU per enrollment beside each round's server CPU.
    assert len(re.findall(r"round 1 .* CPU \d+\.\d\d ms/enrollment, load \d+\.\d\d ms", out)) == 2


def test_server_handshake_cpu_benchmark_runs() -> None:
    """--handshake-cpu: every key type and TLS version completes in-memory handshakes against
    the serve context and the same context with session tickets, and prints both figures and
    the client end's CPU (the load generator's floor)."""
    out = _run("bench_server_enroll.py", "--handshake-cpu", "3")
    rows = re.findall(
        r"(p256|rsa2048)\s+(TLSv1_2|TLSv1_3): current (\d+\.\d+), with session tickets "
        r"(\d+\.\d+); client end (\d+\.\d+)",
        out,
    )
    assert {(key, version) for key, version, *_ in rows} == {
        (key, version) for key in ("p256", "rsa2048") for version in ("TLSv1_2", "TLSv1_3")
    }, out
    assert all(
        float(figure) > 0 for *_, now, before, client in rows for figure in (now, before, client)
    ), out


def test_client_benchmark_runs_without_errors() -> None:
    out = _run("bench_client.py", "--enrollments", "20", "--skip-keygen")
    assert "client overhead (median difference)" in out, out
    assert re.search(r"EstClient .*\(n=20\)", out), out


def test_fleet_soak_delivers_every_certificate_to_a_small_fleet() -> None:
    out = _run(
        "soak.py", "--nodes", "20", "--stores", "sqlite", "--instances", "1", "--rsa-pool", "4"
    )
    assert "20 nodes (20 ok, 0 failed)" in out, out
    assert "80 certificates recorded, 80 delivered to nodes (all present)" in out, out


def test_http_fuzz_script_reports_inputs_tried() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS.parent / "fuzz" / "fuzz_http.py"), "--examples", "5"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tried = re.search(r"total: (\d+) inputs tried, 0 failing inputs", result.stdout)
    assert tried and int(tried.group(1)) >= 10, result.stdout
    # Both properties ran, each counted by the property itself.
    assert re.search(r"random_requests\s+[1-9]\d* inputs", result.stdout), result.stdout
    assert re.search(r"raw_bytes\s+[1-9]\d* inputs", result.stdout), result.stdout


def test_http_fuzz_script_fails_when_no_input_ran() -> None:
    """Select only the non-property test: pytest passes, but no input was fuzzed, so the script
    must say so and exit non-zero instead of reporting a clean run (the hypothesis-wording bug)."""
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS.parent / "fuzz" / "fuzz_http.py"), "--examples", "5"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        env=dict(os.environ, PYTEST_ADDOPTS="-k test_server_still_serves_after_fuzzing"),
    )
    assert "total: 0 inputs tried" in result.stdout, result.stdout
    assert "no input was run" in result.stdout, result.stdout
    assert result.returncode == 1, result.stdout + result.stderr


def test_ocsp_benchmark_runs_without_errors() -> None:
    """Both servers answered every request (each checked answer had the store's status), and the
    comparison and the revocation delay are printed."""
    out = _run(
        "bench_ocsp.py", "--duration", "0.3", "--rounds", "1", "--certs", "5",
        "--ca-key-types", "p256", "--load-processes", "2",
    )  # fmt: skip
    figures = re.findall(r"\(n=(\d+), errors=(\d+)\)", out)
    # estkit HTTPS keep-alive, new connection each, nonce; the plain-HTTP listener keep-alive
    # and new connection each; openssl with the delegated responder.
    assert len(figures) == 6, out
    assert re.search(r"estkit HTTP keep-alive \(pre-signed\) vs openssl ocsp", out), out
    assert all(int(n) > 0 and errors == "0" for n, errors in figures), out
    assert re.search(r"vs openssl ocsp -port -multi 2 HTTP, .*x answers per server CPU-second", out)
    assert "revocation to 'revoked' answer (5 revocations)" in out, out
