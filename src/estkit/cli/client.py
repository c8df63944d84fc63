"""``estkit client …``: the EST client on the command line (issue 3's CLI contract).

Only argument parsing and presentation live here; every protocol decision is in
:mod:`estkit.client`, so a library user gets exactly what the CLI does.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from estkit.cli.client_pending import (
    PendingEnrollment,
    explain_failure,
    load_pending,
    save_pending,
)
from estkit.cli.options import EXISTING_FILE, F, limit_option, option_group, output_file_option
from estkit.cli.output import (
    EXIT_USAGE,
    console,
    err_console,
    fail,
    friendly_errors,
    name_flags,
    print_json,
)
from estkit.cli.prompts import read_secret
from estkit.client import (
    DEFAULT_TIMEOUT_SECONDS,
    CaCertsResult,
    ClientCredentials,
    CsrSpec,
    EnrollResult,
    EstClient,
    EstError,
    RetryPolicy,
    ServerKeygenResult,
    TrustAnchors,
    bootstrap_cacerts,
    fetch_cacerts_unverified_for_manual_confirmation,
    key_type_for,
    renewal_spec,
)
from estkit.client.errors import printable
from estkit.client.issued import order_chain, validate_issued_certificate
from estkit.client.retry import DEFAULT_MAX_ATTEMPTS, MAX_RETRY_AFTER_SECONDS
from estkit.fileio import replace_credential_pair, write_file_atomic, write_private_file_atomic
from estkit.protocol import (
    KEY_TYPES,
    common_name,
    decode_csr_body,
    dns_names,
    generate_private_key,
    is_hostname,
    private_key_to_pem,
)

SERVER_ENVVAR = "ESTKIT_SERVER"
# Key type when --apply-csrattrs finds no wish in /csrattrs: the cheapest key every server takes.
DEFAULT_KEY_TYPE = "p256"


@dataclass
class CommonOptions:
    server: str
    label: str | None
    trust: tuple[Path, ...]
    system_trust: bool
    cert: Path | None
    key: Path | None
    user: str | None
    password: str | None
    auth_scheme: str
    timeout: float
    max_attempts: int
    max_wait: float
    as_json: bool
    verbose: bool


def _common_options(func: F) -> F:
    """The options every ``estkit client`` command takes (issue 3: common options)."""
    return option_group(
        click.option(
            "--server",
            "server",
            envvar=SERVER_ENVVAR,
            required=True,
            metavar="URL",
            help=f"EST server, https://host[:port] (or ${SERVER_ENVVAR}).",
        ),
        click.option("--label", metavar="L", help="EST label (CA profile) on the server."),
        click.option(
            "--trust",
            multiple=True,
            type=EXISTING_FILE,
            metavar="PEM",
            help="Explicit trust anchor(s) for the server certificate; repeatable.",
        ),
        click.option(
            "--system-trust", is_flag=True, help="Also trust the operating system's CA store."
        ),
        click.option(
            "--cert",
            type=EXISTING_FILE,
            metavar="PEM",
            help="TLS client certificate (chain) for authentication.",
        ),
        click.option("--key", type=EXISTING_FILE, metavar="PEM", help="Private key of --cert."),
        click.option("--user", metavar="U", help="HTTP user (answered only to a 401 challenge)."),
        click.option("--password", metavar="P", help="HTTP password (prompted when omitted)."),
        click.option(
            "--auth-scheme",
            type=click.Choice(["any", "basic", "digest", "basic-preemptive"]),
            default="any",
            show_default=True,
            help="Which HTTP challenge may be answered; basic-preemptive sends Basic "
            "credentials with the first request, for servers that never challenge.",
        ),
        limit_option(
            "--timeout",
            click.FloatRange(min=0.1),
            DEFAULT_TIMEOUT_SECONDS,
            "Seconds one whole exchange (connect, TLS, request, answer) may take.",
        ),
        limit_option(
            "--max-attempts",
            click.IntRange(min=1),
            DEFAULT_MAX_ATTEMPTS,
            "Requests in all while the server answers 202/503 or not in time (--timeout).",
        ),
        limit_option(
            "--max-wait",
            click.FloatRange(min=0),
            MAX_RETRY_AFTER_SECONDS,
            "Longest single wait (s) a Retry-After may impose.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON document."),
        click.option("--verbose", "-v", is_flag=True, help="Say more about what happened."),
    )(func)


@dataclass
class CsrOptions:
    """What enroll and reenroll take about the CSR and where the results go (_csr_options)."""

    csr_file: Path | None
    key_type: str | None
    cn: str | None
    san: tuple[str, ...]
    serial_number: str | None
    pop: bool | None
    apply_csrattrs: bool
    out_cert: Path | None
    out_key: Path | None


Options = TypeVar("Options", CommonOptions, CsrOptions)


def _pop_options(kind: type[Options], kwargs: dict[str, Any]) -> Options:
    """The ``kind`` options taken out of a command's keyword arguments."""
    names = {field.name for field in dataclasses.fields(kind)}
    return kind(**{name: kwargs.pop(name) for name in list(kwargs) if name in names})


