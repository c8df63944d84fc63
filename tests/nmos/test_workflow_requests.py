"""How much network and key work one NMOS workflow does (issue 23), against a real server.

Not timed: these tests pin down what the speed depends on, so that a change that brings back a
connection per step, a ``/csrattrs`` per certificate or a second load (and RSA check) of a key
fails here instead of only in ``benchmarks/bench_cli_start.py``.

Connections are counted server-side by a TCP relay in front of the real estkit server: each one
the node opens is one TLS handshake with the server (the relay passes the TLS bytes through
unchanged, so the node verifies the server's own certificate). Requests are counted where they
leave the client, at httpx's transport.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import estkit.fileio
import estkit.nmos.store
from estkit.fileio import CredentialMismatchError, LoadedPairs
from estkit.nmos.config import ServerSettings
from estkit.nmos.node import NmosNode
from estkit.nmos.workflow import run_workflow
from estkit.protocol import certificates_to_pem, private_key_to_pem

from .conftest import EventLog, config_for_server

EST = "/.well-known/est"
# How long the relay waits for the node to close its connections after the workflow returned.
CLOSE_WAIT_SECONDS = 5.0


class Relay:
    """A TCP relay on 127.0.0.1 to ``port``: counts connections and sees when each one ends."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.accepted = 0
        self.closed_by_client = 0
        self._lock = threading.Lock()
        self._stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            with self._lock:
                self.accepted += 1
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            with contextlib.suppress(OSError):
                while data := source.recv(65536):
                    sink.sendall(data)
        finally:
            if from_client:
                with self._lock:
                    self.closed_by_client += 1
            for end in (sink, source):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def wait_all_closed(self) -> bool:
        deadline = time.monotonic() + CLOSE_WAIT_SECONDS
        while time.monotonic() < deadline:
            with self._lock:
                if self.closed_by_client == self.accepted:
                    return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        self._stopping = True
        self._listener.close()


@pytest.fixture
def relay(estkit_server: Any) -> Iterator[Relay]:
    started = Relay(estkit_server.port)
    try:
        yield started
    finally:
        started.stop()


