"""Third-party witnesses for the server tests: curl and openssl, plus a raw http.client path.

Why curl and openssl first: they are independent implementations of TLS, PKCS#10 and PKCS#7, so a
server bug cannot hide behind a matching bug in our own client. http.client is used only where
those tools cannot express a request (the TLS session's tls-unique, many parallel requests).
"""

from __future__ import annotations

import base64
import http.client
import shutil
import ssl
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from estkit.ca.store import CertificateStore, Event

TOOL_TIMEOUT_SECONDS = 60


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} must be installed for the server tests"
    return path


def run(
    args: Sequence[str | Path], *, input: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(
        [str(a) for a in args], input=input, capture_output=True, timeout=TOOL_TIMEOUT_SECONDS
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(str(a) for a in args)} failed ({result.returncode}):\n"
            f"{result.stderr.decode(errors='replace')}"
        )
    return result


# --- openssl ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CsrFiles:
    key: Path
    der: Path
    b64: Path
    pem: Path


def openssl_csr(
    directory: Path,
    *,
    cn: str = "node1.example.com",
    key: str = "ec",
    sans: Sequence[str] = (),
    digest: str = "sha256",
    subject: str | None = None,
    key_file: Path | None = None,
) -> CsrFiles:
    """Make a key and CSR with ``openssl req``; ``key`` is ``ec``, ``ec384``, ``rsa`` or
    ``rsa1024``. Returns the DER, base64 and PEM forms of the request."""
    name = uuid.uuid4().hex[:8]
    key_path = key_file or directory / f"{name}.key"
    pem = directory / f"{name}.csr.pem"
    args: list[str | Path] = [tool("openssl"), "req", "-new", "-nodes", f"-{digest}"]
    if key_file is not None:
        args += ["-key", key_file]
    elif key.startswith("ec"):
        curve = "P-384" if key == "ec384" else "P-256"
        args += ["-newkey", "ec", "-pkeyopt", f"ec_paramgen_curve:{curve}", "-keyout", key_path]
    else:
        bits = key.removeprefix("rsa") or "2048"
        args += ["-newkey", f"rsa:{bits}", "-keyout", key_path]
    args += ["-subj", subject or f"/CN={cn}", "-out", pem]
    if sans:
        args += ["-addext", "subjectAltName=" + ",".join(f"DNS:{s}" for s in sans)]
    run(args)
    der = directory / f"{name}.csr.der"
    run([tool("openssl"), "req", "-in", pem, "-outform", "DER", "-out", der])
    b64 = directory / f"{name}.csr.b64"
    b64.write_bytes(base64.encodebytes(der.read_bytes()))
    return CsrFiles(key=key_path, der=der, b64=b64, pem=pem)


def pkcs7_to_pem(body: bytes, directory: Path) -> Path:
    """base64 certs-only body → PEM certificates, via ``openssl pkcs7 -print_certs``."""
    name = uuid.uuid4().hex[:8]
    der = directory / f"{name}.p7.der"
    der.write_bytes(base64.b64decode(body))
    out = directory / f"{name}.pem"
    run([tool("openssl"), "pkcs7", "-inform", "DER", "-in", der, "-print_certs", "-out", out])
    return out


def openssl_verify(leaf: Path, *, root: Path, untrusted: Path) -> str:
    result = run(
        [tool("openssl"), "verify", "-CAfile", root, "-untrusted", untrusted, leaf], check=False
    )
    return (result.stdout + result.stderr).decode()


def openssl_x509_text(pem: Path) -> str:
    return run([tool("openssl"), "x509", "-in", pem, "-noout", "-text"]).stdout.decode()


def s_client(
    host: str, port: int, *args: str | Path, stdin: bytes = b"Q\n"
) -> subprocess.CompletedProcess[bytes]:
    command = [
        tool("openssl"),
        "s_client",
        "-connect",
        f"{host}:{port}",
        "-servername",
        "localhost",
    ]
    return run(
        [*command, *args],
        input=stdin,
        check=False,
    )