def _pop_common(kwargs: dict[str, Any]) -> CommonOptions:
    return _pop_options(CommonOptions, kwargs)


# The client API's parameters (and CSR fields) as this command group's options: errors and
# warnings name the parameter, the person at the terminal reads the flag (issue 22).
CLIENT_FLAGS = {
    "trust": "--trust PEM",
    "bootstrap_fingerprint": "--bootstrap-fingerprint sha256:HEX",
    "credentials": "--cert/--key",
    "username": "--user",
    "password": "--password",
    "url": "--server",
    "pop": "--pop/--no-pop",
    "pin_tls12_for_pop": "drop --no-tls12-fallback",
    "serial_number": "--serial-number",
    "common_name": "--cn",
    "dns_names": "--san",
}


# Expected failures become one or two lines and a non-zero exit, never a traceback. An
# EstError's first line is its message without the hint (the hint gets a line of its own).
_est_command = friendly_errors(
    ValueError, OSError, flags=CLIENT_FLAGS, describe={EstError: lambda exc: exc.message}
)


def _credentials(options: CommonOptions) -> ClientCredentials | None:
    if (options.cert is None) != (options.key is None):
        fail("--cert and --key go together", "give both the certificate and its key", EXIT_USAGE)
    if options.cert is None or options.key is None:
        return None
    return ClientCredentials.from_files(options.cert, options.key)


def _password(options: CommonOptions) -> str | None:
    if options.user is None:
        if options.password is not None:
            fail("--password needs --user", code=EXIT_USAGE)
        return None
    if options.password is not None:
        return options.password
    return read_secret(f"Password for {options.user}")


def _note(message: str) -> None:
    """Progress and warnings go to stderr so stdout stays clean for PEM or JSON."""
    err_console.print(printable(message), soft_wrap=True, markup=False)


def _with_flags(warning: str) -> str:
    """A library warning naming a request field "(serial_number)" names the flag instead."""
    return name_flags(warning, CLIENT_FLAGS)


def _json_document(result: Any) -> dict[str, Any]:
    """``result.to_json()`` with its warnings naming this command's flags (see _with_flags)."""
    document: dict[str, Any] = result.to_json()
    if isinstance(document.get("warnings"), list):
        document["warnings"] = [_with_flags(str(warning)) for warning in document["warnings"]]
    return document


def _warn(warnings: list[str]) -> None:
    for warning in map(_with_flags, warnings):
        err_console.print(
            f"warning: {printable(warning)}", soft_wrap=True, markup=False, style="yellow"
        )


@contextmanager
def _client(
    options: CommonOptions, *, need_credentials: bool = False, pin_tls12_for_pop: bool = True
) -> Iterator[EstClient]:
    if not options.trust and not options.system_trust:
        fail(
            "no trust anchors for the server",
            "pass --trust PEM (the EST CA certificate) or --system-trust; to get the CA "
            "certificate first run 'estkit client cacerts --bootstrap-fingerprint sha256:HEX'",
            EXIT_USAGE,
        )
    credentials = _credentials(options)
    if need_credentials and credentials is None:
        fail(
            "this command authenticates with the certificate being renewed",
            "pass --cert and --key",
            EXIT_USAGE,
        )
    trust = TrustAnchors.from_files(options.trust, use_system_trust=options.system_trust)

    def on_wait(attempt: int, seconds: float, reason: str) -> None:
        _note(f"attempt {attempt}: {reason}")

    client = EstClient(
        options.server,
        label=options.label,
        trust=trust,
        credentials=credentials,
        username=options.user,
        password=_password(options),
        auth_scheme=("basic" if options.auth_scheme == "basic-preemptive" else options.auth_scheme),
        preemptive_basic=options.auth_scheme == "basic-preemptive",
        timeout=options.timeout,
        retry=RetryPolicy(max_attempts=options.max_attempts, max_retry_after=options.max_wait),
        on_wait=on_wait,
        pin_tls12_for_pop=pin_tls12_for_pop,
    )
    with client:
        yield client


