"""Console pages and `estkit server certs` / `server requests` on a big store (issue 14 item 4):
5,000 certificates, 20,000 refusal events and 120 pending requests. Each page shows at most one
page of rows and a "more" link to the next; the CLI prints one page and where the next starts,
and its --json carries the paging facts. Real console over HTTPS on loopback, real CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from ca.bulk_store import CERTIFICATES, PENDING, SAME_REFUSALS, fill
from estkit.ca.store import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from estkit.cli.main import cli
from estkit.console.model import MAX_DASHBOARD_ROWS, PAGE_SIZE, RECENT_DECISIONS

from .helpers import ConsoleEnv, start_console_env

CERT_ROW = re.compile(r'<tr id="cert-([0-9a-f]+)"')
REQUEST_ROW = re.compile(r'<tr id="request-(\d+)"')
NEXT_LINK = re.compile(r'<a href="([^"]+)" rel="next" class="btn link more">more: next (\d+)')


@pytest.fixture(scope="module")
def big_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleEnv]:
    env = start_console_env(tmp_path_factory.mktemp("big-console") / "data")
    try:
        with env.store() as store:
            fill(store)
        yield env
    finally:
        env.stop()


def _unescape(href: str) -> str:
    return href.replace("&amp;", "&")


def test_the_certificates_page_shows_one_page_and_a_more_link(big_env: ConsoleEnv) -> None:
    with big_env.signed_in_client() as client:
        first = client.get(big_env.console.url + "/certificates")
        assert first.status_code == 200
        serials = CERT_ROW.findall(first.text)
        assert len(serials) == PAGE_SIZE
        # Newest first: the last certificate recorded is the first row.
        assert serials[0] == format(0x1000 + CERTIFICATES, "x")
        assert f"{CERTIFICATES} of {CERTIFICATES} certificates match" in first.text
        assert f"certificates 1–{PAGE_SIZE} of {CERTIFICATES}" in first.text
        href, count = NEXT_LINK.search(first.text).groups()  # type: ignore[union-attr]
        assert (href, int(count)) == ("/certificates?page=2", PAGE_SIZE)
        second = client.get(big_env.console.url + href)
        more = CERT_ROW.findall(second.text)
        assert len(more) == PAGE_SIZE and not set(more) & set(serials)
        assert int(more[0], 16) == int(serials[-1], 16) - 1  # continues where page 1 ended
        assert 'rel="prev"' in second.text
        # Filters survive paging; the last page has no "more".
        revoked = client.get(big_env.console.url + "/certificates?status=revoked&page=2")
        rows = CERT_ROW.findall(revoked.text)
        assert len(rows) == 100 - PAGE_SIZE and 'data-status="revoked"' in revoked.text
        assert 'rel="next"' not in revoked.text
        assert 'href="/certificates?status=revoked"' in revoked.text  # back to page 1
        # A hostile page number is a page, not an error or a scan of everything.
        hostile = client.get(big_env.console.url + "/certificates?page=" + "9" * 5000)
        assert hostile.status_code == 200 and len(CERT_ROW.findall(hostile.text)) == PAGE_SIZE
        beyond = client.get(big_env.console.url + "/certificates?page=20000")
        assert beyond.status_code == 200 and CERT_ROW.findall(beyond.text) == []
        assert f"page 20000 is past the last of the {CERTIFICATES} certificates" in beyond.text
        assert '<a href="/certificates" rel="first"' in beyond.text
        # The live refresh answers with the same bounded region.
        live = client.get(
            big_env.console.url + "/certificates?page=2", headers={"X-Console-Live": "1"}
        )
        assert CERT_ROW.findall(live.json()["html"]) == more


def test_the_requests_page_shows_one_page_of_the_queue(big_env: ConsoleEnv) -> None:
    with big_env.signed_in_client() as client:
        first = client.get(big_env.console.url + "/requests")
        ids = [int(i) for i in REQUEST_ROW.findall(first.text)]
        assert len(ids) == PAGE_SIZE and ids == sorted(ids, reverse=True)
        assert f'<span class="count">{PENDING}</span>' in first.text  # the whole queue's size
        href, _ = NEXT_LINK.search(first.text).groups()  # type: ignore[union-attr]
        assert href == "/requests?page=2"
        last = client.get(big_env.console.url + "/requests?page=3")
        rest = [int(i) for i in REQUEST_ROW.findall(last.text)]
        assert len(rest) == PENDING - 2 * PAGE_SIZE and max(rest) < min(ids)
        assert 'rel="next"' not in last.text
        # The badge counts every pending request, not the page.
        assert f'aria-label="{PENDING} pending"' in last.text
        assert RECENT_DECISIONS < PAGE_SIZE


def test_the_dashboard_shows_bounded_tables_with_exact_counts(big_env: ConsoleEnv) -> None:
    with big_env.signed_in_client() as client:
        page = client.get(big_env.console.url + "/")
    assert page.status_code == 200
    html = page.text
    refusals = html.split("Refusals by reason")[1].split("</section>")[0]
    assert refusals.count("<tr>") <= MAX_DASHBOARD_ROWS + 1  # header + at most 10 reasons
    assert "401 · client certificate required" in refusals
    assert f"<strong>{SAME_REFUSALS}</strong>" in refusals  # counted by the database
    activity = html.split("Recent activity")[1].split("</section>")[0]
    assert 0 < activity.count("<tr>") <= MAX_DASHBOARD_ROWS + 1
    assert "client certificate required" not in activity  # refusals are counted, not listed


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["server", *args], env={"COLUMNS": "250"})
    return result.exit_code, result.output


def test_server_certs_lists_one_page_newest_first(big_env: ConsoleEnv) -> None:
    data = str(big_env.data_dir)
    code, out = _cli("certs", data, "--json")
    assert code == 0, out
    listing = json.loads(out)
    assert len(listing["certificates"]) == DEFAULT_PAGE_SIZE
    assert listing["certificates"][0]["serial"] == format(0x1000 + CERTIFICATES, "x")
    assert {key: listing[key] for key in ("total", "offset", "limit", "returned")} == {
        "total": CERTIFICATES,
        "offset": 0,
        "limit": DEFAULT_PAGE_SIZE,
        "returned": DEFAULT_PAGE_SIZE,
    }
    assert listing["next_offset"] == DEFAULT_PAGE_SIZE
    code, out = _cli("certs", data, "--json", "--status", "revoked", "--offset", "90")
    tail = json.loads(out)
    assert (tail["total"], tail["returned"], tail["next_offset"]) == (100, 10, None)
    code, out = _cli("certs", data, "--limit", "5", "--offset", "10")
    assert code == 0, out
    assert f"{CERTIFICATES} issued certificate(s), newest first: 11–15" in out
    assert f"{CERTIFICATES - 15} more: estkit server certs {data} --limit 5 --offset 15" in out
    assert out.count("simpleenroll") == 5
    for bad, message in (("0", "0 is not in the range"), (str(MAX_PAGE_SIZE + 1), "1<=x<=500")):
        code, out = _cli("certs", data, "--limit", bad)
        assert code == 2 and "--limit" in out and message in out, out


def test_server_requests_lists_one_page_newest_first(big_env: ConsoleEnv) -> None:
    data = str(big_env.data_dir)
    code, out = _cli("requests", data, "--json", "--limit", "7")
    assert code == 0, out
    listing = json.loads(out)
    ids = [request["id"] for request in listing["requests"]]
    assert len(ids) == 7 and ids == sorted(ids, reverse=True)
    assert (listing["total"], listing["next_offset"]) == (PENDING, 7)
    assert listing["requests"][0]["policy_now"] is not None  # judged, on this page only
    code, out = _cli("requests", data, "--limit", "2")
    assert code == 0, out
    assert out.count("request ") >= 2 and f"{PENDING} pending request(s), newest first: 1–2" in out
    assert f"{PENDING - 2} more: estkit server requests {data} --status pending --limit 2" in out
    code, out = _cli("requests", data, "--json", "--offset", str(PENDING))
    assert json.loads(out)["requests"] == []
    code, out = _cli("requests", data, "--offset", str(PENDING))
    assert code == 0 and f"no pending requests from offset {PENDING} ({PENDING} in all)" in out


def test_the_fill_is_what_the_figures_assume(big_env: ConsoleEnv) -> None:
    """Guards the fixture: the counts above come from the store as filled."""
    with big_env.store() as store:
        assert store.issued_page(limit=1).total == CERTIFICATES
        assert store.count_requests("pending") == PENDING
    assert Path(big_env.data_dir).is_dir()