# --- curl -------------------------------------------------------------------------------------


@dataclass
class HttpResult:
    status: int
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def _parse_header_dump(raw: str) -> dict[str, list[str]]:
    blocks = [b for b in raw.replace("\r\n", "\n").split("\n\n") if b.strip()]
    headers: dict[str, list[str]] = {}
    for line in blocks[-1].splitlines()[1:] if blocks else []:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return headers


def curl(
    url: str,
    *,
    cacert: Path,
    cert: Path | None = None,
    key: Path | None = None,
    data: Path | None = None,
    content_type: str | None = "application/pkcs10",
    method: str | None = None,
    headers: Sequence[str] = (),
    extra: Sequence[str] = (),
    workdir: Path,
) -> HttpResult:
    """One request with curl; returns status, the final response's headers and the body."""
    name = uuid.uuid4().hex[:8]
    header_file, body_file = workdir / f"{name}.headers", workdir / f"{name}.body"
    args: list[str | Path] = [
        tool("curl"),
        "-sS",
        "--cacert",
        cacert,
        "-D",
        header_file,
        "-o",
        body_file,
        "-w",
        "%{http_code}",
    ]
    if cert is not None:
        args += ["--cert", cert]
    if key is not None:
        args += ["--key", key]
    if data is not None:
        args += ["--data-binary", f"@{data}"]
        if content_type:
            args += ["-H", f"Content-Type: {content_type}"]
    if method:
        args += ["-X", method]
    for header in headers:
        args += ["-H", header]
    args += [*extra, url]
    result = run(args, check=False)
    output = result.stdout.decode().strip()
    assert output.isdigit() and result.returncode == 0, (
        f"curl failed ({result.returncode}): {result.stderr.decode(errors='replace')}"
    )
    return HttpResult(
        status=int(output[-3:]),
        headers=_parse_header_dump(header_file.read_text(errors="replace")),
        body=body_file.read_bytes() if body_file.exists() else b"",
    )


# --- http.client (where curl cannot reach) ------------------------------------------------------


def client_context(
    cafile: Path,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    tls_version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cafile))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    if tls_version is not None:
        context.minimum_version = tls_version
        context.maximum_version = tls_version
    return context


def post(
    host: str,
    port: int,
    path: str,
    body: bytes,
    context: ssl.SSLContext,
    *,
    headers: dict[str, str] | None = None,
    body_for_tls_unique: object = None,
) -> HttpResult:
    """POST over a fresh connection. ``body`` may be a callable taking the connection's
    tls-unique (bytes) and returning the body, for proof-of-possession tests."""
    connection = http.client.HTTPSConnection(host, port, context=context, timeout=30)
    try:
        connection.connect()
        if callable(body_for_tls_unique):
            sock = connection.sock
            assert isinstance(sock, ssl.SSLSocket)
            body = body_for_tls_unique(sock)
        all_headers = {"Content-Type": "application/pkcs10", **(headers or {})}
        connection.request("POST", path, body=body, headers=all_headers)
        response = connection.getresponse()
        result = HttpResult(status=response.status, body=response.read())
        for name, value in response.getheaders():
            result.headers.setdefault(name.lower(), []).append(value)
        return result
    finally:
        connection.close()


def certificate_from_response(body: bytes) -> x509.Certificate:
    from estkit.protocol.pkcs7 import decode_certs_only_body

    certificates = decode_certs_only_body(body)
    assert len(certificates) == 1, f"expected exactly the issued certificate, got {certificates}"
    return certificates[0]


# --- store evidence ---------------------------------------------------------------------------


def last_refusal(store: CertificateStore, since_id: int = 0) -> Event:
    """The newest "refused" audit event after ``since_id`` (proves the server saw the request)."""
    events = store.list_events("refused", since_id)
    assert events, "the server recorded no refusal: the request never reached it"
    return events[-1]


def last_event_id(store: CertificateStore) -> int:
    events = store.list_events()
    return events[-1].id if events else 0
