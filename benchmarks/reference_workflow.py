"""The reference for ``estkit nmos workflow``'s speed: the prototype's steps as a minimal script.

Why it exists: issue 23 asks that ``estkit nmos workflow`` be no slower than the original
prototype's ``nmos-est-workflow.py`` against the same server. That script is not in this
repository, so this one does the same steps with the least machinery Python offers (``ssl``,
``http.client`` and ``cryptography``, no estkit import), which is the prototype's cost floor:

1. GET ``/cacerts`` trusting the server explicitly (no verification, as the prototype did), keep
   the root;
2. for each key type (RSA-2048, P-256): a new key, a CSR for the host name, POST
   ``/simpleenroll`` over TLS with the manufacturer certificate, verifying the server against the
   root;
3. unless ``--no-renew``: the same again through ``/simplereenroll`` with the certificate just
   issued, as ``estkit nmos workflow`` does by default.

It checks nothing the prototype did not check (status 200 and a certificate in the answer) and
writes the root, keys and certificates to ``--out-dir``. Run by ``bench_cli_start.py``; usable on
its own: ``python benchmarks/reference_workflow.py --ip localhost --port 8443 --cert C --key K``.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

EST_PREFIX = "/.well-known/est"
RSA_BITS = 2048  # what the prototype and ``estkit nmos workflow`` generate for the RSA slot
TIMEOUT_SECONDS = 30.0

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _request(
    host: str, port: int, context: ssl.SSLContext, method: str, path: str, body: bytes = b""
) -> bytes:
    connection = http.client.HTTPSConnection(host, port, context=context, timeout=TIMEOUT_SECONDS)
    try:
        headers = {"Content-Type": "application/pkcs10", "Content-Transfer-Encoding": "base64"}
        connection.request(method, path, body=body or None, headers=headers if body else {})
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise SystemExit(f"{method} {path}: HTTP {response.status}: {data[:200]!r}")
        return data
    finally:
        connection.close()


def _certificates(body: bytes) -> list[x509.Certificate]:
    return pkcs7.load_der_pkcs7_certificates(base64.b64decode(body))


def _csr(key: PrivateKey, hostname: str) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return base64.encodebytes(csr.public_bytes(serialization.Encoding.DER))


def _new_key(key_type: str) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    return ec.generate_private_key(ec.SECP256R1())


def _client_context(root: Path, cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(root))
    context.load_cert_chain(str(cert), str(key))
    return context


def _write_pair(out_dir: Path, name: str, key: PrivateKey, cert: x509.Certificate) -> None:
    key_path = out_dir / f"{name}.key.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    (out_dir / f"{name}.cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def run(args: argparse.Namespace) -> None:
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    explicit = ssl.create_default_context()
    explicit.check_hostname = False
    explicit.verify_mode = ssl.CERT_NONE
    roots = _certificates(_request(args.ip, args.port, explicit, "GET", f"{EST_PREFIX}/cacerts"))
    root_path = out_dir / "root-ca.pem"
    root_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in roots))

    for key_type in ("rsa", "ecdsa"):
        key = _new_key(key_type)
        context = _client_context(root_path, Path(args.cert), Path(args.key))
        body = _request(
            args.ip, args.port, context, "POST", f"{EST_PREFIX}/simpleenroll", _csr(key, args.host)
        )
        _write_pair(out_dir, key_type, key, _certificates(body)[0])

    if args.no_renew:
        return
    for key_type in ("rsa", "ecdsa"):
        key = _new_key(key_type)
        context = _client_context(
            root_path, out_dir / f"{key_type}.cert.pem", out_dir / f"{key_type}.key.pem"
        )
        body = _request(
            args.ip,
            args.port,
            context,
            "POST",
            f"{EST_PREFIX}/simplereenroll",
            _csr(key, args.host),
        )
        _write_pair(out_dir, key_type, key, _certificates(body)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ip", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True, help="manufacturer certificate (PEM)")
    parser.add_argument("--key", required=True, help="its private key (PEM)")
    parser.add_argument("--host", default="node1.example.com", help="CN and DNS SAN")
    parser.add_argument("--out-dir", default="reference-node")
    parser.add_argument("--no-renew", action="store_true")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