# --- the group --------------------------------------------------------------------------------


@click.group("client", context_settings={"help_option_names": ["-h", "--help"]})
def client() -> None:
    """EST client: get CA certificates, enroll, re-enroll, server-side key generation."""


# --- cacerts ----------------------------------------------------------------------------------


def _show_candidates(candidates: list[Any]) -> None:
    for index, candidate in enumerate(candidates, 1):
        err_console.print(
            f"[{index}] {candidate.role}: {printable(candidate.subject)}", markup=False
        )
        err_console.print(f"    issuer:  {printable(candidate.issuer)}", markup=False)
        err_console.print(f"    expires: {candidate.not_after.isoformat()}", markup=False)
        err_console.print(f"    fingerprint: {candidate.sha256}", markup=False, soft_wrap=True)


def _insecure_bootstrap(options: CommonOptions) -> CaCertsResult:
    if not sys.stdin.isatty():
        fail(
            "refusing --insecure-bootstrap without a terminal: a person must compare the "
            "fingerprints before anything is trusted",
            "use --bootstrap-fingerprint sha256:HEX in scripts",
            EXIT_USAGE,
        )
    unconfirmed = fetch_cacerts_unverified_for_manual_confirmation(
        options.server, label=options.label, timeout=options.timeout
    )
    err_console.print(
        f"The server at {unconfirmed.url} was NOT verified. It sent these CA certificates:",
        markup=False,
    )
    _show_candidates(unconfirmed.candidates)
    _warn(unconfirmed.warnings)
    if not click.confirm(
        "Do these fingerprints match the ones your CA operator gave you?", err=True
    ):
        fail("not confirmed; nothing was written", code=EXIT_USAGE)
    return unconfirmed.confirm()


@client.command("cacerts")
@_common_options
@click.option(
    "--bootstrap-fingerprint",
    metavar="sha256:HEX",
    help="Fetch without verifying the server; keep only what this CA fingerprint vouches for.",
)
@click.option(
    "--insecure-bootstrap",
    is_flag=True,
    help="Fetch without verifying the server and ask a person (terminal only) to confirm.",
)
@output_file_option("--out", "Write the CA certificates here (default: print PEM on stdout).")
@_est_command
def cacerts_command(
    bootstrap_fingerprint: str | None, insecure_bootstrap: bool, out: Path | None, **kwargs: Any
) -> None:
    """Get the CA certificates (/cacerts) and report root rollover certificates."""
    options = _pop_common(kwargs)
    modes = [
        bool(options.trust or options.system_trust),
        bootstrap_fingerprint is not None,
        insecure_bootstrap,
    ]
    if sum(modes) != 1:
        fail(
            "say how to trust the server: exactly one of --trust PEM (or --system-trust), "
            "--bootstrap-fingerprint sha256:HEX, --insecure-bootstrap",
            code=EXIT_USAGE,
        )
    bootstrapping = bootstrap_fingerprint is not None or insecure_bootstrap
    if bootstrapping and (options.cert or options.key or options.user):
        fail(
            "bootstrap talks to a server that is not verified yet: no client certificate or "
            "HTTP credentials are ever sent to it",
            "drop --cert/--key/--user here and use them once the CA certificates are trusted",
            EXIT_USAGE,
        )
    if bootstrap_fingerprint is not None:
        result = bootstrap_cacerts(
            options.server,
            expected_fingerprint=bootstrap_fingerprint,
            label=options.label,
            timeout=options.timeout,
            retry=RetryPolicy(max_attempts=options.max_attempts, max_retry_after=options.max_wait),
        )
    elif insecure_bootstrap:
        result = _insecure_bootstrap(options)
    else:
        with _client(options) as est:
            result = est.cacerts()
    if out is not None:
        write_file_atomic(out, result.to_pem(), create_parents=False)
    if options.as_json:
        document = _json_document(result)
        document["out"] = str(out) if out else None
        print_json(document)
        return
    _warn(result.warnings)
    if out is None:
        sys.stdout.write(result.to_pem().decode("ascii"))
    else:
        console.print(f"wrote {len(result.certificates)} CA certificate(s) to {out}", markup=False)
    if options.verbose or out is not None:
        for line in result.describe():
            err_console.print(f"  {printable(line)}", markup=False)


