"""The simulated NMOS fleet of ``soak.py``: per-node credentials made up front, and one node's
life cycle (``/cacerts``, RSA + ECDSA enrollment, re-enrollment) as an asyncio task.

Why everything is made before the clock starts: key generation (RSA above all) and certificate
signing on the client side would otherwise dominate the figures and measure the load generator
instead of the server.

What a node is: a factory device certificate of its own (P-256, issued by the data directory's
demo manufacturer CA, with a ``serialNumber``), an RSA-2048 and a P-256 operational key with a CSR
each (CN and DNS SAN ``node-N.soak.example``). RSA keys come from a pool (``rsa_pool`` distinct
keys shared round-robin), since generating 10,000 RSA keys takes longer than the soak itself; the
server treats each CSR independently, so sharing keys across nodes changes nothing it does.
Re-enrollment keeps the key (allowed by RFC 7030 4.2.2) so no key generation happens mid-run.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization

from estkit.ca.manufacturer import ManufacturerCA, issue_device_certificate
from estkit.protocol.csr import build_csr, encode_csr_body
from estkit.protocol.keys import PrivateKey, generate_private_key, private_key_to_pem
from estkit.protocol.pkcs7 import decode_certs_only_body

PKCS10 = "application/pkcs10"
# Per-request client timeout: a request slower than this counts as an error, not a hang.
REQUEST_TIMEOUT_SECONDS = 120.0
# The servers' certificates name "localhost" (no IP addresses, BCP-003-01 T4); nodes connect to
# 127.0.0.1 and verify that name (httpx's sni_hostname extension), skipping a name lookup each time.
SERVER_NAME = "localhost"
_EXTENSIONS = {"sni_hostname": SERVER_NAME}
OPERATIONS = ("cacerts", "enroll_rsa", "enroll_ec", "reenroll_rsa", "reenroll_ec")


@dataclass(frozen=True)
class NodeMaterial:
    """Everything one node needs, on disk (ssl.SSLContext loads client certificates by path)."""

    index: int
    device_cert: Path
    device_key: Path
    rsa_key_pem: bytes
    ec_key_pem: bytes
    rsa_csr: bytes  # base64 body
    ec_csr: bytes


def prepare_fleet(
    size: int,
    manufacturer_dir: Path,
    work_dir: Path,
    *,
    rsa_pool: int,
    progress: bool = True,
) -> list[NodeMaterial]:
    """Make ``size`` nodes' credentials and CSRs in ``work_dir`` (keys 0600 in a private dir)."""
    work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    manufacturer = ManufacturerCA.load(manufacturer_dir)
    rsa_keys: list[PrivateKey] = [generate_private_key("rsa2048") for _ in range(max(1, rsa_pool))]
    rsa_pems = [private_key_to_pem(key) for key in rsa_keys]
    nodes = []
    started = time.monotonic()
    for index in range(size):
        name = f"node-{index}.soak.example"
        device = issue_device_certificate(
            manufacturer, device_serial=f"SOAK-{index:06d}", common_name=f"soak-device-{index}"
        )
        device_cert, device_key = work_dir / f"{index}-device.pem", work_dir / f"{index}-device.key"
        device.write(device_cert, device_key)
        rsa_key = rsa_keys[index % len(rsa_keys)]
        ec_key = generate_private_key("p256")
        nodes.append(
            NodeMaterial(
                index=index,
                device_cert=device_cert,
                device_key=device_key,
                rsa_key_pem=rsa_pems[index % len(rsa_keys)],
                ec_key_pem=private_key_to_pem(ec_key),
                rsa_csr=encode_csr_body(build_csr(rsa_key, common_name=name, dns_names=[name])),
                ec_csr=encode_csr_body(build_csr(ec_key, common_name=name, dns_names=[name])),
            )
        )
        if progress and (index + 1) % 1000 == 0:
            rate = (index + 1) / (time.monotonic() - started)
            print(f"  prepared {index + 1}/{size} nodes ({rate:.0f}/s)", flush=True)
    return nodes


# ------------------------------------------------------------------------------------------------
# measurements


