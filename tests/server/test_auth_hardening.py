"""HTTP authentication hardening (issue 24, item 7), against real servers over real TLS.

* Digest nonces come from a key kept in the store and every (nonce, nc) use is recorded there: a
  request replayed to *another server process* on the same store is refused, and so is the same
  nc replayed to the same server.
* An unknown user name costs what a wrong password costs: the same scrypt call (Basic) and the
  same Digest arithmetic, counted structurally (not by timing).
* Failures back off per source address (and per user for addresses that failed), with 429 and
  Retry-After, while the real user from a clean address still gets in.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from estkit.protocol.csr import build_csr, encode_csr_body
from estkit.protocol.keys import generate_private_key
from estkit.server import httpauth
from estkit.server.config import add_label, add_user
from estkit.server.datadir import init_data_dir
from estkit.server.httpauth import SOURCE_FAILURES_BEFORE_BACKOFF, USER_FAILURES_BEFORE_BACKOFF
from estkit.server.runner import start_server_thread

USER, PASSWORD = "alice", "wonderland"
LABEL = "http"
SERVE_TIMEOUT_SECONDS = 60


def _csr_body(name: str) -> bytes:
    key = generate_private_key("p256")
    return encode_csr_body(build_csr(key, common_name=name, dns_names=[name]))


def _client(cafile: Path, source: str | None = None) -> httpx.Client:
    transport = httpx.HTTPTransport(
        verify=ssl.create_default_context(cafile=str(cafile)), local_address=source
    )
    return httpx.Client(transport=transport, timeout=30)


def _digest_header(challenge: str, uri: str, *, nc: int = 1, user: str = USER) -> str:
    nonce = re.search(r'nonce="([^"]+)"', challenge)
    assert nonce, challenge
    realm = re.search(r'realm="([^"]+)"', challenge).group(1)  # type: ignore[union-attr]
    cnonce = secrets.token_hex(8)
    nc_text = f"{nc:08x}"

    def h(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    ha1 = h(f"{user}:{realm}:{PASSWORD}")
    response = h(f"{ha1}:{nonce.group(1)}:{nc_text}:{cnonce}:auth:{h(f'POST:{uri}')}")
    return (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce.group(1)}", uri="{uri}", '
        f'algorithm=SHA-256, qop=auth, nc={nc_text}, cnonce="{cnonce}", response="{response}"'
    )


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    paths = init_data_dir(tmp_path / "data", key_type="p256")
    add_label(paths.config, LABEL, auth_mode="rfc7030")
    add_user(paths.config, USER, PASSWORD)
    return paths.data_dir


@contextmanager
def _serve_process(data_dir: Path) -> Iterator[str]:
    """`estkit server serve DIR --port 0` as its own process; yields its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "estkit.cli.main", "server", "serve", str(data_dir),
         "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="250"),
    )  # fmt: skip
    assert process.stdout is not None
    url = None
    for line in process.stdout:
        found = re.search(r"listening on (https://\S+)", line)
        if found:
            url = found.group(1)
        if "Press Ctrl+C" in line:
            break
    try:
        assert url, process.stderr.read() if process.stderr else "no banner"
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=SERVE_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


def test_a_digest_request_replayed_to_another_server_process_is_refused(data_dir: Path) -> None:
    cafile = data_dir / "ca" / "cacerts.pem"
    path = f"/.well-known/est/{LABEL}/simpleenroll"
    body = _csr_body("replay.example.com")
    headers = {"Content-Type": "application/pkcs10"}
    first = start_server_thread(data_dir)
    try:
        with _serve_process(data_dir) as second_url, _client(cafile) as client:
            challenge = client.post(first.url + path, content=body, headers=headers)
            assert challenge.status_code == 401
            digest = challenge.headers.get_list("www-authenticate")[0]
            authorization = _digest_header(digest, path)
            accepted = client.post(
                first.url + path,
                content=body,
                headers={**headers, "Authorization": authorization},
            )
            assert accepted.status_code == 200, accepted.text
            # The captured request, replayed byte for byte to the other process.
            replayed = client.post(
                second_url + path,
                content=body,
                headers={**headers, "Authorization": authorization},
            )
            assert replayed.status_code == 401, replayed.text
            assert "nonce count 00000001 reused" in replayed.text
            # Not because the other process does not know the nonce: the next nc works there.
            fresh = client.post(
                second_url + path,
                content=_csr_body("next.example.com"),
                headers={**headers, "Authorization": _digest_header(digest, path, nc=2)},
            )
            assert fresh.status_code == 200, fresh.text
    finally:
        first.stop()


