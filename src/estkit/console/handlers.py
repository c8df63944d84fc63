"""The console's pages, actions and downloads (aiohttp handlers).

Reads and actions go through :class:`~estkit.console.backend.ConsoleBackend`; HTML comes from
:mod:`~estkit.console.views`. A page asked for with the live header answers with its live region
as JSON (digest, HTML, pending count) for the page script to swap in.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estkit.ca.crl import parse_serial, serial_to_hex
from estkit.console import auth
from estkit.console.admin_ca import Operator, OperatorCertificateError, validate_operator_name
from estkit.console.backend import CaOverview, ConsoleActionError
from estkit.console.context import (
    CLOCK_KEY,
    OPERATOR_RKEY,
    OPERATORS_CA_KEY,
    POLL_KEY,
    SESSIONS_KEY,
    backend_of,
    csrf_token,
    html_response,
    logger,
    message,
    now,
    operator_of,
    session_of,
    wants_live,
)
from estkit.console.html import Html, tag
from estkit.console.model import CertificateQuery, cert_rows, page_number
from estkit.console.views import (
    PageContext,
    ca_content,
    certificates_content,
    dashboard_content,
    digest_of,
    message_page,
    notice_box,
    page,
    requests_content,
)

MAX_NOTE_LENGTH = 200
LIVE_DIGEST_HEADER = "X-Console-Digest"
STATIC_FILES = {
    "console.css": "text/css",
    "console.js": "text/javascript",
}
# What the requests page says after an action (fixed texts: nothing from the URL is echoed).
REQUEST_NOTICES = {
    "approved": "Request #{id} approved: the device receives its certificate on its next retry.",
    "rejected": "Request #{id} rejected.",
}


async def _respond(
    request: web.Request, title: str, active: str, content: Html, pending: int, notice: Html | None
) -> web.Response:
    if wants_live(request):
        digest = digest_of(content)
        answer: dict[str, Any] = {"digest": digest, "pending": pending}
        # The page sends the digest it shows; an unchanged region costs no HTML on the wire.
        if request.headers.get(LIVE_DIGEST_HEADER) != digest:
            answer["html"] = str(content)
        return web.json_response(answer)
    ctx = PageContext(
        operator=operator_of(request),
        csrf_token=csrf_token(request),
        pending_count=pending,
        poll_ms=request.app[POLL_KEY],
        data_dir=str(backend_of(request).data_dir),
        can_logout=session_of(request) is not None,
    )
    return html_response(page(title, active, content, ctx, notice))


# -- sign-in ------------------------------------------------------------------------------------


async def login(request: web.Request) -> web.StreamResponse:
    presented = request.query.get("token")
    if OPERATOR_RKEY in request and not presented:
        raise web.HTTPSeeOther("/")
    if not presented:
        # Flag kept: the sign-in page must say which command makes a sign-in URL.
        return message(
            "Sign-in required",
            "Open a sign-in URL from 'estkit server console-login DIR --operator NAME', or "
            "present an operator certificate.",
            401,
        )
    name = request.query.get("operator") or auth.DEFAULT_TOKEN_OPERATOR
    try:
        validate_operator_name(name)
    except OperatorCertificateError as exc:
        return message("Sign-in refused", str(exc), 400)
    label = auth.token_label(presented)
    digest = auth.token_digest(presented)
    at = request.app[CLOCK_KEY]()
    problem = await backend_of(request).run(
        lambda store: store.use_console_token(digest, name, now=at)
    )
    if problem is not None:
        # The token is named by a prefix of its hash only (never logged whole).
        logger.warning(
            "console sign-in refused for %s from %s (token %s): %s",
            name,
            request.remote,
            label,
            problem,
        )
        await backend_of(request).log(
            f"console sign-in refused: {problem}",
            None,
            reason=problem,
            operator_named=name,
            token=label,
            peer=request.remote,
        )
        return message("Sign-in refused", f"{problem[0].upper()}{problem[1:]}.", 403)
    operator = Operator(name=name, method="token")
    session = request.app[SESSIONS_KEY].create(operator)
    await backend_of(request).log(
        f"{name} signed in to the web console with a sign-in token",
        operator,
        token=label,
        peer=request.remote,
    )
    # A meta refresh rather than a redirect: the follow-up request is then same-site, so the
    # SameSite=Strict cookie goes with it even when the link was opened from a terminal.
    response = html_response(
        message_page(
            "Signed in",
            f"Signed in as {name}. Opening the console…",
            extra=tag("p", tag("a", "Open the console", href="/")),
            head=Html('<meta http-equiv="refresh" content="0;url=/">'),
        )
    )
    response.set_cookie(
        auth.SESSION_COOKIE,
        session.id,
        httponly=True,
        secure=True,
        samesite="Strict",
        path="/",
    )
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    session = session_of(request)
    if session is not None:
        request.app[SESSIONS_KEY].drop(session.id)
    response = message("Signed out", "You are signed out of the estkit console.", 200)
    response.del_cookie(auth.SESSION_COOKIE, path="/")
    return response


# -- pages --------------------------------------------------------------------------------------


async def dashboard(request: web.Request) -> web.Response:
    backend = backend_of(request)
    current = now()
    stats = await backend.run(lambda store: backend.read_dashboard(store, current))
    return await _respond(
        request, "Dashboard", "dashboard", dashboard_content(stats, current), stats.pending, None
    )


async def requests_page(request: web.Request) -> web.Response:
    backend = backend_of(request)
    page = page_number(request.query)

    def read(store: Any) -> tuple[Any, list[Any], dict[int, Any]]:
        pending = backend.read_pending_page(store, page)
        # Policy is judged for the requests on this page only (at most a page's worth).
        verdicts = backend.verdicts(store, pending.items)
        return pending, backend.read_recent_decisions(store), verdicts

    pending, decided, verdicts = await backend.run(read)
    notice = None
    done = request.query.get("done")
    if done in REQUEST_NOTICES and request.query.get("id", "").isdigit():
        notice = notice_box(REQUEST_NOTICES[done].format(id=int(request.query["id"])))
    content = requests_content(pending, decided, now(), csrf_token(request), verdicts, page)
    return await _respond(request, "Requests", "requests", content, pending.total, notice)


async def certificates_page(request: web.Request) -> web.Response:
    backend = backend_of(request)
    query = CertificateQuery.from_params(request.query)
    current = now()

    def read(store: Any) -> tuple[Any, int]:
        return backend.read_certificates(store, query, current), backend.read_pending_count(store)

    view, pending = await backend.run(read)
    notice = None
    if request.query.get("done") == "revoked":
        serial = _safe_serial(request.query.get("serial", ""))
        if serial:
            notice = notice_box(
                f"Certificate {serial} revoked; the CRL was regenerated and lists it."
            )
    content = certificates_content(
        cert_rows(view.page.items, current),
        view.page,
        view.total_in_store,
        query,
        view.labels,
        view.key_types,
        current,
        csrf_token(request),
    )
    return await _respond(request, "Certificates", "certificates", content, pending, notice)


async def ca_page(request: web.Request) -> web.Response:
    backend = backend_of(request)

    def read(store: Any) -> tuple[int, CaOverview]:
        return backend.read_pending_count(store), backend.ca_overview(store)

    pending, overview = await backend.run(read)
    content = ca_content(overview, now(), request.app[OPERATORS_CA_KEY])
    return await _respond(request, "Certificate authority", "ca", content, pending, None)


# -- actions ------------------------------------------------------------------------------------


def _safe_serial(text: str) -> str | None:
    try:
        return serial_to_hex(parse_serial(text))
    except ValueError:
        return None


async def decide_request(request: web.Request) -> web.StreamResponse:
    approve = request.match_info["action"] == "approve"
    request_id = int(request.match_info["id"])
    form = await request.post()
    note = str(form.get("note", "")).strip()[:MAX_NOTE_LENGTH]
    try:
        await backend_of(request).decide(request_id, approve, operator_of(request), note)
    except ConsoleActionError as exc:
        return message("Not done", str(exc), 409, _back_link("/requests", "Back to requests"))
    done = "approved" if approve else "rejected"
    raise web.HTTPSeeOther(f"/requests?done={done}&id={request_id}")


async def revoke_certificate(request: web.Request) -> web.StreamResponse:
    serial = _safe_serial(request.match_info["serial"])
    if serial is None:
        raise web.HTTPNotFound()
    form = await request.post()
    reason = str(form.get("reason", "unspecified"))
    try:
        await backend_of(request).revoke(serial, reason, operator_of(request))
    except ConsoleActionError as exc:
        return message(
            "Not done", str(exc), 409, _back_link("/certificates", "Back to certificates")
        )
    raise web.HTTPSeeOther(f"/certificates?done=revoked&serial={serial}")


def _back_link(href: str, text: str) -> Html:
    return tag("p", tag("a", text, href=href))


# -- downloads ----------------------------------------------------------------------------------


def _download(data: bytes, filename: str, content_type: str) -> web.Response:
    return web.Response(
        body=data,
        content_type=content_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def download_certificate(request: web.Request) -> web.Response:
    serial = _safe_serial(request.match_info["serial"])
    if serial is None:
        raise web.HTTPNotFound()
    backend = backend_of(request)
    record = await backend.run(lambda store: store.get_issued(serial))
    if record is None:
        return message("Not found", f"No certificate with serial {serial} was issued here.", 404)
    return _download(record.certificate_pem.encode(), f"{serial}.pem", "application/x-pem-file")


def _pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


async def download_cacerts(request: web.Request) -> web.Response:
    backend = backend_of(request)
    ca = await asyncio.to_thread(backend.load_authority)
    return _download(_pem(list(ca.cacerts)), "cacerts.pem", "application/x-pem-file")


async def download_ca_certificate(request: web.Request) -> web.Response:
    backend = backend_of(request)
    certs = list((await asyncio.to_thread(backend.load_authority)).cacerts)
    index = int(request.match_info["index"])
    if index >= len(certs):
        raise web.HTTPNotFound()
    return _download(_pem([certs[index]]), f"ca-{index}.pem", "application/x-pem-file")


async def download_crl(request: web.Request) -> web.Response:
    backend = backend_of(request)
    overview = await backend.run(backend.ca_overview)
    if overview.crl is None or overview.crl_der is None:
        return message("CRL unavailable", f"The CRL cannot be built: {overview.crl_error}", 503)
    if request.match_info["fmt"] == "der":
        return _download(overview.crl_der, "crl.der", "application/pkix-crl")
    return _download(
        overview.crl.public_bytes(serialization.Encoding.PEM), "crl.pem", "application/x-pem-file"
    )


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    data = resources.files("estkit.console").joinpath("static", name).read_bytes()
    return web.Response(body=data, content_type=STATIC_FILES[name], charset="utf-8")
