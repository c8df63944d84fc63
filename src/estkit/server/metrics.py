"""Prometheus metrics of the EST server (``estkit server serve --metrics-port N``).

Why prometheus-client's multiprocess mode, always: with ``--workers N`` every worker counts its
own requests, and a scrape must see the sum. Each worker writes its counters and histograms to
memory-mapped files in one directory (``PROMETHEUS_MULTIPROC_DIR``, a fresh temporary directory
made before the workers are forked and removed at shutdown), and the exporter, which runs once in
the process that supervises, adds them up at each scrape. A single worker uses the same path, so
what the tests check with one worker is what runs with many.

What is counted where:

- in the request path (one aiohttp middleware, :func:`middleware`): request durations per
  endpoint, enrollments by label, operation and result, the last CRL signed;
- in the TLS layer (:func:`watch_handshakes`): fatal TLS alerts sent or received before a
  handshake completed, by alert name — the failures the server can see (a client that simply
  drops the connection mid-handshake sends no alert and is not counted);
- at scrape time (:class:`_StateCollector`, in the exporter): the pending approval queue, CA and
  TLS certificate expiry, read from the data directory at most every ``STATE_CACHE_SECONDS``.

A hostile scraper: the exporter binds 127.0.0.1 unless told otherwise, answers every path with
the same text, and its cost per scrape is bounded (label values come from fixed sets — never from
what a client sent — and the store is queried at most once per ``STATE_CACHE_SECONDS``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509

from estkit.errors import EstkitError
from estkit.protocol.certs import load_pem_certificates
from estkit.protocol.errors import PathError
from estkit.protocol.paths import CRL_PATH, parse_path
from estkit.server.app import OCSP_PATH, STATE_KEY
from estkit.server.config import DEFAULT_METRICS_HOST
from estkit.server.guard import ALERT_OBSERVERS, THROTTLE_OBSERVERS

logger = logging.getLogger("estkit.server")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Request durations: EST answers from ~1 ms (/cacerts from memory) to seconds (RSA server-side
# key generation, a slow database); the buckets span that with the usual 1-2.5-5 steps.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The scrape-time gauges (queue size, certificate expiry) are recomputed at most this often: a
# scraper polling in a tight loop then costs file reads, not a database query per request.
STATE_CACHE_SECONDS = 5.0
# The fixed set of endpoint label values (anything else is "other": label values never come
# from the request, so a hostile client cannot grow the series count).
ENDPOINTS = (
    "cacerts",
    "csrattrs",
    "simpleenroll",
    "simplereenroll",
    "serverkeygen",
    "fullcmc",
    "crl",
    "ocsp",
    "other",
)
ENROLL_OPERATIONS = ("simpleenroll", "simplereenroll", "serverkeygen")
# The unlabelled endpoints (/.well-known/est/simpleenroll) in the label dimension.
NO_LABEL = "-"
# TLS alert levels and record type (RFC 8446 §6, RFC 5246 §7.2).
_ALERT_LEVEL_FATAL = 2
_ALERT_RECORD_BYTES = 2


class MetricsError(EstkitError, ValueError):
    """The metrics exporter cannot start (its port is taken, its address is not here)."""


def _result_for(status: int) -> str:
    """The ``result`` of an enrollment from its HTTP status."""
    if status == 200:
        return "issued"
    if status == 202:
        return "queued"
    if status == 401:
        return "challenged"  # a Digest client's first round trip: not a failure
    if status < 500:
        return "refused"
    return "error"


@dataclass
class _Metrics:
    enrollments: Any
    handshake_failures: Any
    duration: Any
    crl_signed: Any
    revocation_answers: Any
    revocation_dropped: Any
    throttled: Any


_METRICS: _Metrics | None = None
_LOCK = threading.Lock()


def enable(directory: Path) -> None:
    """Switch this process to multiprocess metrics written to ``directory`` and create them.

    Called once before the workers are forked (they inherit the metric objects; prometheus-client
    opens per-process files after a fork).
    """
    global _METRICS
    from prometheus_client import Counter, Gauge, Histogram, values

    with _LOCK:
        os.environ[MULTIPROC_ENV] = str(directory)
        values.ValueClass = values.MultiProcessValue()
        # registry=None: the objects only write their files; the exporter's
        # MultiProcessCollector reads them (a global registry would collect them twice).
        _METRICS = _Metrics(
            enrollments=Counter(
                "estkit_enrollments",
                "Enrollment requests by label, operation and result",
                ["label", "operation", "result"],
                registry=None,
            ),
            handshake_failures=Counter(
                "estkit_tls_handshake_failures",
                "TLS handshakes that ended with a fatal alert, by who sent it and which",
                ["reason"],
                registry=None,
            ),
            duration=Histogram(
                "estkit_request_duration_seconds",
                "Time to answer an EST request, by endpoint",
                ["endpoint"],
                buckets=DURATION_BUCKETS,
                registry=None,
            ),
            crl_signed=Gauge(
                "estkit_crl_last_signed_timestamp_seconds",
                "When this server last signed a CRL (Unix time)",
                registry=None,
                multiprocess_mode="max",
            ),
            revocation_answers=Counter(
                "estkit_revocation_answers",
                "Answers of the plain-HTTP revocation listener, by path (ocsp, crl, other) and "
                "HTTP status",
                ["path", "status"],
                registry=None,
            ),
            revocation_dropped=Counter(
                "estkit_revocation_connections_dropped",
                "Revocation listener connections closed at its connection cap: the oldest idle "
                "one evicted, or a new one refused when every connection was being answered",
                ["reason"],
                registry=None,
            ),
            throttled=Counter(
                "estkit_connections_throttled",
                "New connections closed unread because their address went over "
                "failures_per_second (the failure throttle), by listener",
                ["listener"],
                registry=None,
            ),
        )
        # Series of fixed label sets exist from the start at 0, so that a rate() over them (the
        # example dashboard, an alert) has data before the first event.
        for listener in ("est", "console"):
            _METRICS.throttled.labels(listener)
        for reason in ("evicted", "refused"):
            _METRICS.revocation_dropped.labels(reason)
        for path in ("ocsp", "crl"):
            _METRICS.revocation_answers.labels(path, "200")
        if _count_throttled not in THROTTLE_OBSERVERS:
            THROTTLE_OBSERVERS.append(_count_throttled)


def _count_throttled(listener: str) -> None:
    metrics = _METRICS
    if metrics is not None:
        # The guard's listener names are the server's own ("est", "console"), never a client's.
        metrics.throttled.labels(listener).inc()


def count_revocation(answers: dict[tuple[str, int], int], dropped: dict[str, int]) -> None:
    """Add what the revocation listener counted since its last sweep (RevocationListener.on_counts:
    label values are the listener's own fixed paths, statuses and reasons)."""
    metrics = _METRICS
    if metrics is None:
        return
    for (path, status), count in answers.items():
        metrics.revocation_answers.labels(path, str(status)).inc(count)
    for reason, count in dropped.items():
        metrics.revocation_dropped.labels(reason).inc(count)


def active() -> bool:
    return _METRICS is not None


@contextlib.contextmanager
def multiprocess_directory() -> Iterator[Path]:
    """A fresh, private directory for the per-process metric files, removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="estkit-metrics-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _endpoint_of(raw_path: str) -> tuple[str, str | None]:
    """(endpoint, label) of a request path; label None for the unlabelled endpoints."""
    if raw_path == CRL_PATH or raw_path.startswith(CRL_PATH + "/"):
        return "crl", None
    if raw_path == OCSP_PATH or raw_path.startswith(OCSP_PATH + "/"):
        return "ocsp", None
    try:
        label, operation = parse_path(raw_path)
    except PathError:
        return "other", None
    return (operation if operation in ENDPOINTS else "other"), label


@web.middleware
async def middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Time the request and count enrollments; placed just inside the connection guard."""
    started = time.perf_counter()
    response = await handler(request)
    metrics = _METRICS
    if metrics is None:
        return response
    endpoint, label = _endpoint_of(request.rel_url.raw_path)
    metrics.duration.labels(endpoint).observe(time.perf_counter() - started)
    if endpoint in ENROLL_OPERATIONS:
        # Only configured labels name a series; anything else was refused with a 404 anyway.
        state = request.app[STATE_KEY]
        if label is None or label in state.config.labels:
            metrics.enrollments.labels(
                label or NO_LABEL, endpoint, _result_for(response.status)
            ).inc()
    elif endpoint == "crl" and response.status == 200:
        metrics.crl_signed.set(time.time())
    return response


# -- TLS handshake failures --------------------------------------------------------------------


# TLS record content type 21 is an alert (RFC 8446 §5.1); ssl's own enum for it is private.
_TLS_CONTENT_ALERT = 21


def _alert_name(code: int) -> str:
    try:
        alert = ssl._TLSAlertType  # type: ignore[attr-defined]  # private enum, no stub
        return str(alert(code).name).lower()
    except (AttributeError, ValueError):
        return "other"


def _on_tls_message(
    connection: Any,
    direction: str,
    _version: Any,
    content_type: Any,
    _message_type: Any,
    data: bytes,
) -> None:
    metrics = _METRICS
    try:
        if (
            metrics is None
            or int(content_type) != _TLS_CONTENT_ALERT
            or len(data) != _ALERT_RECORD_BYTES
            or data[0] != _ALERT_LEVEL_FATAL
        ):
            return
        # version() is None until the handshake has finished: alerts after it (a client's
        # close_notify is a warning anyway) are not handshake failures.
        if connection is not None and connection.version() is not None:
            return
        who = "sent" if direction == "write" else "received"
        metrics.handshake_failures.labels(f"{who}_{_alert_name(data[1])}").inc()
    except Exception:  # never break a TLS connection over a metric
        return


def _count_guard_alert(code: int) -> None:
    metrics = _METRICS
    if metrics is not None:
        metrics.handshake_failures.labels(f"sent_{_alert_name(code)}").inc()


def watch_handshakes(context: ssl.SSLContext) -> bool:
    """Count fatal TLS alerts on ``context`` (and on contexts its SNI callback switches to).

    Uses ``SSLContext._msg_callback``, OpenSSL's message callback as CPython exposes it (stable
    since Python 3.8 but undocumented): if a Python lacks it, returns False and nothing is
    counted (the metric then stays at zero, which the docs say).
    """
    if _count_guard_alert not in ALERT_OBSERVERS:
        # Alerts the connection guard sends for hopeless ClientHellos never pass through OpenSSL.
        ALERT_OBSERVERS.append(_count_guard_alert)
    if not hasattr(context, "_msg_callback"):
        logger.warning("this Python cannot observe TLS alerts; handshake failures are not counted")
        return False
    context._msg_callback = _on_tls_message
    inner = context.sni_callback
    if inner is not None:

        def sni(connection: Any, server_name: Any, original: ssl.SSLContext) -> Any:
            result = inner(connection, server_name, original)
            switched = connection.context
            if switched is not context and switched._msg_callback is None:
                switched._msg_callback = _on_tls_message
            return result

        context.sni_callback = sni
    return True


# -- the exporter ------------------------------------------------------------------------------


class _StateCollector:
    """Gauges read from the data directory at scrape time (cached for STATE_CACHE_SECONDS)."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._state: Any = None
        self._cached: tuple[float, list[Any]] | None = None
        self._lock = threading.Lock()

    def collect(self) -> list[Any]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= STATE_CACHE_SECONDS:
                self._cached = (now, self._families())
            return self._cached[1]

    def close(self) -> None:
        with self._lock:
            if self._state is not None:
                self._state.close()
                self._state = None

    def _families(self) -> list[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from estkit.server.state import ServerState

        families: list[Any] = []
        try:
            if self._state is None:
                self._state = ServerState(self._data_dir)
            state = self._state
            state.refresh()
        except Exception as exc:  # a scrape must still answer; the log says why
            logger.warning("metrics: cannot read the server state: %s", exc)
            return families
        pending = GaugeMetricFamily(
            "estkit_pending_requests", "Enrollment requests waiting for operator approval"
        )
        try:
            pending.add_metric([], state.store.count_requests("pending"))
            families.append(pending)
        except Exception as exc:
            logger.warning("metrics: cannot count pending requests: %s", exc)
        ca = GaugeMetricFamily(
            "estkit_ca_certificate_expiry_timestamp_seconds",
            "notAfter of the CA certificates in use (Unix time)",
            labels=["role"],
        )
        authority = state.authority
        ca.add_metric(["root"], authority.root_certificate.not_valid_after_utc.timestamp())
        ca.add_metric(["issuing"], authority.issuer_certificate.not_valid_after_utc.timestamp())
        families.append(ca)
        tls = GaugeMetricFamily(
            "estkit_tls_certificate_expiry_timestamp_seconds",
            "notAfter of the server's TLS certificates (Unix time)",
            labels=["certificate"],
        )
        for pair in state.config.tls_certificates:
            try:
                certificate: x509.Certificate = load_pem_certificates(
                    pair.certificate.read_bytes()
                )[0]
            except Exception as exc:
                logger.warning("metrics: cannot read %s: %s", pair.certificate, exc)
                continue
            tls.add_metric([pair.certificate.name], certificate.not_valid_after_utc.timestamp())
        families.append(tls)
        return families


@dataclass
class Exporter:
    """The running ``/metrics`` HTTP server; ``stop()`` ends it."""

    host: str
    port: int
    _server: Any
    _thread: threading.Thread
    _collector: _StateCollector

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._collector.close()


def start_exporter(data_dir: Path, host: str, port: int) -> Exporter:
    """Serve ``/metrics`` (plain HTTP, the Prometheus convention) on ``host:port``.

    Call after :func:`enable` and after any fork: it starts a thread.
    """
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=os.environ[MULTIPROC_ENV])
    collector = _StateCollector(data_dir)
    registry.register(collector)
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise MetricsError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; another program may "
            "use the port, or the address is not on this host"
        ) from None
    return Exporter(
        host=host,
        port=int(server.server_address[1]),
        _server=server,
        _thread=thread,
        _collector=collector,
    )


__all__ = [
    "DEFAULT_METRICS_HOST",
    "Exporter",
    "MetricsError",
    "active",
    "enable",
    "middleware",
    "multiprocess_directory",
    "start_exporter",
    "watch_handshakes",
]