# --- csrattrs ---------------------------------------------------------------------------------


@client.command("csrattrs")
@_common_options
@_est_command
def csrattrs_command(**kwargs: Any) -> None:
    """Show what the server wants in a CSR (/csrattrs)."""
    options = _pop_common(kwargs)
    with _client(options) as est:
        result = est.csrattrs()
    if options.as_json:
        print_json(_json_document(result))
        return
    _warn(result.warnings)
    lines = result.describe()
    if not lines:
        console.print("the server asks for nothing in particular", markup=False)
    for line in lines:
        console.print(printable(line), markup=False)
    if result.requires_pop:
        console.print("proof-of-possession linking is required (use --pop)", markup=False)


# --- enroll / reenroll ------------------------------------------------------------------------


# What names the certificate asks for; enroll and reenroll (through _csr_options) and
# serverkeygen take the same.
_NAME_OPTIONS = (
    click.option("--cn", metavar="NAME", help="Common name for the CSR."),
    click.option("--san", multiple=True, metavar="DNS", help="DNS subjectAltName; repeatable."),
    click.option("--serial-number", metavar="S", help="Subject serialNumber (device serial)."),
)
_OUT_CERT_OPTION = output_file_option(
    "--out-cert", "Write the certificate followed by its chain here."
)


def _csr_options(func: F) -> F:
    return option_group(
        click.option(
            "--csr",
            "csr_file",
            type=EXISTING_FILE,
            metavar="FILE",
            help="Send this CSR (PEM, DER or base64) instead of building one.",
        ),
        click.option(
            "--key-type",
            type=click.Choice(KEY_TYPES),
            help="Make a new key of this type for the CSR.",
        ),
        *_NAME_OPTIONS,
        click.option(
            "--pop/--no-pop",
            default=None,
            help="Link the CSR to the TLS connection (RFC 7030 §3.5); default: when the "
            "server's /csrattrs asks for it.",
        ),
        click.option(
            "--apply-csrattrs",
            is_flag=True,
            help="Fit the CSR to the server's /csrattrs (hash; key type when --key-type is "
            "omitted) and report what cannot be fulfilled.",
        ),
        _OUT_CERT_OPTION,
        output_file_option("--out-key", "Write the new private key here (mode 0600)."),
    )(func)


def _load_csr(path: Path) -> x509.CertificateSigningRequest:
    try:
        return decode_csr_body(path.read_bytes())
    except ValueError as exc:
        raise ValueError(f"cannot read the CSR {path}: {exc}") from None


def _validate_before_writing(
    est: EstClient,
    result: EnrollResult | ServerKeygenResult,
    request: x509.CertificateSigningRequest | CsrSpec | None,
) -> None:
    """The one check before anything is written (issue 20; the NMOS node runs the same one).

    Anchors: the --trust certificates and the roots of /cacerts, fetched over this verified
    connection (RFC 7030 §4.1.3). Raises ``EstIssuedCertificateError``; the caller has written
    nothing yet, so a refused answer leaves every file as it was. Fills in the chain.
    """
    ca_certificates: list[x509.Certificate] = []
    try:
        ca_certificates = list(est.cacerts().certificates)
    except EstError as exc:
        result.warnings.append(f"could not fetch /cacerts to check the chain: {exc.message}")
    anchors = [*est.trust.certificates, *[c for c in ca_certificates if c.issuer == c.subject]]
    if isinstance(request, CsrSpec):
        cn, names = request.common_name, tuple(request.dns_names)
    elif request is not None:
        cn, names = common_name(request), tuple(dns_names(request))
    else:  # re-enrollment copying the current certificate's names
        assert est.credentials is not None
        current = est.credentials.certificate
        cn, names = common_name(current), tuple(dns_names(current))
    public_key: CertificatePublicKeyTypes
    if result.private_key is not None:
        public_key = result.private_key.public_key()
    elif isinstance(request, x509.CertificateSigningRequest):
        public_key = request.public_key()
    else:  # pragma: no cover - a result without key comes from a caller's CSR
        raise ValueError("cannot tell which key the certificate should certify")
    validate_issued_certificate(
        result.certificate,
        public_key=public_key,
        requested_common_name=cn,
        requested_dns_names=names,
        anchors=anchors,
        intermediates=[*result.chain, *ca_certificates],
        now=est.clock(),
    )
    if not result.chain:
        # --out-cert gets the certificate followed by its chain, root included, as before.
        result.chain, _unused = order_chain(result.certificate, ca_certificates)


