"""How the console is started: inside a running event loop (what ``estkit server serve
--admin-port`` mounts), from the ``[console]`` config table, and the errors a person sees."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import httpx
import pytest

from estkit.console import ConsoleStartError, console_settings, start_console, start_console_site

from .helpers import ConsoleEnv, csrf_from


async def test_console_site_runs_inside_an_existing_event_loop(console_env: ConsoleEnv) -> None:
    site = await start_console_site(console_env.data_dir, host="127.0.0.1", port=0)
    try:
        # Listens on the address, but is named as its certificate names it (no IP SANs, T4).
        assert (site.host, site.hostname) == ("127.0.0.1", "localhost")
        assert site.port != 0 and site.url == f"https://localhost:{site.port}"
        trust = ssl.create_default_context(cafile=console_env.ca_file)
        async with httpx.AsyncClient(verify=trust, follow_redirects=True) as client:
            assert (await client.get(site.url + "/")).status_code == 401
            assert (await client.get(site.login_url)).status_code == 200
            page = await client.get(site.url + "/ca")
            assert page.status_code == 200
            assert "Certificate revocation list" in page.text
            # A token from this console is no key to another console instance.
            other = await client.get(console_env.console.url + "/login?token=" + site.token)
            assert other.status_code == 403
    finally:
        await site.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(site.url + "/", verify=False, timeout=5)


def test_live_refresh_sends_html_only_when_the_region_changed(console_env: ConsoleEnv) -> None:
    with console_env.signed_in_client() as client:
        live = {"X-Console-Live": "1"}
        first = client.get(console_env.console.url + "/requests", headers=live).json()
        assert "<table" in first["html"] or "No request is waiting" in first["html"]
        same = client.get(
            console_env.console.url + "/requests",
            headers={**live, "X-Console-Digest": first["digest"]},
        ).json()
        assert same == {"digest": first["digest"], "pending": first["pending"]}
        page = client.get(console_env.console.url + "/requests").text
        assert f'data-digest="{first["digest"]}"' in page
        assert csrf_from(page)


def test_console_settings_come_from_the_console_table(tmp_path: Path) -> None:
    config = tmp_path / "estkit.toml"
    assert console_settings(tmp_path).enabled is False  # no file: off
    config.write_text("[server]\nport = 8443\n\n[console]\nenabled = true\nport = 9444\n")
    settings = console_settings(tmp_path)
    assert (settings.enabled, settings.host, settings.port) == (True, "127.0.0.1", 9444)
    config.write_text('[console]\nport = "high"\n')
    with pytest.raises(ConsoleStartError, match=r"console\.port must be 0-65535"):
        console_settings(tmp_path)


def test_busy_port_is_reported_with_a_hint(console_env: ConsoleEnv) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConsoleStartError, match=r"cannot listen on 127\.0\.0\.1"):
            start_console(console_env.data_dir, port=port).stop()