class Sent(list[str]):
    """``METHOD path`` of every request that leaves an httpx client, and by which thread."""

    def __init__(self) -> None:
        super().__init__()
        self.by_thread: dict[str, list[str]] = {}


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    """Every request that leaves an httpx client in this test."""
    requests = Sent()
    original = httpx.HTTPTransport.handle_request
    lock = threading.Lock()

    def counting(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        with lock:
            requests.append(f"{request.method} {request.url.path}")
            thread = threading.current_thread().name
            requests.by_thread.setdefault(thread, []).append(requests[-1])
        return original(self, request)

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", counting)
    return requests


def _node(estkit_server: Any, relay: Relay, out: Path, events: EventLog) -> NmosNode:
    config = config_for_server(estkit_server, out).with_changes(
        server=ServerSettings(host="localhost", port=relay.port)
    )
    return NmosNode(config, on_event=events)


def test_workflow_uses_one_connection_per_credential_and_lane_and_one_csrattrs_each(
    estkit_server: Any, relay: Relay, sent: Sent, tmp_path: Path, events: EventLog
) -> None:
    result = run_workflow(_node(estkit_server, relay, tmp_path / "node", events))
    assert [c.slot for c in result.certificates] == ["rsa", "ecdsa"]
    assert all(c.renewed for c in result.certificates)

    # 1 explicit-trust /cacerts (C4: never shared with verified exchanges); then each
    # certificate in a lane (thread) of its own: 1 verified connection with the manufacturer
    # certificate for its enrollment, 1 presenting the new certificate for its renewal.
    # Before issue 23: 9 connections, 13 requests.
    assert relay.accepted == 5, events.text()
    assert sent.by_thread.pop(threading.main_thread().name) == [f"GET {EST}/cacerts"]
    lanes = sent.by_thread
    # Each enrollment: one /csrattrs, which both says whether the server wants PoP linking and
    # opens the connection whose TLS binding the CSR carries, then the CSR on it.
    lane = [
        f"GET {EST}/csrattrs",
        f"POST {EST}/simpleenroll",
        f"GET {EST}/csrattrs",
        f"POST {EST}/simplereenroll",
    ]
    assert list(lanes.values()) == [lane, lane]
    assert len(sent) == 9
    # The session closed every connection when the workflow returned (none left open).
    assert relay.wait_all_closed(), (relay.accepted, relay.closed_by_client)


def test_steps_outside_a_session_still_use_their_own_connections(
    estkit_server: Any, relay: Relay, sent: Sent, tmp_path: Path, events: EventLog
) -> None:
    # The agent calls the node step by step, without a session: nothing is kept open between
    # steps (a long-running agent must not hold connections for months).
    node = _node(estkit_server, relay, tmp_path / "node", events)
    node.fetch_root_ca()
    node.enroll("rsa")
    assert relay.wait_all_closed()
    node.enroll("ecdsa")
    assert relay.accepted == 3
    assert sent.count(f"GET {EST}/csrattrs") == 2  # each enrollment asks for itself, once
    assert relay.wait_all_closed()


def test_workflow_loads_the_manufacturer_pair_once_and_never_reads_back_its_own_keys(
    estkit_server: Any, relay: Relay, tmp_path: Path, events: EventLog, monkeypatch: Any
) -> None:
    loaded: list[str] = []
    original = estkit.fileio.load_credential_pair

    def counting(cert_path: Any, key_path: Any) -> Any:
        loaded.append(Path(key_path).name)
        return original(cert_path, key_path)

    monkeypatch.setattr(estkit.fileio, "load_credential_pair", counting)
    monkeypatch.setattr(estkit.nmos.store, "load_credential_pair", counting)
    result = run_workflow(_node(estkit_server, relay, tmp_path / "node", events))
    assert all(c.renewed for c in result.certificates)
    # The manufacturer pair once (not once per enrollment); the renewals use the pairs the node
    # has just written, from memory (an RSA-2048 key's load-time check costs 50-80 ms).
    assert loaded == [Path(estkit_server.paths.device_key).name]


def _self_signed(key: Any, name: str) -> Any:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def _write_pair(directory: Path, name: str, key: Any) -> tuple[Path, Path]:
    cert = _self_signed(key, name)
    cert_path, key_path = directory / "pair.pem", directory / "pair.key"
    estkit.fileio.replace_credential_pair(
        cert_path, certificates_to_pem([cert]), key_path, private_key_to_pem(key)
    )
    return cert_path, key_path


def test_loaded_pairs_reload_whenever_a_file_changes(tmp_path: Path) -> None:
    pairs = LoadedPairs()
    first_key = rsa.generate_private_key(65537, 2048)
    cert_path, key_path = _write_pair(tmp_path, "first", first_key)
    chain, key = pairs.load(cert_path, key_path)
    assert pairs.lookup(cert_path, key_path) is not None  # unchanged files: known

    # Replaced atomically by another pair: the new one is loaded, never the remembered one.
    second_key = ec.generate_private_key(ec.SECP256R1())
    _write_pair(tmp_path, "second", second_key)
    assert pairs.lookup(cert_path, key_path) is None
    chain, key = pairs.load(cert_path, key_path)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert chain[0].subject.rfc4514_string() == "CN=second"

    # A key swapped under a remembered pair is checked in full again and refused.
    key_path.write_bytes(private_key_to_pem(first_key))
    os.utime(key_path, ns=(1, 1))
    with pytest.raises(CredentialMismatchError):
        pairs.load(cert_path, key_path)

    # A pair the process wrote is known without reading it back.
    third_key = ec.generate_private_key(ec.SECP256R1())
    cert_path, key_path = _write_pair(tmp_path, "third", third_key)
    pairs.remember(cert_path, key_path, [], third_key)
    known = pairs.lookup(cert_path, key_path)
    assert known is not None and known[1] is third_key
    key_path.unlink()
    assert pairs.lookup(cert_path, key_path) is None


def test_workflow_makes_one_new_key_per_certificate_ahead_and_none_twice(
    estkit_server: Any, relay: Relay, tmp_path: Path, events: EventLog, monkeypatch: Any
) -> None:
    """The keys are made ahead in the prefetch thread (issue 23), exactly as many as the
    prototype makes: one RSA-2048 and one P-256 per enrollment, one of each per renewal. None is
    made again on the spot, none is used twice, and each installed certificate holds its key."""
    import estkit.nmos.node
    import estkit.nmos.prefetch
    from estkit.protocol.keys import generate_private_key

    made: list[tuple[str, str]] = []

    def counting(where: str) -> Any:
        def generate(key_type: str) -> Any:
            made.append((where, key_type))
            return generate_private_key(key_type)

        return generate

    monkeypatch.setattr(estkit.nmos.prefetch, "generate_private_key", counting("ahead"))
    monkeypatch.setattr(estkit.nmos.node, "generate_private_key", counting("on the spot"))
    node = _node(estkit_server, relay, tmp_path / "node", events)
    enrolled: list[Any] = []
    original_install = node._install

    def install(slot: str, result: Any, *args: Any, **kwargs: Any) -> Any:
        enrolled.append(result.certificate.public_key())
        return original_install(slot, result, *args, **kwargs)

    monkeypatch.setattr(node, "_install", install)
    result = run_workflow(node)
    # The P-256 keys first (microseconds each): the ECDSA lane never waits behind an RSA key.
    assert made == [
        ("ahead", "p256"),
        ("ahead", "p256"),
        ("ahead", "rsa2048"),
        ("ahead", "rsa2048"),
    ]
    public = {key.public_numbers() for key in enrolled}
    assert len(public) == 4  # four certificates, four different keys
    for outcome in result.certificates:
        installed = node.store.load_credential(outcome.slot)
        assert installed is not None  # the key on disk belongs to its certificate
    assert node.new_key is estkit.nmos.node.generate_private_key  # restored after the run


def _pending_store(tmp_path: Path) -> tuple[Any, Any, bytes]:
    from estkit.nmos.store import CredentialStore

    store = CredentialStore(tmp_path / "node")
    key = ec.generate_private_key(ec.SECP256R1())
    store.save_pending_key("ecdsa", key)
    return store, key, private_key_to_pem(key)


def test_the_pending_key_file_becomes_the_key_file_when_it_holds_that_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, key, key_pem = _pending_store(tmp_path)
    pending = store.pending_key_path("ecdsa")
    inode = pending.stat().st_ino
    fsyncs: list[int] = []
    monkeypatch.setattr(estkit.fileio.os, "fsync", fsyncs.append)
    store.install_credential("ecdsa", [_self_signed(key, "node1.example.com")], key)
    key_path = store.key_path("ecdsa")
    assert key_path.stat().st_ino == inode  # renamed, not written again
    assert key_path.read_bytes() == key_pem
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert not pending.exists()
    assert len(fsyncs) == 2  # the certificate, and the directory; the key was synced before
    assert store.load_credential("ecdsa") is not None


@pytest.mark.parametrize("tamper", ["other key", "world-readable", "symlink"])
def test_a_pending_file_that_is_not_exactly_the_key_is_never_moved_into_place(
    tmp_path: Path, tamper: str
) -> None:
    """Another key in the file, a mode other than 0600, or a link: the key is written anew,
    0600, from the key object."""
    store, key, key_pem = _pending_store(tmp_path)
    pending = store.pending_key_path("ecdsa")
    if tamper == "other key":
        pending.write_bytes(private_key_to_pem(ec.generate_private_key(ec.SECP256R1())))
    elif tamper == "world-readable":
        pending.chmod(0o644)
    else:
        target = tmp_path / "elsewhere.pem"
        target.write_bytes(key_pem)
        target.chmod(0o600)
        pending.unlink()
        pending.symlink_to(target)
    inode = pending.lstat().st_ino
    store.install_credential("ecdsa", [_self_signed(key, "node1.example.com")], key)
    key_path = store.key_path("ecdsa")
    assert not key_path.is_symlink()
    assert key_path.lstat().st_ino != inode
    assert key_path.read_bytes() == key_pem
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
