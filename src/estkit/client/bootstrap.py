"""Bootstrap: fetch ``/cacerts`` from a server that cannot be verified yet (RFC 7030 §4.1.1).

Why a module of its own, with long names: this is the one place where the client talks to a
server without checking its certificate (checklist E13, BCP-003-03 C4). Like ``cryptography``'s
``hazmat``, it must be impossible to reach by accident:

* :func:`bootstrap_cacerts` requires the expected SHA-256 fingerprint and returns only the
  certificates that the fingerprint vouches for;
* :func:`fetch_cacerts_unverified_for_manual_confirmation` returns an
  :class:`UnconfirmedCaCertificates`, which exposes nothing usable as trust until a person has
  looked at the fingerprints and called :meth:`UnconfirmedCaCertificates.confirm`.

On that unverified connection nothing but ``GET /cacerts`` is sent: no client certificate, no
HTTP credentials, no CSR.

Which certificates a fingerprint vouches for: the certificate it matches (root, intermediate or
rollover certificate — the result says which), every certificate in the response that was signed,
directly or through others, by a key it certifies, and a self-signed root whose key signed it.
Anything else in the response is dropped with a warning: an attacker in the middle can append
their own root to a genuine response but cannot make it chain to the genuine key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estkit.protocol import (
    classify_ca_certificates,
    fingerprint_matches,
    is_self_signed,
    is_signed_by,
    parse_fingerprint,
    sha256_fingerprint,
)

from . import flows
from ._transport import DEFAULT_TIMEOUT_SECONDS, http_client_options
from .driver import drive, drive_async, send_request, send_request_async
from .endpoint import EstEndpoint
from .errors import EstBootstrapError
from .models import CaCertsResult
from .responses import Reply
from .retry import AsyncSleep, RetryPolicy, Sleep, WaitCallback, utc_now
from .trust import build_unverified_ssl_context

_UNVERIFIED = "no verification (bootstrap)"


def _settings(
    url: str, label: str | None, retry: RetryPolicy | None, clock: Callable[[], datetime]
) -> flows.FlowSettings:
    return flows.FlowSettings(
        endpoint=EstEndpoint.parse(url, label), retry=retry or RetryPolicy(), clock=clock
    )


def _fetch_sync(
    settings: flows.FlowSettings, timeout: float, sleep: Sleep, on_wait: WaitCallback | None
) -> CaCertsResult:
    context = build_unverified_ssl_context()
    with httpx.Client(verify=context, **http_client_options(timeout)) as http:
        # No auth object: credentials are never offered to an unverified server.
        return drive(
            flows.cacerts_flow(settings),
            lambda action: send_request(http, action.request, None, _UNVERIFIED),
            sleep,
            on_wait,
        )


async def _fetch_async(
    settings: flows.FlowSettings, timeout: float, sleep: AsyncSleep, on_wait: WaitCallback | None
) -> CaCertsResult:
    context = build_unverified_ssl_context()
    async with httpx.AsyncClient(verify=context, **http_client_options(timeout)) as http:

        async def send(action: flows.Send) -> Reply:
            return await send_request_async(http, action.request, None, _UNVERIFIED)

        return await drive_async(flows.cacerts_flow(settings), send, sleep, on_wait)


# --- which certificates a confirmed one vouches for --------------------------------------------


def vouched_certificates(
    anchor: x509.Certificate, certificates: list[x509.Certificate]
) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """``(trusted, ignored)``: what ``anchor`` vouches for among ``certificates`` (see module doc).

    Order of ``certificates`` is kept in both lists.
    """
    trusted_ids = {id(cert) for cert in certificates if cert == anchor}
    trusted = [anchor]
    # A self-signed root whose key signed the anchor: made by the holder of that key.
    for cert in certificates:
        if id(cert) not in trusted_ids and is_self_signed(cert) and is_signed_by(anchor, cert):
            trusted_ids.add(id(cert))
            trusted.append(cert)
    # Everything signed (transitively) by a key that a trusted certificate certifies.
    changed = True
    while changed:
        changed = False
        for cert in certificates:
            if id(cert) in trusted_ids:
                continue
            if any(is_signed_by(cert, issuer) for issuer in trusted):
                trusted_ids.add(id(cert))
                trusted.append(cert)
                changed = True
    ordered = [cert for cert in certificates if id(cert) in trusted_ids]
    if anchor not in ordered:
        ordered.insert(0, anchor)
    ignored = [cert for cert in certificates if id(cert) not in trusted_ids]
    return ordered, ignored


def _role(result: CaCertsResult, cert: x509.Certificate) -> str:
    ca_set = result.ca_set
    for name, value in (
        ("OldWithNew rollover certificate", ca_set.old_with_new),
        ("NewWithOld rollover certificate", ca_set.new_with_old),
    ):
        if value is not None and value == cert:
            return name
    if ca_set.in_rollover:
        if cert == ca_set.new_with_new:
            return "current root CA (NewWithNew)"
        if cert == ca_set.old_with_old:
            return "old root CA (OldWithOld)"
    if cert in ca_set.roots:
        return "current root CA" if cert == ca_set.current_root else "root CA"
    return "intermediate CA"


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _confirmed(result: CaCertsResult, matched: x509.Certificate, how: str) -> CaCertsResult:
    trusted, ignored = vouched_certificates(matched, result.certificates)
    warnings = list(result.warnings)
    warnings.append(f"{how} matched the {_role(result, matched)} {_subject(matched)}")
    for cert in ignored:
        warnings.append(
            f"ignored {_subject(cert)} "
            f"({sha256_fingerprint(cert)}): it does not chain to the confirmed certificate"
        )
    return CaCertsResult(
        certificates=trusted,
        ca_set=classify_ca_certificates(trusted),
        warnings=warnings,
        body_form=result.body_form,
        matched=matched,
    )


def check_fingerprint(result: CaCertsResult, expected_fingerprint: str, url: str) -> CaCertsResult:
    """What ``expected_fingerprint`` vouches for in ``result``; raises :class:`EstBootstrapError`
    when no certificate has it."""
    try:
        parse_fingerprint(expected_fingerprint)
    except ValueError as exc:
        raise EstBootstrapError(str(exc), hint="copy the fingerprint again", url=url) from None
    for cert in result.certificates:
        if fingerprint_matches(cert, expected_fingerprint):
            return _confirmed(result, cert, "the expected fingerprint")
    received = "; ".join(
        f"{_subject(cert)} {sha256_fingerprint(cert)}" for cert in result.certificates
    )
    raise EstBootstrapError(
        f"none of the {len(result.certificates)} CA certificate(s) from {url} has the expected "
        f"fingerprint {expected_fingerprint}; received: {received}",
        hint="nothing was trusted or written: check the fingerprint with the server's operator "
        "(a mismatch can mean someone is intercepting the connection)",
        url=url,
    )


@dataclass(frozen=True)
class CandidateCertificate:
    """A certificate shown to a person for confirmation: who it is and its fingerprint."""

    subject: str
    issuer: str
    role: str
    not_after: datetime
    sha256: str
    fingerprint: str  # sha256:<hex>, the one form estkit shows everywhere (= sha256)
    pem: str


class UnconfirmedCaCertificates:
    """CA certificates fetched WITHOUT verifying the server. Not trusted until confirmed.

    Show :attr:`candidates` (subject, role, fingerprint) to a person; only when they have
    compared the fingerprint with one obtained out of band call :meth:`confirm`, which returns
    the usable :class:`CaCertsResult`. Nothing else on this object can be used as trust.
    """

    def __init__(self, result: CaCertsResult, url: str) -> None:
        self._result = result
        self.url = url
        self.warnings = list(result.warnings)
        self.candidates = [
            CandidateCertificate(
                subject=_subject(cert),
                issuer=cert.issuer.rfc4514_string(),
                role=_role(result, cert),
                not_after=cert.not_valid_after_utc,
                sha256=sha256_fingerprint(cert),
                fingerprint=sha256_fingerprint(cert),
                pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            )
            for cert in result.certificates
        ]

    def __repr__(self) -> str:
        return f"<UnconfirmedCaCertificates from {self.url}: {len(self.candidates)} NOT TRUSTED>"

    def confirm(self, fingerprint: str | None = None) -> CaCertsResult:
        """A person checked the certificates: return them as a usable result.

        With ``fingerprint`` (the one the person checked) only what it vouches for is returned,
        as in :func:`bootstrap_cacerts`; without, every certificate shown is accepted.
        """
        if fingerprint is not None:
            return check_fingerprint(self._result, fingerprint, self.url)
        result = self._result
        return CaCertsResult(
            certificates=list(result.certificates),
            ca_set=result.ca_set,
            warnings=[*result.warnings, "confirmed by a person without a fingerprint check"],
            body_form=result.body_form,
        )


# --- public entry points -------------------------------------------------------------------


def bootstrap_cacerts(
    url: str,
    *,
    expected_fingerprint: str,
    label: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    retry: RetryPolicy | None = None,
    on_wait: WaitCallback | None = None,
    sleep: Sleep = time.sleep,
    clock: Callable[[], datetime] = utc_now,
) -> CaCertsResult:
    """Fetch ``/cacerts`` without verifying the server, keep it only if the fingerprint matches.

    Raises :class:`EstBootstrapError` (nothing trusted) when no returned certificate has
    ``expected_fingerprint``. ``result.matched`` is the certificate that matched.
    """
    settings = _settings(url, label, retry, clock)
    result = _fetch_sync(settings, timeout, sleep, on_wait)
    return check_fingerprint(result, expected_fingerprint, str(settings.endpoint))


def fetch_cacerts_unverified_for_manual_confirmation(
    url: str,
    *,
    label: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    retry: RetryPolicy | None = None,
    sleep: Sleep = time.sleep,
    clock: Callable[[], datetime] = utc_now,
) -> UnconfirmedCaCertificates:
    """Fetch ``/cacerts`` without verifying the server, for a person to confirm (see class)."""
    settings = _settings(url, label, retry, clock)
    result = _fetch_sync(settings, timeout, sleep, None)
    return UnconfirmedCaCertificates(result, str(settings.endpoint))


async def _asyncio_sleep(seconds: float) -> None:
    """``asyncio.sleep``, imported on first use: the sync path (every CLI command) never loads
    asyncio (~20 ms at start-up)."""
    import asyncio

    await asyncio.sleep(seconds)


async def async_bootstrap_cacerts(
    url: str,
    *,
    expected_fingerprint: str,
    label: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    retry: RetryPolicy | None = None,
    on_wait: WaitCallback | None = None,
    sleep: AsyncSleep = _asyncio_sleep,
    clock: Callable[[], datetime] = utc_now,
) -> CaCertsResult:
    """The asyncio form of :func:`bootstrap_cacerts`."""
    settings = _settings(url, label, retry, clock)
    result = await _fetch_async(settings, timeout, sleep, on_wait)
    return check_fingerprint(result, expected_fingerprint, str(settings.endpoint))


async def async_fetch_cacerts_unverified_for_manual_confirmation(
    url: str,
    *,
    label: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    retry: RetryPolicy | None = None,
    sleep: AsyncSleep = _asyncio_sleep,
    clock: Callable[[], datetime] = utc_now,
) -> UnconfirmedCaCertificates:
    """The asyncio form of :func:`fetch_cacerts_unverified_for_manual_confirmation`."""
    settings = _settings(url, label, retry, clock)
    result = await _fetch_async(settings, timeout, sleep, None)
    return UnconfirmedCaCertificates(result, str(settings.endpoint))