def _write_outputs(
    out_cert: Path | None, out_key: Path | None, cert_pem: bytes, key_pem: bytes | None
) -> None:
    if out_cert is not None and out_key is not None and key_pem is not None:
        replace_credential_pair(out_cert, cert_pem, out_key, key_pem, create_parents=False)
    elif out_cert is not None:
        write_file_atomic(out_cert, cert_pem, create_parents=False)
    if out_key is not None and key_pem is not None and out_cert is None:
        write_private_file_atomic(out_key, key_pem, create_parents=False)


def _report(
    options: CommonOptions,
    result: EnrollResult | ServerKeygenResult,
    what: str,
    out_cert: Path | None,
    out_key: Path | None,
) -> None:
    if options.as_json:
        document = _json_document(result)
        document["out_cert"] = str(out_cert) if out_cert else None
        document["out_key"] = str(out_key) if out_key else None
        print_json(document)
        return
    _warn(result.warnings)
    cert = result.certificate
    console.print(
        f"{what}: {printable(cert.subject.rfc4514_string())} serial {cert.serial_number:x}, "
        f"valid until {cert.not_valid_after_utc.isoformat()}",
        markup=False,
    )
    if out_cert is None:
        sys.stdout.write(result.fullchain_pem().decode("ascii"))
    else:
        console.print(f"certificate and chain written to {out_cert}", markup=False)
    if out_key is not None:
        console.print(f"private key written to {out_key} (mode 0600)", markup=False)
    if options.verbose:
        for issuer in result.chain:
            err_console.print(
                f"  chain: {printable(issuer.subject.rfc4514_string())}", markup=False
            )
        err_console.print(f"  attempts: {result.attempts}", markup=False)
        for note in result.notes:
            err_console.print(f"  note: {printable(note)}", markup=False)
        if isinstance(result, EnrollResult):
            err_console.print(f"  proof-of-possession linked: {result.pop_linked}", markup=False)


def _check_request_options(csr: CsrOptions) -> None:
    """Usage errors are found before any connection is made."""
    if csr.csr_file is not None:
        if csr.key_type or csr.cn or csr.san or csr.serial_number or csr.apply_csrattrs:
            fail(
                "--csr excludes --key-type/--cn/--san/--serial-number/--apply-csrattrs",
                code=EXIT_USAGE,
            )
        if csr.out_key is not None:
            fail("--out-key makes no sense with --csr: the key is yours", code=EXIT_USAGE)
        return
    if (csr.key_type is None and not csr.apply_csrattrs) or (csr.cn is None and not csr.san):
        fail(
            "say what to enroll: --csr FILE, or --key-type TYPE (or --apply-csrattrs) with "
            "--cn NAME and/or --san DNS",
            code=EXIT_USAGE,
        )
    if csr.out_key is None:
        fail("a new key is made: say where it goes with --out-key", code=EXIT_USAGE)


def _build_request(est: EstClient, csr: CsrOptions) -> x509.CertificateSigningRequest | CsrSpec:
    if csr.csr_file is not None:
        return _load_csr(csr.csr_file)
    # --apply-csrattrs without --key-type: the key the server asks for, else the default.
    key_type = csr.key_type or key_type_for(est.csrattrs().attrs) or DEFAULT_KEY_TYPE
    return CsrSpec(
        key=generate_private_key(key_type),
        common_name=csr.cn,
        dns_names=_san_or_cn(csr.cn, csr.san),
        serial_number=csr.serial_number,
    )


def _san_or_cn(cn: str | None, san: tuple[str, ...]) -> tuple[str, ...]:
    """--san, or the CN when it is a host name: TLS clients match names against the SAN only
    (RFC 6125) and BCP-003-01 T4 wants the CN in it."""
    if not san and cn and is_hostname(cn):
        return (cn,)
    return tuple(san)