@dataclass
class Stats:
    """Latencies (seconds) per operation, outcomes, and the wall-clock window."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {op: [] for op in OPERATIONS})
    outcomes: Counter[str] = field(default_factory=Counter)
    nodes_done: int = 0
    nodes_failed: int = 0
    started: float = 0.0
    finished: float = 0.0

    def record(self, operation: str, seconds: float, outcome: str) -> None:
        self.outcomes[f"{operation}:{outcome}"] += 1
        if outcome == "200":
            self.latencies[operation].append(seconds)

    @property
    def requests_ok(self) -> int:
        return sum(len(values) for values in self.latencies.values())

    @property
    def errors(self) -> dict[str, int]:
        return {key: count for key, count in self.outcomes.items() if not key.endswith(":200")}


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# ------------------------------------------------------------------------------------------------
# one node


class Fleet:
    """Runs nodes against one or more server URLs (node N uses ``urls[N % len(urls)]``)."""

    def __init__(self, urls: Sequence[str], cafile: Path, work_dir: Path) -> None:
        self.urls = list(urls)
        self.cafile = cafile
        self.work_dir = work_dir
        self.stats = Stats()
        self._ca_pem = cafile.read_text()

    def _context(self, cert: Path, key: Path) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self._ca_pem)
        context.load_cert_chain(str(cert), str(key))
        return context

    async def _timed(
        self, client: httpx.AsyncClient, operation: str, request: httpx.Request
    ) -> httpx.Response | None:
        began = time.perf_counter()
        try:
            response = await client.send(request)
        except httpx.HTTPError as exc:
            self.stats.record(operation, time.perf_counter() - began, type(exc).__name__)
            return None
        self.stats.record(operation, time.perf_counter() - began, str(response.status_code))
        return response if response.status_code == 200 else None

    async def _enroll(
        self, client: httpx.AsyncClient, url: str, operation: str, path: str, body: bytes
    ) -> bytes | None:
        request = client.build_request(
            "POST",
            f"{url}/.well-known/est/{path}",
            content=body,
            headers={"Content-Type": PKCS10},
            extensions=_EXTENSIONS,
        )
        response = await self._timed(client, operation, request)
        if response is None:
            return None
        certificates = decode_certs_only_body(response.content)
        return certificates[0].public_bytes(serialization.Encoding.PEM)

    async def _reenroll(
        self,
        url: str,
        operation: str,
        node: NodeMaterial,
        cert_pem: bytes,
        key_pem: bytes,
        body: bytes,
        tag: str,
    ) -> bool:
        cert_path = self.work_dir / f"{node.index}-{tag}.pem"
        key_path = self.work_dir / f"{node.index}-{tag}.key"
        cert_path.write_bytes(cert_pem)
        key_path.write_bytes(key_pem)
        key_path.chmod(0o600)
        context = self._context(cert_path, key_path)
        async with httpx.AsyncClient(verify=context, timeout=REQUEST_TIMEOUT_SECONDS) as client:
            return await self._enroll(client, url, operation, "simplereenroll", body) is not None

    async def run_node(self, node: NodeMaterial) -> None:
        url = self.urls[node.index % len(self.urls)]
        context = self._context(node.device_cert, node.device_key)
        ok = True
        # One keep-alive connection with the factory certificate for the first three requests.
        async with httpx.AsyncClient(verify=context, timeout=REQUEST_TIMEOUT_SECONDS) as client:
            cacerts = await self._timed(
                client,
                "cacerts",
                client.build_request(
                    "GET", f"{url}/.well-known/est/cacerts", extensions=_EXTENSIONS
                ),
            )
            ok &= cacerts is not None
            rsa_cert = await self._enroll(client, url, "enroll_rsa", "simpleenroll", node.rsa_csr)
            ec_cert = await self._enroll(client, url, "enroll_ec", "simpleenroll", node.ec_csr)
        # Renewal: each operational certificate authenticates its own re-enrollment.
        if rsa_cert is not None:
            ok &= await self._reenroll(
                url, "reenroll_rsa", node, rsa_cert, node.rsa_key_pem, node.rsa_csr, "rsa"
            )
        if ec_cert is not None:
            ok &= await self._reenroll(
                url, "reenroll_ec", node, ec_cert, node.ec_key_pem, node.ec_csr, "ec"
            )
        ok &= rsa_cert is not None and ec_cert is not None
        if ok:
            self.stats.nodes_done += 1
        else:
            self.stats.nodes_failed += 1

    async def run(
        self, nodes: Sequence[NodeMaterial], concurrency: int, max_seconds: float
    ) -> Stats:
        """Run ``nodes`` with at most ``concurrency`` in flight; stop starting new ones after
        ``max_seconds`` (nodes already started finish)."""
        semaphore = asyncio.Semaphore(concurrency)
        self.stats.started = time.perf_counter()
        deadline = self.stats.started + max_seconds

        async def guarded(node: NodeMaterial) -> None:
            try:
                await self.run_node(node)
            finally:
                semaphore.release()

        tasks = []
        for node in nodes:
            await semaphore.acquire()
            if time.perf_counter() >= deadline:
                semaphore.release()
                break
            tasks.append(asyncio.create_task(guarded(node)))
        await asyncio.gather(*tasks)
        self.stats.finished = time.perf_counter()
        return self.stats
