"""Enrollments per second through a registration authority vs straight to its upstream CA.

Why: an RA (issue 21) adds a second TLS hop per request (RA → upstream, with the RA
certificate) plus its own checks and records. This measures what that costs, in the same run
and on the same machine, so the two figures are comparable: two real estkit servers on loopback
(an upstream CA and an RA in front of it, made as `estkit server ra-cert` / `server init
--upstream` would), and devices enrolling with their manufacturer certificate, ``--clients``
at a time, ``--requests`` each, first straight at the upstream, then through the RA, then
straight again (the two straight rounds bracket the RA round, so drift shows).

Keys and CSRs are made before the clock starts; each request is a new TLS connection (what a
device does). The figures depend heavily on the machine: on a shared, loaded machine treat them
as a ratio, not as capacity.

Run: ``python benchmarks/bench_ra.py [--clients N] [--requests N]``. Prints figures; asserts
nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from estkit.client import ClientCredentials, CsrSpec, EstClient, RetryPolicy
from estkit.protocol.keys import generate_private_key
from estkit.server.config import add_label
from estkit.server.datadir import DEMO_DEVICE_SERIAL, init_data_dir
from estkit.server.ra import init_ra_data_dir, issue_ra_certificate
from estkit.server.runner import start_server_thread

DEFAULT_CLIENTS = 4
DEFAULT_REQUESTS = 10
# Both servers enroll under this label: no name binding to the demo device certificate, so
# every request may ask for its own name.
LABEL = "bench"


def _round(
    url: str, trust: Path, creds: ClientCredentials, clients: int, requests: int
) -> tuple[float, list[float]]:
    specs = [
        [
            CsrSpec(
                key=generate_private_key("p256"),
                common_name=f"dev-{c}-{r}.example.com",
                dns_names=(f"dev-{c}-{r}.example.com",),
                serial_number=DEMO_DEVICE_SERIAL,
            )
            for r in range(requests)
        ]
        for c in range(clients)
    ]
    latencies: list[float] = []

    def worker(mine: list[CsrSpec]) -> None:
        for spec in mine:
            with EstClient(
                url, label=LABEL, trust=[trust], credentials=creds,
                retry=RetryPolicy(max_attempts=1),
            ) as client:  # fmt: skip
                started = time.perf_counter()
                client.simpleenroll(spec, pop=False)
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, specs))
    return clients * requests / (time.perf_counter() - started), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS)
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        up_paths = init_data_dir(base / "up", key_type="p256")
        add_label(up_paths.config, LABEL, bind_names_to_client_certificate=False)
        upstream = start_server_thread(up_paths.data_dir)
        try:
            cert, key = base / "ra.pem", base / "ra.key"
            issue_ra_certificate(up_paths.data_dir, "bench-ra", cert, key)
            ra_paths = init_ra_data_dir(
                base / "ra",
                upstream_url=upstream.url,
                upstream_trust=up_paths.root_ca,
                ra_certificate=cert,
                ra_key=key,
                upstream_label=LABEL,
            )
            add_label(ra_paths.config, LABEL, bind_names_to_client_certificate=False)
            ra = start_server_thread(ra_paths.data_dir)
            try:
                up_creds = ClientCredentials.from_files(
                    up_paths.device_certificate, up_paths.device_key
                )
                ra_creds = ClientCredentials.from_files(
                    ra_paths.device_certificate, ra_paths.device_key
                )
                rounds = [
                    ("direct", upstream.url, up_creds),
                    ("via RA", ra.url, ra_creds),
                    ("direct", upstream.url, up_creds),
                ]
                print(
                    f"{args.clients} clients x {args.requests} enrollments each, new TLS "
                    f"connection per request, P-256; load average {os.getloadavg()[0]:.2f} "
                    f"on {os.cpu_count()} CPUs"
                )
                results = {}
                for name, url, creds in rounds:
                    rate, latencies = _round(
                        url, up_paths.root_ca, creds, args.clients, args.requests
                    )
                    results.setdefault(name, []).append(rate)
                    print(
                        f"  {name:7s} {rate:7.1f} enrollments/s, median "
                        f"{statistics.median(latencies) * 1000:6.1f} ms, max "
                        f"{max(latencies) * 1000:6.1f} ms"
                    )
                direct = statistics.mean(results["direct"])
                print(f"  via RA / direct = {results['via RA'][0] / direct:.2f}")
            finally:
                ra.stop()
        finally:
            upstream.stop()


if __name__ == "__main__":
    main()