@client.command("enroll")
@_common_options
@_csr_options
@click.option(
    "--no-tls12-fallback",
    is_flag=True,
    help="With proof-of-possession under TLS 1.3 against a server that does not offer "
    "tls-exporter linking, fail instead of reconnecting with TLS 1.2.",
)
@_est_command
def enroll_command(no_tls12_fallback: bool, **kwargs: Any) -> None:
    """Get a new certificate (/simpleenroll)."""
    csr = _pop_options(CsrOptions, kwargs)
    options = _pop_common(kwargs)
    _check_request_options(csr)
    with _client(options, pin_tls12_for_pop=not no_tls12_fallback) as est:
        pending = _pending_request(options, csr)
        request = pending.spec if pending is not None else _build_request(est, csr)
        if pending is None and csr.out_key is not None and isinstance(request, CsrSpec):
            pending = save_pending(csr.out_key, request, server=options.server, label=options.label)
        try:
            result = est.simpleenroll(request, pop=csr.pop, apply_csrattrs=csr.apply_csrattrs)
            # A refused certificate is a final answer too: the pending state follows the same rule.
            _validate_before_writing(est, result, request)
        except EstError as exc:
            if pending is not None:
                explain_failure(pending, exc)
            raise
    key_pem = private_key_to_pem(result.private_key) if result.private_key is not None else None
    _write_outputs(csr.out_cert, csr.out_key, result.fullchain_pem(), key_pem)
    if pending is not None:
        pending.forget()
    _report(options, result, "enrolled", csr.out_cert, csr.out_key)


def _pending_request(options: CommonOptions, csr: CsrOptions) -> PendingEnrollment | None:
    """The enrollment an earlier run left pending for ``--out-key``, when this run repeats it."""
    if csr.csr_file is not None or csr.out_key is None:
        return None
    pending = load_pending(
        csr.out_key,
        server=options.server,
        label=options.label,
        common_name=csr.cn,
        dns_names=_san_or_cn(csr.cn, csr.san),
        serial_number=csr.serial_number,
        key_type=csr.key_type,
    )
    if pending is not None:
        _note(f"sending the pending request kept in {pending.path} again (same key and names)")
    return pending


@client.command("reenroll")
@_common_options
@_csr_options
@click.option("--reuse-key", is_flag=True, help="Keep the current key pair (default: a new one).")
@_est_command
def reenroll_command(reuse_key: bool, **kwargs: Any) -> None:
    """Renew the certificate given by --cert/--key (/simplereenroll).

    Subject and SANs are copied from it; a new key pair is made unless --reuse-key. Without
    --out-cert/--out-key the renewed pair replaces --cert/--key.
    """
    csr = _pop_options(CsrOptions, kwargs)
    options = _pop_common(kwargs)
    if csr.key_type or csr.cn or csr.san:
        fail(
            "reenroll copies subject and SANs from --cert; --key-type/--cn/--san are not used",
            code=EXIT_USAGE,
        )
    with _client(options, need_credentials=True) as est:
        request: x509.CertificateSigningRequest | CsrSpec | None = None
        if csr.csr_file is not None:
            request = _load_csr(csr.csr_file)
        elif csr.serial_number is not None:
            assert est.credentials is not None
            spec = renewal_spec(est.credentials, reuse_key=reuse_key)
            request = dataclasses.replace(spec, serial_number=csr.serial_number)
        result = est.simplereenroll(
            request,
            pop=csr.pop,
            reuse_key=reuse_key,
            apply_csrattrs=csr.apply_csrattrs and csr.csr_file is None,
        )
        # Validated before anything is written: a refused answer leaves --cert/--key (the
        # working pair) untouched; an accepted one is written beside them and renamed over them
        # as a pair (replace_credential_pair).
        _validate_before_writing(est, result, request)
    out_cert, out_key = csr.out_cert, csr.out_key
    if csr.csr_file is None:
        out_cert = out_cert or options.cert
        out_key = out_key or options.key
    key_pem = private_key_to_pem(result.private_key) if result.private_key is not None else None
    _write_outputs(out_cert, out_key, result.fullchain_pem(), key_pem)
    _report(options, result, "renewed", out_cert, out_key)


# --- serverkeygen -----------------------------------------------------------------------------