def test_the_same_nonce_count_replayed_to_the_same_server_is_refused(data_dir: Path) -> None:
    cafile = data_dir / "ca" / "cacerts.pem"
    path = f"/.well-known/est/{LABEL}/simpleenroll"
    body, headers = _csr_body("same-nc.example.com"), {"Content-Type": "application/pkcs10"}
    server = start_server_thread(data_dir)
    try:
        with _client(cafile) as client:
            challenge = client.post(server.url + path, content=body, headers=headers)
            authorization = _digest_header(challenge.headers.get_list("www-authenticate")[0], path)
            sent = {**headers, "Authorization": authorization}
            assert client.post(server.url + path, content=body, headers=sent).status_code == 200
            again = client.post(server.url + path, content=body, headers=sent)
        assert again.status_code == 401
        assert "reused" in again.text and "replayed request" in again.text
    finally:
        server.stop()


def test_unknown_user_and_wrong_password_take_the_same_hash_path(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scrypt_calls: list[str] = []
    digest_hashes: list[str] = []
    real_verify, real_hash = httpauth.verify_basic_password, httpauth._hash

    def counting_verify(stored: str, password: str) -> bool:
        scrypt_calls.append(password)
        return real_verify(stored, password)

    def counting_hash(algorithm: str, data: str) -> str:
        digest_hashes.append(data)
        return real_hash(algorithm, data)

    monkeypatch.setattr(httpauth, "verify_basic_password", counting_verify)
    monkeypatch.setattr(httpauth, "_hash", counting_hash)
    cafile = data_dir / "ca" / "cacerts.pem"
    path = f"/.well-known/est/{LABEL}/simpleenroll"
    url_headers = {"Content-Type": "application/pkcs10"}
    server = start_server_thread(data_dir)
    try:
        with _client(cafile) as client:
            answers = {}
            counts = {}
            for case, authorization in (
                ("unknown user", _basic("mallory", "guess-1")),
                ("wrong password", _basic(USER, "guess-2")),
            ):
                before = len(scrypt_calls)
                answers[case] = client.post(
                    server.url + path,
                    content=_csr_body("t.example.com"),
                    headers={**url_headers, "Authorization": authorization},
                )
                counts[case] = len(scrypt_calls) - before
            assert counts == {"unknown user": 1, "wrong password": 1}
            for answer in answers.values():
                assert answer.status_code == 401
                assert "wrong user name or password" in answer.text

            challenge = client.post(server.url + path, content=b"", headers=url_headers)
            digest = challenge.headers.get_list("www-authenticate")[0]
            digest_counts = {}
            for case, user in (("unknown user", "mallory"), ("wrong password", USER)):
                before = len(digest_hashes)
                header = _digest_header(digest, path, user=user)
                if user == USER:  # a wrong password: spoil the response
                    header = re.sub(r'response="[0-9a-f]+"', 'response="' + "0" * 64 + '"', header)
                answer = client.post(
                    server.url + path,
                    content=b"",
                    headers={**url_headers, "Authorization": header},
                )
                assert answer.status_code == 401
                assert "wrong user name or password" in answer.text
                digest_counts[case] = len(digest_hashes) - before
            assert digest_counts["unknown user"] == digest_counts["wrong password"] == 2
    finally:
        server.stop()


def test_failures_back_off_per_source_but_the_user_from_elsewhere_gets_in(
    data_dir: Path,
) -> None:
    cafile = data_dir / "ca" / "cacerts.pem"
    path = f"/.well-known/est/{LABEL}/simpleenroll"
    headers = {"Content-Type": "application/pkcs10"}
    server = start_server_thread(data_dir)
    try:
        with _client(cafile, "127.0.0.1") as attacker:
            for attempt in range(SOURCE_FAILURES_BEFORE_BACKOFF):
                answer = attacker.post(
                    server.url + path,
                    content=_csr_body("a.example.com"),
                    headers={**headers, "Authorization": _basic(USER, f"guess-{attempt}")},
                )
                assert answer.status_code == 401, (attempt, answer.text)
            # Even the right password from this address now waits.
            blocked = attacker.post(
                server.url + path,
                content=_csr_body("a.example.com"),
                headers={**headers, "Authorization": _basic(USER, PASSWORD)},
            )
        assert blocked.status_code == 429, blocked.text
        assert "too many failed HTTP authentication attempts from 127.0.0.1" in blocked.text
        assert int(blocked.headers["Retry-After"]) >= 1
        with _client(cafile, "127.0.0.2") as user:
            allowed = user.post(
                server.url + path,
                content=_csr_body("legit.example.com"),
                headers={**headers, "Authorization": _basic(USER, PASSWORD)},
            )
        assert allowed.status_code == 200, allowed.text
    finally:
        server.stop()


def test_a_user_guessed_at_from_many_addresses_stays_open_to_clean_ones(data_dir: Path) -> None:
    cafile = data_dir / "ca" / "cacerts.pem"
    path = f"/.well-known/est/{LABEL}/simpleenroll"
    headers = {"Content-Type": "application/pkcs10"}
    server = start_server_thread(data_dir)
    sources = [f"127.0.1.{n}" for n in range(1, USER_FAILURES_BEFORE_BACKOFF + 1)]
    try:
        for source in sources:  # one failure each: no single address reaches its own limit
            with _client(cafile, source) as attacker:
                answer = attacker.post(
                    server.url + path,
                    content=_csr_body("a.example.com"),
                    headers={**headers, "Authorization": _basic(USER, "guess")},
                )
                assert answer.status_code == 401
        with _client(cafile, sources[0]) as attacker:
            locked = attacker.post(
                server.url + path,
                content=_csr_body("a.example.com"),
                headers={**headers, "Authorization": _basic(USER, PASSWORD)},
            )
        assert locked.status_code == 429, locked.text
        assert f"attempts for user {USER!r} from addresses that failed" in locked.text
        with _client(cafile, "127.0.2.1") as user:
            allowed = user.post(
                server.url + path,
                content=_csr_body("legit.example.com"),
                headers={**headers, "Authorization": _basic(USER, PASSWORD)},
            )
        assert allowed.status_code == 200, allowed.text
    finally:
        server.stop()


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_tables_are_bounded_and_the_wait_runs_out() -> None:
    clock = _Clock()
    backoff = httpauth.FailureBackoff(clock=clock)
    # A guesser cycling through addresses and names cannot grow the tables past their bound.
    for n in range(httpauth.MAX_BACKOFF_ENTRIES + 500):
        backoff.failed(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", f"user{n}")
    assert len(backoff._sources) == httpauth.MAX_BACKOFF_ENTRIES
    assert len(backoff._users) == httpauth.MAX_BACKOFF_ENTRIES
    for _ in range(SOURCE_FAILURES_BEFORE_BACKOFF + 2):  # two past the limit: 4 s
        backoff.failed("192.0.2.1", "alice")
    wait, what = backoff.retry_after("192.0.2.1", "alice")
    assert (wait, what) == (5, "from 192.0.2.1")
    clock.now += 4.5
    assert backoff.retry_after("192.0.2.1", "alice") is None
    assert backoff.retry_after("192.0.2.2", "alice") is None  # a clean address
