"""The console's request pipeline, in order: security headers on every response; the Host must
be one of ours (DNS rebinding); the caller must be an operator (certificate or session), else
401; a state change must come from the console's own origin with the caller's CSRF token.
"""

from __future__ import annotations

from aiohttp import web
from cryptography import x509

from estkit.ca.store import StoreError
from estkit.console import auth
from estkit.console.admin_ca import Operator, OperatorCertificateError, verify_operator_certificate
from estkit.console.context import (
    ALLOWED_HOSTS_KEY,
    CSRF_KEY,
    MAX_FORM_BYTES,
    OPERATOR_RKEY,
    OPERATORS_CA_KEY,
    SECURITY_HEADERS,
    SESSION_RKEY,
    SESSIONS_KEY,
    Handler,
    backend_of,
    csrf_binding,
    logger,
    message,
    operator_of,
    wants_live,
)

# Paths that work without an operator: only the sign-in itself.
PUBLIC_PATHS = frozenset({"/login"})


def _host_without_port(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.find("]")].lower() if "]" in host else host.lower()
    return host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower()


def _peer_certificate(request: web.Request) -> x509.Certificate | None:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        return None


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        # Redirects and aiohttp's own 404/405 get the same headers as pages.
        for name, value in SECURITY_HEADERS.items():
            exc.headers.setdefault(name, value)
        raise
    except Exception:
        # Expected failures are handled where they happen; anything else is a bug, logged with
        # its traceback here and shown to the operator as one line.
        logger.exception("console request %s %s failed", request.method, request.path)
        response = message(
            "Something went wrong",
            "The console could not complete this request; the server log has the details.",
            500,
        )
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@web.middleware
async def host_check(request: web.Request, handler: Handler) -> web.StreamResponse:
    host = _host_without_port(request.host or "")
    if host not in request.app[ALLOWED_HOSTS_KEY]:
        return message(
            "Unknown host name",
            f"This console does not answer to the host name {host!r}. Use the URL printed when "
            "the console started.",
            421,
        )
    return await handler(request)


async def _operator_certificate_problem(request: web.Request, operator: Operator) -> str | None:
    """Why a chain-valid operator certificate is still refused: not recorded by `admin-cert`, or
    revoked. Looked up on every request, so a revocation takes effect at once."""
    fingerprint = operator.fingerprint or ""
    try:
        record = await backend_of(request).run(
            lambda store: store.get_operator_certificate(fingerprint=fingerprint)
        )
    except StoreError as exc:
        return f"the certificate store cannot be read to check this certificate: {exc}"
    if record is None:
        # Flag kept: a browser shows this to an operator, who needs the command to type.
        return (
            "this operator certificate is not recorded by this server (it predates recording, "
            f"or was made elsewhere); issue a new one with 'estkit server admin-cert DIR "
            f"{operator.name} --force'"
        )
    if record.status == "revoked":
        when = f" on {record.revoked_at:%Y-%m-%d %H:%M} UTC" if record.revoked_at else ""
        return f"this operator certificate (serial {record.serial}) was revoked{when}"
    return None


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    operator: Operator | None = None
    session: auth.Session | None = None
    cert = _peer_certificate(request)
    if cert is not None:
        try:
            operator = verify_operator_certificate(cert, request.app[OPERATORS_CA_KEY])
        except OperatorCertificateError as exc:
            return message("Certificate not accepted", str(exc), 403)
        problem = await _operator_certificate_problem(request, operator)
        if problem is not None:
            logger.warning(
                "console refused operator certificate %s (%s) from %s: %s",
                operator.fingerprint,
                operator.name,
                request.remote,
                problem,
            )
            return message("Certificate not accepted", problem, 403)
    if operator is None:
        session = request.app[SESSIONS_KEY].get(request.cookies.get(auth.SESSION_COOKIE))
        if session is not None:
            operator = session.operator
    if operator is None:
        if request.path in PUBLIC_PATHS:
            return await handler(request)
        if wants_live(request):
            return web.json_response({"error": "sign-in required"}, status=401)
        return message(
            "Sign-in required",
            "Present an operator certificate (estkit server admin-cert DIR NAME) or open the "
            "login URL printed when the console started.",
            401,
        )
    request[OPERATOR_RKEY] = operator
    request[SESSION_RKEY] = session
    return await handler(request)


@web.middleware
async def csrf_protect(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method in ("GET", "HEAD") or OPERATOR_RKEY not in request:
        return await handler(request)
    # The origin the request was addressed to: its Host already passed host_check, so this is
    # the certificate's name (the console's URL) or the bound address, never an attacker's name.
    # A page on another origin (another port of localhost included) sends its own Origin.
    expected_origin = f"https://{request.host}"
    problem = auth.origin_problem(
        request.headers.get("Origin"), request.headers.get("Referer"), expected_origin
    )
    if problem is None:
        if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
            return message("Request too large", "The form is larger than any console form.", 413)
        form = await request.post()
        presented = form.get(auth.CSRF_FIELD) or request.headers.get(auth.CSRF_HEADER)
        binding = csrf_binding(request)
        if not request.app[CSRF_KEY].check(
            binding, presented if isinstance(presented, str) else None
        ):
            problem = "the form's CSRF token is missing or does not belong to this sign-in"
    if problem is not None:
        operator = operator_of(request)
        logger.warning(
            "console refused %s %s from %s: %s",
            request.method,
            request.path,
            operator.name,
            problem,
        )
        await backend_of(request).log(
            f"console refused {request.method} {request.path}: {problem}",
            operator,
            reason=problem,
            path=request.path,
            peer=request.remote,
        )
        return message(
            "Request refused",
            f"Cross-site request protection: {problem}. Reload the console page and try again.",
            403,
        )
    return await handler(request)


MIDDLEWARES = (security_headers, host_check, authenticate, csrf_protect)
