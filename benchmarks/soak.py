"""Fleet soak: N simulated NMOS nodes (default 10,000) enroll and renew against estkit servers.

Each node, as an asyncio task with its own TLS identities (see ``soak_fleet.py``):
``GET /cacerts``, ``simpleenroll`` of an RSA-2048 and of a P-256 CSR authenticated with its own
factory certificate (issued per node from the data directory's demo manufacturer CA), then
``simplereenroll`` of each, authenticated with the certificate just issued. Nodes run
``--concurrency`` at a time.

For every configuration (SQLite or PostgreSQL store; one or two `estkit server serve` processes
on the same data directory and database, nodes spread round-robin) it prints throughput, p50/p99
latency per operation, the servers' RSS sampled over the run from /proc/PID/status (it should stay
flat after warm-up), and checks that the store holds every certificate a node received.

    python benchmarks/soak.py                                   # 10,000 nodes, all 4 configs
    python benchmarks/soak.py --nodes 2000 --max-seconds 300    # bounded run
    python benchmarks/soak.py --stores sqlite --instances 1
    python benchmarks/soak.py --pg-url postgresql://user@host/postgres   # existing PostgreSQL

Without ``--pg-url`` a throwaway PostgreSQL cluster is started on 127.0.0.1 (Debian's
``postgresql``, as the tests do). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from soak_fleet import OPERATIONS, Fleet, NodeMaterial, Stats, percentile, prepare_fleet  # noqa: E402
from soak_server import RssSampler, running_servers, use_store  # noqa: E402

from estkit.ca.store import open_store  # noqa: E402
from estkit.server.datadir import init_data_dir  # noqa: E402

DEFAULT_NODES = 10_000
DEFAULT_CONCURRENCY = 64
DEFAULT_MAX_SECONDS = 3600.0
DEFAULT_RSA_POOL = 256
DEFAULT_RSS_INTERVAL_SECONDS = 1.0
# The first part of a run is warm-up (imports, caches, connection pools, allocator arenas): RSS
# is judged on what follows.
WARMUP_FRACTION = 0.2
RSS_POINTS_SHOWN = 10


@dataclass
class RunResult:
    store: str
    instances: int
    stats: Stats
    rss: list[list[tuple[float, float]]]
    recorded: int
    delivered: int

    @property
    def seconds(self) -> float:
        return self.stats.finished - self.stats.started


# ------------------------------------------------------------------------------------------------
# databases


@contextlib.contextmanager
def _postgres(pg_url: str | None) -> Iterator[str]:
    """Yield an admin URL on which fresh databases can be created."""
    if pg_url:
        yield pg_url
        return
    sys.path.insert(0, str(REPO))
    try:
        from tests.ca.pg_fixture import running_postgres
    except ImportError as exc:
        raise SystemExit(
            f"cannot start a throwaway PostgreSQL ({exc}); install the test extras "
            "(pip install -e '.[test]') or pass --pg-url"
        ) from None
    with running_postgres() as cluster:
        yield cluster.url


def _create_pg_database(admin_url: str) -> str:
    import psycopg

    name = f"estkit_soak_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


# ------------------------------------------------------------------------------------------------
# one configuration


def run_configuration(
    *,
    store: str,
    instances: int,
    database_url: str,
    data_dir: Path,
    cafile: Path,
    nodes: list[NodeMaterial],
    work_dir: Path,
    args: argparse.Namespace,
) -> RunResult:
    use_store(data_dir, database_url)
    open_store(database_url).close()  # create the schema before the servers race to
    log_dir = work_dir / f"logs-{store}-{instances}"
    log_dir.mkdir(parents=True, exist_ok=True)
    with running_servers(data_dir, instances, log_dir, args.log_level) as servers:
        (work_dir / "tls").mkdir(exist_ok=True, mode=0o700)
        fleet = Fleet([s.url for s in servers], cafile, work_dir / "tls")
        with RssSampler([s.pid for s in servers], args.rss_interval) as sampler:
            stats = asyncio.run(fleet.run(nodes, args.concurrency, args.max_seconds))
        rss = [sampler.series_mib(index) for index in range(len(servers))]
    delivered = sum(len(stats.latencies[op]) for op in OPERATIONS if op != "cacerts")
    with open_store(database_url) as opened:
        recorded = len(opened.list_issued())
    return RunResult(store, instances, stats, rss, recorded, delivered)


# ------------------------------------------------------------------------------------------------
# report


def _rss_summary(series: list[tuple[float, float]], run_seconds: float) -> str:
    if not series:
        return "no samples"
    warm = [value for at, value in series if at >= WARMUP_FRACTION * run_seconds] or [series[-1][1]]
    start, peak, last = series[0][1], max(v for _, v in series), series[-1][1]
    quarter = max(1, len(warm) // 4)
    early, late = sum(warm[:quarter]) / quarter, sum(warm[-quarter:]) / quarter
    drift = late - early
    step = max(1, len(series) // RSS_POINTS_SHOWN)
    points = " ".join(f"{value:.0f}" for _, value in series[::step])
    return (
        f"start {start:.1f}, after warm-up {warm[0]:.1f}, peak {peak:.1f}, end {last:.1f} MiB; "
        f"drift after warm-up {drift:+.1f} MiB ({100 * drift / early:+.1f} %)\n"
        f"      samples (MiB, every ~{step * DEFAULT_RSS_INTERVAL_SECONDS:.0f} s): {points}"
    )


def print_result(result: RunResult) -> None:
    stats = result.stats
    seconds = result.seconds
    nodes = stats.nodes_done + stats.nodes_failed
    print(
        f"\n== {result.store}, {result.instances} instance(s): {nodes} nodes "
        f"({stats.nodes_done} ok, {stats.nodes_failed} failed) in {seconds:.1f} s"
    )
    print(
        f"   throughput: {nodes / seconds:.1f} nodes/s, {stats.requests_ok / seconds:.1f} "
        f"requests/s ({stats.requests_ok} ok), "
        f"{result.delivered / seconds:.1f} certificates/s"
    )
    errors = stats.errors
    print(f"   errors: {sum(errors.values())} {dict(sorted(errors.items())) if errors else ''}")
    print(f"   {'latency ms':14} {'p50':>8} {'p99':>8} {'count':>8}")
    everything: list[float] = []
    for operation in OPERATIONS:
        values = stats.latencies[operation]
        everything += values
        print(
            f"   {operation:14} {percentile(values, 0.5) * 1e3:>8.1f} "
            f"{percentile(values, 0.99) * 1e3:>8.1f} {len(values):>8}"
        )
    print(
        f"   {'all':14} {percentile(everything, 0.5) * 1e3:>8.1f} "
        f"{percentile(everything, 0.99) * 1e3:>8.1f} {len(everything):>8}"
    )
    for index, series in enumerate(result.rss):
        print(f"   server {index} RSS: {_rss_summary(series, seconds)}")
    verdict = "all present" if result.recorded >= result.delivered else "MISSING CERTIFICATES"
    print(
        f"   store: {result.recorded} certificates recorded, {result.delivered} delivered to "
        f"nodes ({verdict})"
    )


def print_summary(results: list[RunResult]) -> None:
    print("\n== summary")
    print(
        f"   {'store':11} {'inst':>4} {'nodes':>6} {'secs':>7} {'nodes/s':>8} {'req/s':>7} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'RSS drift MiB':>14}"
    )
    for result in results:
        stats = result.stats
        everything = [v for op in OPERATIONS for v in stats.latencies[op]]
        nodes = stats.nodes_done + stats.nodes_failed
        drifts = []
        for series in result.rss:
            warm = [v for at, v in series if at >= WARMUP_FRACTION * result.seconds]
            quarter = max(1, len(warm) // 4)
            if warm:
                drifts.append(sum(warm[-quarter:]) / quarter - sum(warm[:quarter]) / quarter)
        print(
            f"   {result.store:11} {result.instances:>4} {nodes:>6} {result.seconds:>7.1f} "
            f"{nodes / result.seconds:>8.1f} {stats.requests_ok / result.seconds:>7.1f} "
            f"{percentile(everything, 0.5) * 1e3:>7.1f} {percentile(everything, 0.99) * 1e3:>7.1f} "
            f"{sum(stats.errors.values()):>6} {' / '.join(f'{d:+.1f}' for d in drifts):>14}"
        )


# ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=DEFAULT_NODES)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=DEFAULT_MAX_SECONDS,
        help="per configuration: start no new node after this (bounds the total duration)",
    )
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--instances", default="1,2")
    parser.add_argument("--pg-url", help="admin URL of an existing PostgreSQL (databases are made)")
    parser.add_argument("--rsa-pool", type=int, default=DEFAULT_RSA_POOL)
    parser.add_argument("--rss-interval", type=float, default=DEFAULT_RSS_INTERVAL_SECONDS)
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    instance_counts = [int(n) for n in args.instances.split(",") if n.strip()]
    if not set(stores) <= {"sqlite", "postgresql"}:
        parser.error("--stores takes sqlite and/or postgresql")

    work_dir = Path(tempfile.mkdtemp(prefix="estkit-soak-"))
    results: list[RunResult] = []
    try:
        print(
            f"soak: {args.nodes} nodes, concurrency {args.concurrency}, stores {stores}, "
            f"instances {instance_counts}; work directory {work_dir}",
            flush=True,
        )
        started = time.monotonic()
        paths = init_data_dir(work_dir / "data")
        nodes = prepare_fleet(
            args.nodes, paths.manufacturer_ca.parent, work_dir / "fleet", rsa_pool=args.rsa_pool
        )
        print(
            f"prepared {len(nodes)} nodes (RSA pool {args.rsa_pool}) in "
            f"{time.monotonic() - started:.1f} s",
            flush=True,
        )
        with contextlib.ExitStack() as stack:
            admin_url = (
                stack.enter_context(_postgres(args.pg_url)) if "postgresql" in stores else ""
            )
            for store in stores:
                for instances in instance_counts:
                    if store == "sqlite":
                        url = f"sqlite:///{work_dir / f'soak-{instances}.db'}"
                    else:
                        url = _create_pg_database(admin_url)
                    print(f"\nrunning {store} with {instances} instance(s) ...", flush=True)
                    result = run_configuration(
                        store=store, instances=instances, database_url=url,
                        data_dir=paths.data_dir, cafile=paths.ca_certificates, nodes=nodes,
                        work_dir=work_dir / f"run-{store}-{instances}", args=args,
                    )  # fmt: skip
                    print_result(result)
                    results.append(result)
        print_summary(results)
    finally:
        if args.keep:
            print(f"work directory kept: {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