@client.command("serverkeygen")
@_common_options
@option_group(*_NAME_OPTIONS)
@click.option(
    "--encrypt-key",
    is_flag=True,
    help="Ask for the key encrypted to --cert (RSA or EC), as BCP-003-03 recommends.",
)
@click.option("--pop/--no-pop", default=None, help="Link the CSR to the TLS connection.")
@click.option(
    "--apply-csrattrs",
    is_flag=True,
    help="Fit the request to the server's /csrattrs and report what cannot be fulfilled.",
)
@_OUT_CERT_OPTION
@output_file_option("--out-key", "Write the server-generated private key here (mode 0600).")
@_est_command
def serverkeygen_command(
    cn: str | None,
    san: tuple[str, ...],
    serial_number: str | None,
    encrypt_key: bool,
    pop: bool | None,
    apply_csrattrs: bool,
    out_cert: Path | None,
    out_key: Path | None,
    **kwargs: Any,
) -> None:
    """Have the server generate the key pair (/serverkeygen)."""
    options = _pop_common(kwargs)
    if cn is None and not san:
        fail("say what to enroll: --cn NAME and/or --san DNS", code=EXIT_USAGE)
    if out_key is None:
        fail("the server makes a key: say where it goes with --out-key", code=EXIT_USAGE)
    san = _san_or_cn(cn, san)
    with _client(options, need_credentials=encrypt_key) as est:
        result = est.serverkeygen(
            common_name=cn,
            dns_names=san,
            serial_number=serial_number,
            encrypt_key=encrypt_key,
            pop=pop,
            apply_csrattrs=apply_csrattrs,
        )
        _validate_before_writing(
            est, result, CsrSpec(key=result.private_key, common_name=cn, dns_names=san)
        )
    _write_outputs(out_cert, out_key, result.fullchain_pem(), result.key_pem())
    _report(options, result, "server generated a key and certificate", out_cert, out_key)


# --- status (issue 17) ------------------------------------------------------------------------

# Exit statuses of `client status`, so that scripts can act without parsing text.
EXIT_STATUS_REVOKED = 3
EXIT_STATUS_UNKNOWN = 4


@client.command("status")
@click.option(
    "--cert",
    "cert_path",
    required=True,
    type=EXISTING_FILE,
    metavar="PEM",
    help="The certificate to check (a chain file: the next certificate is taken as its issuer).",
)
@click.option(
    "--issuer",
    "issuer_path",
    type=EXISTING_FILE,
    metavar="PEM",
    help="The certificate that signed it (default: the second certificate of --cert).",
)
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds per fetch.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def status_command(
    cert_path: Path, issuer_path: Path | None, timeout: float, as_json: bool
) -> None:
    """Is a certificate revoked? Asks its AIA OCSP responder, then its CRL distribution point.

    Exit status: 0 good, 3 revoked, 4 unknown (no believable answer), 1 error."""
    from estkit.client.status import StatusError, check_status

    try:
        chain = x509.load_pem_x509_certificates(cert_path.read_bytes())
        issuers = x509.load_pem_x509_certificates(issuer_path.read_bytes()) if issuer_path else []
    except ValueError as exc:
        fail(f"cannot read the certificates: {exc}", "give PEM files")
    issuer = issuers[0] if issuers else (chain[1] if len(chain) > 1 else None)
    if issuer is None:
        fail(
            f"{cert_path} holds one certificate and no issuer was given",
            "add --issuer PEM (e.g. the issuing CA from `estkit client cacerts`)",
            EXIT_USAGE,
        )
    try:
        result = check_status(chain[0], issuer, timeout=timeout)
    except StatusError as exc:
        fail(str(exc))
    if as_json:
        print_json(result.to_json())
    else:
        detail = f" via {result.method.upper()} {result.source}" if result.method else ""
        console.print(f"{result.status}: serial {result.serial}{detail}", markup=False)
        if result.revoked:
            console.print(f"  revoked at {result.revoked_at}, reason {result.reason}", markup=False)
        if result.next_update:
            console.print(f"  valid until {result.next_update.isoformat()}", markup=False)
        for problem in result.problems:
            err_console.print(f"  {problem}", markup=False)
    if result.status == "revoked":
        raise SystemExit(EXIT_STATUS_REVOKED)
    if result.status == "unknown":
        raise SystemExit(EXIT_STATUS_UNKNOWN)


__all__ = ["client"]
