"""AsyncEstClient behaves as EstClient does (issue 3: "identical behaviour").

Both clients share the sans-I/O flows, but each has its own transport; these run the same
scenarios through both against the real estkit server on loopback and compare what came back:
Basic and Digest after a 401, serverkeygen, re-enrollment, /csrattrs, and the errors for an
unknown label and an untrusted server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from estkit.client import (
    AsyncEstClient,
    ClientCredentials,
    CsrSpec,
    EstClient,
    EstNotFoundError,
    EstTlsError,
)
from estkit.protocol import common_name, dns_names, generate_private_key, public_keys_equal

from .pki import QuirkyPki

HTTP_USER, HTTP_PASSWORD = "alice", "wonderland"


def _device(server: Any) -> ClientCredentials:
    return ClientCredentials.from_files(server.paths.device_certificate, server.paths.device_key)


def _spec(name: str) -> CsrSpec:
    return CsrSpec(key=generate_private_key("p256"), common_name=name, dns_names=(name,))


async def _both(
    server: Any,
    scenario_sync: Callable[[EstClient], Any],
    scenario_async: Callable[[AsyncEstClient], Awaitable[Any]],
    **options: Any,
) -> tuple[Any, Any]:
    options.setdefault("trust", server.paths.ca_certificates)
    with EstClient(server.url, **options) as client:
        sync_result = scenario_sync(client)
    async with AsyncEstClient(server.url, **options) as aclient:
        async_result = await scenario_async(aclient)
    return sync_result, async_result


@pytest.mark.parametrize("scheme", ["basic", "digest"])
async def test_http_auth_after_a_challenge(estkit_server: Any, scheme: str) -> None:
    options = {
        "label": "http",
        "username": HTTP_USER,
        "password": HTTP_PASSWORD,
        "auth_scheme": scheme,
    }
    with EstClient(estkit_server.url, trust=estkit_server.paths.ca_certificates, **options) as c:
        sync_result = c.simpleenroll(_spec(f"sync-{scheme}.example"), pop=False)
        sync_answered = c._auth.answered if c._auth else None
    async with AsyncEstClient(
        estkit_server.url, trust=estkit_server.paths.ca_certificates, **options
    ) as a:
        async_result = await a.simpleenroll(_spec(f"async-{scheme}.example"), pop=False)
        async_answered = a._auth.answered if a._auth else None
    assert sync_answered == async_answered == scheme
    assert common_name(sync_result.certificate) == f"sync-{scheme}.example"
    assert common_name(async_result.certificate) == f"async-{scheme}.example"
    # The server recorded both as issued to the HTTP user, not to a certificate.
    records = estkit_server.open_store().list_issued(label="http")
    names = {r.subject: r.requester for r in records}
    assert (
        names[f"CN=sync-{scheme}.example"]
        == names[f"CN=async-{scheme}.example"]
        == (f"user:{HTTP_USER}")
    )


async def test_serverkeygen_and_reenroll(estkit_server: Any) -> None:
    def sync(client: EstClient) -> Any:
        generated = client.serverkeygen(common_name="kg-sync.example")
        return generated, client.csrattrs()

    async def run_async(client: AsyncEstClient) -> Any:
        generated = await client.serverkeygen(common_name="kg-async.example")
        return generated, await client.csrattrs()

    (sync_gen, sync_attrs), (async_gen, async_attrs) = await _both(
        estkit_server, sync, run_async, credentials=_device(estkit_server)
    )
    for generated in (sync_gen, async_gen):
        assert public_keys_equal(
            generated.certificate.public_key(), generated.private_key.public_key()
        )
        assert not generated.key_was_encrypted
    assert dns_names(sync_gen.certificate) == ["kg-sync.example"]
    assert dns_names(async_gen.certificate) == ["kg-async.example"]
    assert sync_attrs.attrs == async_attrs.attrs

    # Re-enroll each generated certificate with the async client, presenting it.
    renewed = []
    for generated in (sync_gen, async_gen):
        credentials = ClientCredentials(
            chain=(generated.certificate, *generated.chain), key=generated.private_key
        )
        async with AsyncEstClient(
            estkit_server.url, trust=estkit_server.paths.ca_certificates, credentials=credentials
        ) as client:
            renewed.append(await client.simplereenroll())
    for before, after in zip((sync_gen, async_gen), renewed, strict=True):
        assert after.certificate.subject == before.certificate.subject
        assert after.certificate.serial_number != before.certificate.serial_number


async def test_unknown_label_is_the_same_error(estkit_server: Any) -> None:
    def sync(client: EstClient) -> Any:
        with pytest.raises(EstNotFoundError) as caught:
            client.simpleenroll(_spec("lost.example"), pop=False)
        return caught.value

    async def run_async(client: AsyncEstClient) -> Any:
        with pytest.raises(EstNotFoundError) as caught:
            await client.simpleenroll(_spec("lost.example"), pop=False)
        return caught.value

    sync_error, async_error = await _both(
        estkit_server, sync, run_async, label="nosuch", credentials=_device(estkit_server)
    )
    assert sync_error.status == async_error.status == 404
    assert "unknown EST label 'nosuch'" in sync_error.server_text
    assert sync_error.server_text == async_error.server_text


async def test_untrusted_server_is_the_same_tls_error(estkit_server: Any, pki: QuirkyPki) -> None:
    def sync(client: EstClient) -> Any:
        with pytest.raises(EstTlsError) as caught:
            client.cacerts()
        return caught.value

    async def run_async(client: AsyncEstClient) -> Any:
        with pytest.raises(EstTlsError) as caught:
            await client.cacerts()
        return caught.value

    sync_error, async_error = await _both(estkit_server, sync, run_async, trust=pki.files["root"])
    assert "could not verify the TLS certificate" in str(sync_error)
    assert type(sync_error) is type(async_error)
    assert sync_error.hint == async_error.hint
