"""Prometheus metrics: the real `estkit server serve --metrics-port` scraped over HTTP after real
enrollments over real TLS, with one worker and with two (multiprocess mode sums the workers)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from estkit.protocol.certs import load_pem_certificates
from estkit.protocol.csr import build_csr, encode_csr_body
from estkit.protocol.keys import generate_private_key
from estkit.server.config import ConfigError, add_label, load_config, set_limits
from estkit.server.datadir import InitResult, init_data_dir

from .witness import client_context, post

SERVE_START_TIMEOUT_SECONDS = 60
SERVE = (sys.executable, "-m", "estkit.cli.main", "server", "serve")
Sample = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Served:
    process: subprocess.Popen[str]
    paths: InitResult
    port: int
    metrics_url: str
    banner: str


def _serve_command(paths: InitResult, *args: str) -> list[str]:
    return [*SERVE, str(paths.data_dir), "--port", "0", *args]


def _serve(paths: InitResult, *args: str) -> Served:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    process = subprocess.Popen(
        _serve_command(paths, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert process.stdout is not None
    banner, port, metrics_url = "", None, None
    deadline = time.monotonic() + SERVE_START_TIMEOUT_SECONDS
    for line in process.stdout:
        banner += line
        match = re.search(r"listening on https://localhost:(\d+)", line)
        if match:
            port = int(match.group(1))
        match = re.search(r"metrics:\s+(http://\S+/metrics)", line)
        if match:
            metrics_url = match.group(1)
        if "Press Ctrl+C" in line or time.monotonic() > deadline:
            break
    if port is None or metrics_url is None:
        process.kill()
        _, errors = process.communicate(timeout=30)
        pytest.fail(f"the server did not start with metrics:\n{banner}\n{errors}")
    return Served(process, paths, port, metrics_url, banner)


def _stop(served: Served) -> str:
    served.process.send_signal(signal.SIGTERM)
    try:
        _, errors = served.process.communicate(timeout=SERVE_START_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        served.process.kill()
        raise
    assert served.process.returncode == 0, errors
    assert "Traceback" not in errors
    return errors


@pytest.fixture
def data_dir(tmp_path: Path) -> InitResult:
    paths = init_data_dir(tmp_path / "data")
    add_label(paths.data_dir / "estkit.toml", "manual", approval="manual", retry_after_seconds=1)
    return paths


@pytest.fixture(params=[1, 2], ids=["one-worker", "two-workers"])
def served(request: pytest.FixtureRequest, data_dir: InitResult) -> Iterator[Served]:
    workers = request.param
    served = _serve(data_dir, "--metrics-port", "0", "--workers", str(workers))
    if workers > 1:
        assert f"({workers} workers)" in served.banner
    try:
        yield served
    finally:
        _stop(served)


def scrape(url: str) -> Sample:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        text = response.read().decode()
    values: Sample = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(sample: Sample, name: str, **labels: str) -> float:
    return sample.get((name, tuple(sorted(labels.items()))), 0.0)


def _enroll(served: Served, path: str, body: bytes) -> int:
    paths = served.paths
    context = client_context(
        paths.ca_certificates, cert=paths.device_certificate, key=paths.device_key
    )
    return post("localhost", served.port, path, body, context).status


def _csr(name: str) -> bytes:
    return encode_csr_body(build_csr(generate_private_key("p256"), common_name=name))


def test_scrape_counts_exactly_the_enrollments_made(served: Served) -> None:
    # One request waits for approval: the pending gauge and the "queued" result.
    queued = _enroll(served, "/.well-known/est/manual/simpleenroll", _csr("wait.example.com"))
    assert queued == 202
    before = scrape(served.metrics_url)
    assert value(before, "estkit_pending_requests") == 1

    issued_count = 6
    with ThreadPoolExecutor(max_workers=issued_count) as pool:
        statuses = list(
            pool.map(
                lambda i: _enroll(served, "/.well-known/est/simpleenroll", _csr(f"n{i}.example")),
                range(issued_count),
            )
        )
    assert statuses == [200] * issued_count
    assert _enroll(served, "/.well-known/est/simpleenroll", b"not base64 at all!") == 400
    # An unknown label is refused (404) and must not become a series of its own.
    assert _enroll(served, "/.well-known/est/bogus/simpleenroll", _csr("x.example")) == 404
    context = client_context(served.paths.ca_certificates)
    for _ in range(2):
        connection = urllib.request.urlopen(
            f"https://localhost:{served.port}/.well-known/est/cacerts", context=context
        )
        assert connection.status == 200
        connection.close()
    after = scrape(served.metrics_url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    enrollments = "estkit_enrollments_total"
    assert delta(enrollments, label="-", operation="simpleenroll", result="issued") == 6
    assert delta(enrollments, label="-", operation="simpleenroll", result="refused") == 1
    assert value(after, enrollments, label="manual", operation="simpleenroll", result="queued") == 1
    assert not any(dict(labels).get("label") == "bogus" for _, labels in after)
    durations = "estkit_request_duration_seconds_count"
    assert delta(durations, endpoint="cacerts") == 2
    # 6 issued + 1 refused CSR + the unknown label (still the simpleenroll endpoint).
    assert delta(durations, endpoint="simpleenroll") == 8
    assert value(after, "estkit_request_duration_seconds_sum", endpoint="simpleenroll") > 0


def test_gauges_show_certificate_expiry_queue_and_crl(served: Served) -> None:
    paths = served.paths
    sample = scrape(served.metrics_url)
    root = load_pem_certificates(paths.ca_certificates.read_bytes())[0]
    expiries = {
        labels: v
        for (name, labels), v in sample.items()
        if name == "estkit_ca_certificate_expiry_timestamp_seconds"
    }
    assert (("role", "root"),) in expiries and (("role", "issuing"),) in expiries
    assert root.not_valid_after_utc.timestamp() in expiries.values()
    config = load_config(paths.data_dir)
    for pair in config.tls_certificates:
        certificate = load_pem_certificates(pair.certificate.read_bytes())[0]
        assert (
            value(
                sample,
                "estkit_tls_certificate_expiry_timestamp_seconds",
                certificate=pair.certificate.name,
            )
            == certificate.not_valid_after_utc.timestamp()
        )
    assert value(sample, "estkit_pending_requests") == 0
    assert value(sample, "estkit_crl_last_signed_timestamp_seconds") == 0
    started = time.time()
    context = client_context(paths.ca_certificates)
    with urllib.request.urlopen(f"https://localhost:{served.port}/crl", context=context) as crl:
        assert crl.status == 200
    signed = value(scrape(served.metrics_url), "estkit_crl_last_signed_timestamp_seconds")
    assert started - 1 <= signed <= time.time() + 1


MONITORING = Path(__file__).resolve().parents[2] / "docs" / "monitoring"


def test_dashboard_and_alerts_use_only_exported_metrics(served: Served) -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(expressions) >= 8
    rules = (MONITORING / "alerts.yml").read_text()
    # Labelled series appear once something was counted: one enrollment, one failed handshake.
    assert _enroll(served, "/.well-known/est/simpleenroll", _csr("d.example")) == 200
    _handshake(served.port, ssl.create_default_context())
    exported = {name for name, _ in scrape(served.metrics_url)}
    used = set(re.findall(r"estkit_[a-z_]+", " ".join(expressions) + rules))
    assert len(used) >= 7, used
    assert used <= exported, used - exported


def _handshake(port: int, context: ssl.SSLContext) -> None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
        pytest.raises(ssl.SSLError),
    ):
        context.wrap_socket(raw, server_hostname="localhost").close()


def test_tls_handshake_failures_are_counted_by_alert(served: Served) -> None:
    before = scrape(served.metrics_url)
    # A client that does not trust the server's CA aborts with a fatal unknown_ca alert.
    stranger = ssl.create_default_context()
    _handshake(served.port, stranger)
    # A TLS 1.2 client offering only a suite BCP-003-01 does not allow: the server refuses.
    weak = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    weak.check_hostname = False
    weak.verify_mode = ssl.CERT_NONE
    weak.maximum_version = ssl.TLSVersion.TLSv1_2
    weak.set_ciphers("AES128-SHA")
    _handshake(served.port, weak)
    _handshake(served.port, weak)
    # A good handshake and request after them counts as no failure.
    context = client_context(served.paths.ca_certificates)
    with urllib.request.urlopen(
        f"https://localhost:{served.port}/.well-known/est/cacerts", context=context
    ) as response:
        assert response.status == 200
    after = scrape(served.metrics_url)
    name = "estkit_tls_handshake_failures_total"

    def delta(reason: str) -> float:
        return value(after, name, reason=reason) - value(before, name, reason=reason)

    assert delta("received_unknown_ca") == 1
    assert delta("sent_handshake_failure") == 2
    total_after = sum(v for (n, _), v in after.items() if n == name)
    total_before = sum(v for (n, _), v in before.items() if n == name)
    assert total_after - total_before == 3


@pytest.mark.parametrize("workers", [1, 2], ids=["one-worker", "two-workers"])
def test_revocation_listener_answers_are_counted_by_path_and_status(
    data_dir: InitResult, workers: int
) -> None:
    """Every answer of the plain-HTTP revocation listener is counted once, under its path and
    status, summed over the workers (counted per sweep, so the scrape waits for one)."""
    served = _serve(
        data_dir, "--metrics-port", "0", "--revocation-port", "0", "--workers", str(workers)
    )
    try:
        match = re.search(r"OCSP, CRL \(http\): http://127\.0\.0\.1:(\d+)/ocsp", served.banner)
        assert match, served.banner
        base = f"http://127.0.0.1:{match.group(1)}"
        name = "estkit_revocation_answers_total"
        before = scrape(served.metrics_url)
        # Not an OCSP request: OCSP says malformedRequest inside an HTTP 200 (RFC 6960 §2.3).
        for _ in range(3):
            request = urllib.request.Request(
                f"{base}/ocsp",
                data=b"\x30\x03\x02\x01\x00",
                headers={"Content-Type": "application/ocsp-request"},
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 200
        with urllib.request.urlopen(f"{base}/crl", timeout=30) as response:
            assert response.status == 200
        for path, method, status in (("/nothing-here", "GET", 404), ("/crl", "DELETE", 405)):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(
                    urllib.request.Request(f"{base}{path}", method=method), timeout=30
                )
            assert refused.value.code == status
        # The HTTPS port's /ocsp is an endpoint of its own in the request durations.
        https = post(
            "localhost",
            served.port,
            "/ocsp",
            b"\x30\x03\x02\x01\x00",
            client_context(served.paths.ca_certificates),
            headers={"Content-Type": "application/ocsp-request"},
        )
        assert https.status == 200

        def delta(sample: Sample, path: str, status: str) -> float:
            return value(sample, name, path=path, status=status) - value(
                before, name, path=path, status=status
            )

        deadline = time.monotonic() + 10
        while True:
            after = scrape(served.metrics_url)
            total = sum(v for (n, _), v in after.items() if n == name) - sum(
                v for (n, _), v in before.items() if n == name
            )
            if total >= 6 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert delta(after, "ocsp", "200") == 3
        assert delta(after, "crl", "200") == 1
        assert delta(after, "other", "404") == 1
        assert delta(after, "crl", "405") == 1
        assert total == 6  # nothing counted twice, nothing left out
        durations = "estkit_request_duration_seconds_count"
        assert (
            value(after, durations, endpoint="ocsp") - value(before, durations, endpoint="ocsp")
            == 1
        )
    finally:
        _stop(served)


def test_throttled_connections_are_counted(data_dir: InitResult) -> None:
    """A connection the failure throttle closes unread (its address went over
    failures_per_second) is counted under its listener; the refusals before it are not."""
    set_limits(data_dir.data_dir / "estkit.toml", failures_per_second=3, failure_backoff=30)
    served = _serve(data_dir, "--metrics-port", "0", "--workers", "1")
    try:
        name = "estkit_connections_throttled_total"
        before = scrape(served.metrics_url)
        context = client_context(
            data_dir.ca_certificates, cert=data_dir.device_certificate, key=data_dir.device_key
        )
        attacker = "127.0.0.2"  # not the host's own 127.0.0.1, which is never throttled
        for _ in range(4):  # one over the limit, within a second
            with (
                socket.create_connection(
                    ("127.0.0.1", served.port), timeout=30, source_address=(attacker, 0)
                ) as raw,
                context.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                tls.sendall(b"GET /.well-known/est/nosuchop HTTP/1.1\r\nHost: localhost\r\n"
                            b"Connection: close\r\n\r\n")  # fmt: skip
                assert tls.recv(65536).startswith(b"HTTP/1.1 404")
        assert value(scrape(served.metrics_url), name, listener="est") == value(
            before, name, listener="est"
        )
        with (
            socket.create_connection(
                ("127.0.0.1", served.port), timeout=30, source_address=(attacker, 0)
            ) as raw,
            pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError, OSError)),
        ):
            context.wrap_socket(raw, server_hostname="localhost")
        after = scrape(served.metrics_url)
        assert value(after, name, listener="est") - value(before, name, listener="est") == 1
    finally:
        _stop(served)


def test_metrics_port_from_the_config_file(data_dir: InitResult) -> None:
    config_path = data_dir.data_dir / "estkit.toml"
    with config_path.open("a") as handle:
        handle.write('\n[metrics]\nhost = "127.0.0.1"\nport = 0\n')
    served = _serve(data_dir)
    try:
        assert served.metrics_url.startswith("http://127.0.0.1:")
        assert "estkit_pending_requests" in str(scrape(served.metrics_url))
    finally:
        _stop(served)


def test_metrics_off_by_default(data_dir: InitResult) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    process = subprocess.Popen(
        _serve_command(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "Press Ctrl+C" in line:
            break
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=SERVE_START_TIMEOUT_SECONDS)
    assert not any("metrics:" in line for line in lines)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("port = 70000", "metrics.port must be 0-65535, got 70000"),
        ('port = "9100"', "metrics.port must be 0-65535, got '9100'"),
        ('host = ""', "metrics.host must be a host name or address"),
    ],
)
def test_bad_metrics_table_is_refused(data_dir: InitResult, table: str, message: str) -> None:
    config_path = data_dir.data_dir / "estkit.toml"
    with config_path.open("a") as handle:
        handle.write(f"\n[metrics]\n{table}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(data_dir.data_dir)
    assert message in str(caught.value)


def test_metrics_port_in_use_is_a_clear_error(data_dir: InitResult) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        result = subprocess.run(
            _serve_command(data_dir, "--metrics-port", str(busy)),
            capture_output=True,
            text=True,
            timeout=SERVE_START_TIMEOUT_SECONDS,
            env=dict(os.environ, COLUMNS="200"),
        )
    assert result.returncode != 0
    assert f"cannot serve metrics on 127.0.0.1:{busy}" in result.stderr
    assert "Traceback" not in result.stderr


def test_per_process_metric_files_live_in_a_private_directory_removed_at_stop(
    data_dir: InitResult,
) -> None:
    before = set(Path(tempfile.gettempdir()).glob("estkit-metrics-*"))
    served = _serve(data_dir, "--metrics-port", "0", "--workers", "2")
    try:
        assert _enroll(served, "/.well-known/est/simpleenroll", _csr("f.example")) == 200
        created = set(Path(tempfile.gettempdir()).glob("estkit-metrics-*")) - before
        assert len(created) == 1, created
        (directory,) = created
        assert directory.stat().st_mode & 0o777 == 0o700
        assert list(directory.glob("*.db")), "no per-process metric files were written"
    finally:
        _stop(served)
    assert not directory.exists(), "the metrics directory outlived the server"
