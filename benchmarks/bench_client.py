"""Client-side cost of an EST enrollment, and key generation per key type.

Why this shape: the issue's target is "client overhead ≤ 2 ms per enrollment on loopback beyond
the server's own time". The server has no Server-Timing header, so its time is taken as what a
minimal client sees: ``http.client`` on one kept-alive TLS connection posting a CSR body that was
built beforehand and ignoring the answer. estkit's ``EstClient`` does the same enrollment from a
``CsrSpec`` (it builds and signs the CSR, sends it, decodes and checks the certificate), so

    client overhead = EstClient time − minimal-client time

Key generation is excluded from both (keys are made beforehand) and reported on its own. The two
clients alternate in blocks so that drift (CPU frequency, the store growing) hits both alike.

Run: ``python benchmarks/bench_client.py [--enrollments N] [--key-type p256]``. Prints figures;
asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import multiprocessing
import ssl
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from urllib.parse import urlsplit

from estkit.client import ClientCredentials, CsrSpec, EstClient
from estkit.client.flows import build_csr_for
from estkit.client.issued import interpret_enroll
from estkit.client.responses import Reply
from estkit.protocol import KEY_TYPES, encode_csr_body, generate_private_key
from estkit.server.datadir import init_data_dir
from estkit.server.runner import start_server_thread

TARGET_OVERHEAD_MS = 2.0
# RSA-4096 generation takes ~0.5 s or more; fewer rounds for the slow types keep the run short.
KEYGEN_ROUNDS = {"rsa2048": 10, "rsa3072": 5, "rsa4096": 3, "p256": 200, "p384": 200, "p521": 100}
BLOCK = 20  # enrollments per block before switching client
SERVER_START_TIMEOUT_SECONDS = 30


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    mean, median = statistics.fmean(samples), statistics.median(samples)
    return (
        f"mean {mean * 1e3:7.3f} ms  median {median * 1e3:7.3f} ms  p95 {p95 * 1e3:7.3f} ms"
        f"  (n={len(samples)})"
    )


def bench_keygen() -> None:
    print("key generation (per key, excluded from the enrollment figures)")
    for key_type in KEY_TYPES:
        samples = []
        for _ in range(KEYGEN_ROUNDS.get(key_type, 10)):
            start = time.perf_counter()
            generate_private_key(key_type)
            samples.append(time.perf_counter() - start)
        print(f"  {key_type:8s} {_ms(samples)}")


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _serve(data_dir: Path, port_out: Connection, stop: EventType) -> None:
    """Child process: the real server, so its work never competes with the client for the GIL."""
    logging.disable(logging.CRITICAL)
    with start_server_thread(data_dir) as server:
        # The URL's host, not the bind address: the certificate names localhost, not 127.0.0.1.
        port_out.send((urlsplit(server.url).hostname, server.port))
        stop.wait()


@contextmanager
def _server_process(data_dir: Path) -> Iterator[tuple[str, int]]:
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    stop = context.Event()
    process = context.Process(target=_serve, args=(data_dir, send, stop), daemon=True)
    process.start()
    try:
        if not receive.poll(SERVER_START_TIMEOUT_SECONDS):
            raise RuntimeError("the EST server did not start")
        yield receive.recv()
    finally:
        stop.set()
        process.join(timeout=10)
        if process.is_alive():
            process.kill()


def bench_enrollment(enrollments: int, key_type: str) -> None:
    with tempfile.TemporaryDirectory(prefix="estkit-bench-") as directory:
        paths = init_data_dir(Path(directory))
        with _server_process(paths.data_dir) as (host, port):
            url = f"https://{host}:{port}"
            credentials = ClientCredentials.from_files(paths.device_certificate, paths.device_key)
            # Even blocks: EstClient; odd blocks: minimal client; the first two are warm-up.
            blocks = 2 * (-(-enrollments // BLOCK)) + 2
            keys = [generate_private_key(key_type) for _ in range(blocks * BLOCK)]
            specs = [CsrSpec(key=key, common_name="bench.example") for key in keys]
            # The minimal client's CSR bodies are built beforehand: only the exchange is timed.
            raw_bodies = [
                encode_csr_body(build_csr_for(spec)) if (i // BLOCK) % 2 else b""
                for i, spec in enumerate(specs)
            ]

            context = ssl.create_default_context(cafile=str(paths.ca_certificates))
            context.load_cert_chain(str(paths.device_certificate), str(paths.device_key))
            raw = http.client.HTTPSConnection(host, port, context=context)
            headers = {"Content-Type": "application/pkcs10"}

            def raw_enroll(body: bytes) -> None:
                raw.request("POST", "/.well-known/est/simpleenroll", body, headers)
                response = raw.getresponse()
                response.read()
                assert response.status == 200, response.status

            client = EstClient(url, trust=paths.ca_certificates, credentials=credentials)
            ours: list[float] = []
            minimal: list[float] = []
            with client:
                for block in range(blocks):
                    for index in range(block * BLOCK, (block + 1) * BLOCK):
                        if block % 2 == 0:
                            spec = specs[index]
                            elapsed = _timed(lambda s=spec: client.simpleenroll(s, pop=False))
                            samples = ours
                        else:
                            body = raw_bodies[index]
                            elapsed = _timed(lambda b=body: raw_enroll(b))
                            samples = minimal
                        if block >= 2:
                            samples.append(elapsed)
                # One reply kept for the parse-only figure below.
                reply = _capture_reply(client, specs[0])
            raw.close()

            print(f"\nenrollment on loopback, {key_type} keys, TLS client certificate, keep-alive")
            print(f"  EstClient (build CSR + POST + decode + check): {_ms(ours)}")
            print(f"  minimal client (POST prebuilt CSR, no parse):  {_ms(minimal)}")
            overhead = statistics.median(ours) - statistics.median(minimal)
            verdict = "within" if overhead <= TARGET_OVERHEAD_MS / 1e3 else "OVER"
            print(
                f"  client overhead (median difference): {overhead * 1e3:.3f} ms "
                f"({verdict} the {TARGET_OVERHEAD_MS} ms target)"
            )
            _bench_parts(specs[0], reply)


def _capture_reply(client: EstClient, spec: CsrSpec) -> Reply:
    """Run one enrollment and keep its raw reply, by wrapping the client's sender."""
    captured: list[Reply] = []
    original = client._send

    def keep(http: object, request: object) -> Reply:
        reply = original(http, request)  # type: ignore[arg-type]
        captured.append(reply)
        return reply

    client._send = keep  # type: ignore[method-assign]
    try:
        client.simpleenroll(CsrSpec(key=spec.key, common_name=spec.common_name), pop=False)
    finally:
        client._send = original  # type: ignore[method-assign]
    return captured[-1]


def _bench_parts(spec: CsrSpec, reply: Reply, rounds: int = 300) -> None:
    build = [_timed(lambda: encode_csr_body(build_csr_for(spec))) for _ in range(rounds)]
    now = datetime.now(UTC)
    parse = [
        _timed(
            lambda: interpret_enroll(
                reply,
                public_key=spec.key.public_key(),
                private_key=spec.key,
                requested_common_name=spec.common_name,
                requested_dns_names=(),
                now=now,
            )
        )
        for _ in range(rounds)
    ]
    print("  of which, measured alone:")
    print(f"    CSR build + sign + base64:        {_ms(build)}")
    print(f"    response decode + check:          {_ms(parse)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--enrollments", type=int, default=200, help="timed enrollments per client")
    parser.add_argument("--key-type", default="p256", choices=KEY_TYPES)
    parser.add_argument("--skip-keygen", action="store_true")
    args = parser.parse_args()
    if not args.skip_keygen:
        bench_keygen()
    bench_enrollment(args.enrollments, args.key_type)


if __name__ == "__main__":
    main()
