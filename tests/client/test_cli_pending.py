"""Manual approval round trip from the command line (issue 15, item 2; BCP-003-03 S4, RFC 7030
§4.2.3): pending → the same command again → operator approves → the same command collects.

Everything is real: the estkit server over TLS, `estkit client enroll` and `estkit server
approve` through click's runner with the real parsers.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from estkit.cli.client_pending import MAX_PENDING_STATE_BYTES, pending_path
from estkit.cli.main import cli
from estkit.protocol import load_pem_certificates, load_private_key, public_keys_equal

from .pki import QuirkyPki
from .quirky import Canned, QuirkyServer


def _run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [*map(str, args)])


def _enroll(server: Any, tmp_path: Path, *extra: str | Path, cn: str = "pending.example") -> Result:
    return _run(
        "client",
        "enroll",
        "--server",
        server.url,
        "--trust",
        server.paths.ca_certificates,
        "--cert",
        server.paths.device_certificate,
        "--key",
        server.paths.device_key,
        "--label",
        "manual",
        "--max-attempts",
        "1",
        "--key-type",
        "p256",
        "--cn",
        cn,
        "--out-cert",
        tmp_path / "m1.pem",
        "--out-key",
        tmp_path / "m1.key",
        *extra,
    )


def _queued(server: Any, common_name: str) -> list[Any]:
    store = server.open_store()
    return [r for r in store.list_requests() if r.common_name == common_name]


def test_pending_enrollment_is_collected_after_approval(fresh_server: Any, tmp_path: Path) -> None:
    server = fresh_server(manual={"approval": "manual", "retry_after_seconds": 1})
    state = pending_path(tmp_path / "m1.key")

    first = _enroll(server, tmp_path)
    assert first.exit_code != 0
    assert "still pending approval" in first.stderr
    assert f"kept in {state}" in first.stderr
    assert "run this same command again" in first.stderr
    assert not (tmp_path / "m1.key").exists() and not (tmp_path / "m1.pem").exists()
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    kept_key = load_private_key(json.loads(state.read_text())["key_pem"].encode())

    second = _enroll(server, tmp_path)
    assert second.exit_code != 0
    assert "still pending approval" in second.stderr
    assert "sending the pending request kept in" in second.stderr
    queued = _queued(server, "pending.example")
    assert [r.status for r in queued] == ["pending"], "a repeat must not queue a second request"

    approved = _run("server", "approve", server.data_dir, str(queued[0].id))
    assert approved.exit_code == 0, approved.output + approved.stderr

    third = _enroll(server, tmp_path)
    assert third.exit_code == 0, third.stdout + third.stderr
    certificate = load_pem_certificates((tmp_path / "m1.pem").read_bytes())[0]
    key = load_private_key((tmp_path / "m1.key").read_bytes())
    assert public_keys_equal(certificate.public_key(), key.public_key())
    assert public_keys_equal(key.public_key(), kept_key.public_key())
    assert stat.S_IMODE((tmp_path / "m1.key").stat().st_mode) == 0o600
    assert not state.exists(), "the state file goes once the certificate is collected"
    assert [r.status for r in _queued(server, "pending.example")] == ["issued"]


def test_a_pending_request_for_other_names_is_not_replaced(
    fresh_server: Any, tmp_path: Path
) -> None:
    server = fresh_server(manual={"approval": "manual", "retry_after_seconds": 1})
    state = pending_path(tmp_path / "m1.key")
    assert _enroll(server, tmp_path, cn="one.example").exit_code != 0
    before = state.read_bytes()

    other = _enroll(server, tmp_path, cn="two.example")
    assert other.exit_code != 0
    assert "still pending with other options (CN one.example; SANs one.example)" in other.stderr
    assert f"delete {state}" in other.stderr
    assert state.read_bytes() == before
    assert _queued(server, "two.example") == [], "nothing may reach the server"
    assert len(_queued(server, "one.example")) == 1


def test_a_refused_first_request_keeps_no_key(estkit_server: Any, tmp_path: Path) -> None:
    """403 (no device certificate on a label that needs one): nothing waits on the server."""
    state = pending_path(tmp_path / "k.pem")
    result = _run(
        "client",
        "enroll",
        "--server",
        estkit_server.url,
        "--trust",
        estkit_server.paths.ca_certificates,
        "--key-type",
        "p256",
        "--cn",
        "nobody.example",
        "--out-key",
        tmp_path / "k.pem",
    )
    assert result.exit_code != 0
    assert "403" in result.stderr
    assert not state.exists()
    assert not (tmp_path / "k.pem").exists()


def test_a_rejected_request_says_how_to_start_over(fresh_server: Any, tmp_path: Path) -> None:
    server = fresh_server(manual={"approval": "manual", "retry_after_seconds": 1})
    state = pending_path(tmp_path / "m1.key")
    assert _enroll(server, tmp_path).exit_code != 0
    (request,) = _queued(server, "pending.example")
    rejected = _run("server", "reject", server.data_dir, str(request.id), "--note", "unknown")
    assert rejected.exit_code == 0, rejected.output

    again = _enroll(server, tmp_path)
    assert again.exit_code != 0
    assert "rejected by the operator" in again.stderr
    assert f"delete {state} to start over" in again.stderr
    assert state.exists()


def test_a_damaged_state_file_is_refused_clearly(estkit_server: Any, tmp_path: Path) -> None:
    state = pending_path(tmp_path / "m1.key")
    state.write_text("{not json")
    result = _enroll(estkit_server, tmp_path)
    assert result.exit_code != 0
    assert "cannot read the pending-request file" in result.stderr
    assert "Traceback" not in result.output + result.stderr
    state.write_bytes(b" " * (MAX_PENDING_STATE_BYTES + 1))
    result = _enroll(estkit_server, tmp_path)
    assert f"larger than {MAX_PENDING_STATE_BYTES} bytes" in result.stderr


# --- permanent errors fail at once (issue 15, item 5) and keep no key --------------------------


def _enroll_quirky(url: str, trust: Path, tmp_path: Path) -> Result:
    return _run(
        "client", "enroll", "--server", url, "--trust", trust, "--no-pop",
        "--max-attempts", "5", "--max-wait", "0", "--key-type", "p256", "--cn", "x.example",
        "--out-key", tmp_path / "x.key",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("status", "shown"), [(400, "(400)"), (403, "forbidden (403)"), (500, "500")]
)
def test_permanent_http_errors_are_not_retried(
    pki: QuirkyPki, tmp_path: Path, status: int, shown: str
) -> None:
    routes = {
        "/.well-known/est/simpleenroll": Canned(
            status, [("Content-Type", "text/plain")], b"no such thing\n"
        )
    }
    with QuirkyServer(pki.files["server_chain"], pki.files["server_key"], routes) as server:
        result = _enroll_quirky(server.url, pki.files["root"], tmp_path)
        assert server.paths() == ["/.well-known/est/simpleenroll"], "exactly one POST"
    assert result.exit_code != 0
    assert shown in result.stderr and "no such thing" in result.stderr
    assert "attempt " not in result.stderr, "no wait announced: nothing was retried"
    assert not pending_path(tmp_path / "x.key").exists()


def test_busy_server_is_retried_up_to_the_limit(pki: QuirkyPki, tmp_path: Path) -> None:
    """The contrast: 503 is the retryable answer, polled up to --max-attempts."""
    routes = {
        "/.well-known/est/simpleenroll": Canned(
            503, [("Retry-After", "0"), ("Content-Type", "text/plain")], b"busy\n"
        )
    }
    with QuirkyServer(pki.files["server_chain"], pki.files["server_key"], routes) as server:
        result = _enroll_quirky(server.url, pki.files["root"], tmp_path)
        assert server.paths() == ["/.well-known/est/simpleenroll"] * 5
    assert "still unavailable (503) after 5 attempt(s)" in result.stderr
    assert pending_path(tmp_path / "x.key").exists(), "may be queued: the key is kept"


def test_tls_verification_failure_is_not_retried(
    estkit_server: Any, pki: QuirkyPki, tmp_path: Path
) -> None:
    # The quirky server's certificate does not chain to the estkit server's CA.
    with QuirkyServer(pki.files["server_chain"], pki.files["server_key"], {}) as server:
        result = _enroll_quirky(server.url, estkit_server.paths.ca_certificates, tmp_path)
        assert server.paths() == []
    assert result.exit_code != 0
    assert "could not verify" in result.stderr
    assert "attempt " not in result.stderr


def test_connection_refused_is_not_retried(pki: QuirkyPki, tmp_path: Path) -> None:
    server = QuirkyServer(pki.files["server_chain"], pki.files["server_key"], {})
    port = server.port
    server.stop()
    result = _enroll_quirky(f"https://127.0.0.1:{port}", pki.files["root"], tmp_path)
    assert result.exit_code != 0
    assert "cannot connect" in result.stderr
    assert "attempt " not in result.stderr
