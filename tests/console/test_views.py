"""The console's pure parts: escaping, certificate search/filter/sort, dashboard figures, and the
CSRF/origin rules. No server needed."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estkit.ca.store import EventGroup, IssuedSummary
from estkit.console import auth
from estkit.console.app import allowed_hosts, console_url_host
from estkit.console.html import Html, esc, tag
from estkit.console.model import (
    MAX_PAGE_NUMBER,
    OTHER_REFUSALS,
    CertificateQuery,
    cert_rows,
    dashboard_stats,
    humanize_duration,
    issued_per_day,
    refusal_key,
)
from estkit.console.views import requests_content

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
KEY = ec.generate_private_key(ec.SECP256R1())


def _pem(common_name: str, sans: list[str], not_before: dt.datetime, days: int) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), False)
        .sign(KEY, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class Record:
    """Shaped like estkit.ca.store.IssuedRecord (only what the console reads)."""

    serial: str
    subject: str
    not_before: dt.datetime
    not_after: dt.datetime
    label: str | None
    key_type: str
    status: str = "valid"
    operation: str = "simpleenroll"
    revoked_at: dt.datetime | None = None
    revocation_reason: str | None = None
    certificate_pem: str = ""
    issued_at: dt.datetime | None = None


def _record(serial: str, cn: str, start_days_ago: int, days: int, **kw: Any) -> Record:
    start = NOW - dt.timedelta(days=start_days_ago)
    return Record(
        serial=serial,
        subject=f"CN={cn}",
        not_before=start,
        not_after=start + dt.timedelta(days=days),
        certificate_pem=_pem(cn, [cn, f"alt-{cn}"], start, days),
        **kw,
    )


RECORDS = [
    _record("a1", "cam-1.example", 80, 90, label="nmos", key_type="ECDSA P-256"),
    _record("b2", "cam-2.example", 10, 90, label="nmos", key_type="RSA 2048"),
    _record("c3", "mic-1.example", 100, 90, label=None, key_type="ECDSA P-256"),
    _record("d4", "mic-2.example", 5, 90, label="lab", key_type="ECDSA P-384", status="revoked"),
]


def test_query_parameters_are_validated() -> None:
    query = CertificateQuery.from_params({"status": "bogus", "sort": "; DROP", "q": " x "})
    assert (query.status, query.sort, query.q, query.page) == ("", "-issued", "x", 1)
    for hostile in ("-1", "0", "abc", "1e9", "9" * 400):
        assert CertificateQuery.from_params({"page": hostile}).page == 1
    assert CertificateQuery.from_params({"page": "3"}).page == 3
    assert CertificateQuery.from_params({"page": "99999"}).page == MAX_PAGE_NUMBER
    # The store is asked for what the form says; "valid"/"expired" split by notAfter.
    filters = CertificateQuery(status="expired", label="nmos", q="cam").store_filters()
    assert filters == {
        "status": "valid",
        "expired": True,
        "label": "nmos",
        "key_type": None,
        "search": "cam",
        "sort": "-issued",
    }
    assert CertificateQuery(status="valid").store_filters()["expired"] is False
    assert CertificateQuery(q="x", sort="expiry").params(2) == {
        "q": "x",
        "sort": "expiry",
        "page": "2",
    }


def test_dashboard_figures() -> None:
    @dataclass
    class Event:
        at: dt.datetime
        message: str
        fields: dict = field(default_factory=dict)
        kind: str = "refused"

    groups = [
        EventGroup("refused", "RSA key of 1024 bits is too small; use 2048", 3, {"status": 400}),
        EventGroup("refused", "RSA key of 2048 bits is too small; other hint", 2, {"status": 400}),
        EventGroup("refused", "too old to count", 1, {"status": 403}),
    ]
    summary = IssuedSummary(valid=2, revoked=1, expired=1, expiring=1)
    expiring = cert_rows(RECORDS[1:2], NOW)
    per_day = {NOW.date(): 4, NOW.date() - dt.timedelta(days=20): 9}
    # 10 refusals in the window, but the store grouped only 6 of them (its cap on messages).
    stats = dashboard_stats(summary, expiring, per_day, 3, groups, 10, [], NOW)
    assert (stats.pending, stats.valid, stats.revoked, stats.expired) == (3, 2, 1, 1)
    assert [row.record.serial for row in stats.expiring] == ["b2"]
    assert stats.refusals == [
        ("400 · RSA key of N bits is too small", 5),
        (OTHER_REFUSALS, 4),
        ("403 · too old to count", 1),
    ]
    assert stats.refusals_total == 10
    assert stats.issued_per_day[-1] == (NOW.date(), 4) and len(stats.issued_per_day) == 14
    assert sum(count for _, count in stats.issued_per_day) == 4  # 20 days ago is off the chart
    assert refusal_key(Event(NOW, "too old to count", {"status": 403})) == "403 · too old to count"
    # Per-request details (quoted names, serials, sizes) do not split one reason into many.
    unknown = [
        Event(NOW, f"unknown EST label 'conformance-{tag}'", {"status": 404}) for tag in "ab"
    ]
    assert refusal_key(unknown[0]) == refusal_key(unknown[1]) == "404 · unknown EST label '…'"
    serials = [
        Event(NOW, f"certificate {serial} is revoked", {"status": 403})
        for serial in ("5f0c1d2e3a4b5c6d7e8f", "0a1b2c3d4e5f60718293")
    ]
    assert refusal_key(serials[0]) == refusal_key(serials[1]) == "403 · certificate … is revoked"


def test_issued_per_day_fills_the_days_without_certificates() -> None:
    days = dict(issued_per_day({NOW.date(): 1}, NOW.date(), 2))
    assert days == {NOW.date() - dt.timedelta(days=1): 0, NOW.date(): 1}


def test_humanize_duration() -> None:
    assert [humanize_duration(s) for s in (5, 300, 7200, 86400 * 3)] == [
        "5 s",
        "5 min",
        "2 h",
        "3 d",
    ]


def test_markup_in_request_fields_is_escaped() -> None:
    @dataclass
    class Pending:
        id: int = 7
        created_at: dt.datetime = NOW
        label: str | None = "<b>lab</b>"
        operation: str = "simpleenroll"
        status: str = "pending"
        common_name: str = '<script>alert("cn")</script>'
        dns_names: tuple = ('x.example"><img src=x onerror=alert(1)>',)
        key_type: str = "ECDSA P-256"
        client_subject: str = "CN=<i>dev</i>"
        client_issuer: str = "CN=&amp;"
        client_fingerprint: str = "sha256:00"
        peer_address: str = "127.0.0.1"
        requester: str | None = None

    page = requests_content([Pending()], [], NOW, "token")
    assert "<script>" not in page and "<img" not in page and "<b>lab" not in page
    assert "&lt;script&gt;alert(&quot;cn&quot;)&lt;/script&gt;" in page
    assert "CN=&amp;amp;" in page
    assert 'data-confirm="Reject request #7 for &lt;script&gt;' in page


def test_html_helpers() -> None:
    assert esc("<a href='x'>") == "&lt;a href=&#x27;x&#x27;&gt;"
    assert esc(Html("<b>ok</b>")) == "<b>ok</b>"
    assert (
        tag("input", type="checkbox", checked=True, disabled=False)
        == '<input type="checkbox" checked>'
    )
    assert tag("td", "<x>", data_label='a"b') == '<td data-label="a&quot;b">&lt;x&gt;</td>'


@pytest.mark.parametrize(
    ("origin", "referer", "ok"),
    [
        ("https://127.0.0.1:9", None, True),
        ("https://127.0.0.1:9/", None, True),
        ("https://127.0.0.1:10", None, False),
        ("http://127.0.0.1:9", None, False),
        ("null", "https://127.0.0.1:9/requests", False),
        (None, "https://127.0.0.1:9/requests", True),
        (None, "https://evil.example/requests", False),
        (None, None, False),
    ],
)
def test_origin_rules(origin: str | None, referer: str | None, ok: bool) -> None:
    assert (auth.origin_problem(origin, referer, "https://127.0.0.1:9") is None) is ok


@pytest.mark.parametrize(
    ("bind_host", "sans", "expected"),
    [
        ("127.0.0.1", ["localhost"], "localhost"),  # no IP SAN (T4): the name, not the address
        ("::1", ["localhost"], "localhost"),
        ("0.0.0.0", ["localhost", "est.example"], "localhost"),  # wildcard includes loopback
        ("127.0.0.1", ["est.example"], "est.example"),
        ("192.0.2.7", ["localhost", "est.example"], "192.0.2.7"),  # not loopback: as bound
        ("est.example", ["localhost"], "est.example"),  # bound by name: that name
    ],
)
def test_console_url_uses_the_certificate_name_on_loopback(
    tmp_path: Path, bind_host: str, sans: list[str], expected: str
) -> None:
    certificate = tmp_path / "server.pem"
    certificate.write_text(_pem("server", sans, NOW, 30))
    assert console_url_host(bind_host, [certificate]) == expected
    assert console_url_host(bind_host, []) == bind_host  # no certificate configured


def test_host_allowlist_is_certificate_names_bound_address_and_loopback_names() -> None:
    on_loopback = allowed_hosts("127.0.0.1", ["localhost", "EST.example"])
    assert on_loopback == {"localhost", "127.0.0.1", "::1", "est.example"}
    elsewhere = allowed_hosts("[2001:db8::7]", ["est.example"])
    assert elsewhere == {"2001:db8::7", "est.example"}
    assert "localhost" not in elsewhere  # does not listen there: nothing to reach it by


def test_sessions_expire_when_idle() -> None:
    store = auth.SessionStore(idle_seconds=10, max_seconds=100)
    from estkit.console.admin_ca import Operator

    session = store.create(Operator("a", "token"), now=0)
    assert store.get(session.id, now=5) is session
    assert store.get(session.id, now=14) is session  # idle clock restarted at 5
    assert store.get(session.id, now=30) is None
    assert store.get(None) is None


def test_csrf_tokens_are_bound_to_the_caller() -> None:
    guard = auth.CsrfGuard.create()
    token = guard.token_for("session:one")
    assert guard.check("session:one", token)
    assert not guard.check("session:two", token)
    assert not guard.check("session:one", None)
    assert not auth.CsrfGuard.create().check("session:one", token)
