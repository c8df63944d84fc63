"""Fixtures of the NMOS node tests: a real dnsmasq, node configurations, recorded events."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from estkit.nmos.clock import ManualClock
from estkit.nmos.config import NodeConfig, ServerSettings
from estkit.nmos.node import NodeEvent

from .dns_fixture import DnsServer, Zone, start_dnsmasq

# A fixed simulated start: tests that use the manual clock do not depend on today's date.
SIMULATION_START = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def dns_server(tmp_path: Path) -> Iterator[Callable[[Zone], DnsServer]]:
    """Factory: ``dns_server(zone)`` starts a real dnsmasq serving ``zone`` on 127.0.0.1."""
    started: list[DnsServer] = []

    def start(zone: Zone) -> DnsServer:
        server = start_dnsmasq(zone, tmp_path / f"dnsmasq-{len(started)}")
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def manual_clock() -> ManualClock:
    return ManualClock(SIMULATION_START)


class EventLog(list[NodeEvent]):
    """Collects NodeEvents; ``messages(kind)`` for assertions."""

    def __call__(self, event: NodeEvent) -> None:
        self.append(event)

    def messages(self, kind: str | None = None) -> list[str]:
        return [e.message for e in self if kind is None or e.kind == kind]

    def text(self) -> str:
        return "\n".join(f"{e.kind} {e.step} {e.slot or ''} {e.message}" for e in self)


@pytest.fixture
def events() -> EventLog:
    return EventLog()


def config_for_server(
    server: object, out_dir: Path, *, label: str | None = None, **changes: object
) -> NodeConfig:
    """A node configured by hand for an ``estkit_server``-style fixture, with its demo device."""
    paths = server.paths  # type: ignore[attr-defined]
    base = NodeConfig(
        output_dir=out_dir,
        hostnames=("node1.nmos.test",),
        manufacturer_certificate=paths.device_certificate,
        manufacturer_key=paths.device_key,
        server=ServerSettings(host="localhost", port=server.port, label=label),  # type: ignore[attr-defined]
    )
    return base.with_changes(**changes) if changes else base
