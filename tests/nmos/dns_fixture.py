"""A real unicast DNS server (Debian's dnsmasq) on a loopback port, serving DNS-SD records.

Why dnsmasq and not a mock resolver: discovery must work against the records an administrator
really writes (BCP-003-03 D1-D5), parsed by dnspython off the wire.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.resolver

try:
    from tests.system_packages import ensure_program
except ModuleNotFoundError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from system_packages import ensure_program  # type: ignore[no-redef]

DOMAIN = "nmos.test"
SERVICE = f"_nmos-certs._tcp.{DOMAIN}"
STARTUP_TIMEOUT_SECONDS = 10.0


@dataclass
class Zone:
    """DNS-SD records to serve: adverts as PTR + SRV + TXT, hosts as A records."""

    ptrs: list[tuple[str, str]] = field(default_factory=list)
    srvs: list[tuple[str, str, int]] = field(default_factory=list)
    txts: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    hosts: list[tuple[str, str]] = field(default_factory=list)

    def advert(
        self,
        instance: str,
        target: str,
        port: int,
        *,
        txt: tuple[str, ...] | None = None,
        ptr: bool = True,
        srv: bool = True,
    ) -> Zone:
        name = f"{instance}.{SERVICE}"
        if ptr:
            self.ptrs.append((SERVICE, name))
        if srv:
            self.srvs.append((name, target, port))
        if txt is not None:
            self.txts.append((name, txt))
        return self

    def host(self, name: str, address: str = "127.0.0.1") -> Zone:
        self.hosts.append((name, address))
        return self

    def arguments(self) -> list[str]:
        args = [f"--ptr-record={name},{target}" for name, target in self.ptrs]
        args += [f"--srv-host={name},{target},{port},0,0" for name, target, port in self.srvs]
        for name, strings in self.txts:
            # Passed as argv, not through a shell: quotes would become part of the text.
            joined = ",".join(strings)
            args.append(f"--txt-record={name},{joined}" if strings else f"--txt-record={name}")
        args += [f"--host-record={name},{address}" for name, address in self.hosts]
        return args


@dataclass
class DnsServer:
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def queries(self) -> str:
        """dnsmasq's query log: proof that a lookup reached this server."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no free loopback port for dnsmasq")


def start_dnsmasq(zone: Zone, workdir: Path) -> DnsServer:
    binary = ensure_program("dnsmasq", "dnsmasq")
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "dnsmasq.log"
    last_error = ""
    for _ in range(5):
        port = free_port()
        command = [
            binary,
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            f"--port={port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            f"--pid-file={workdir / 'dnsmasq.pid'}",
            "--user=root",
            # Authoritative for the test domain: unknown names get NXDOMAIN, not REFUSED.
            f"--local=/{DOMAIN}/",
            "--log-queries",
            f"--log-facility={log_path}",
            *zone.arguments(),
        ]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        server = DnsServer(port, log_path, process)
        if _wait_ready(server):
            return server
        server.stop()
        out, err = process.communicate(timeout=5)
        last_error = (err or out).decode(errors="replace")
    raise RuntimeError(f"dnsmasq did not start: {last_error}")


def _wait_ready(server: DnsServer) -> bool:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = server.port
    resolver.lifetime = 0.5
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        with contextlib.suppress(dns.exception.Timeout, dns.resolver.NoNameservers):
            # An authoritative "no such name" (NXDOMAIN) also proves the server is answering.
            with contextlib.suppress(dns.resolver.NXDOMAIN):
                resolver.resolve(f"ready-probe.{DOMAIN}", "A", raise_on_no_answer=False)
            return True
        time.sleep(0.05)
    return False
