"""An impostor OCSP responder and the answers it forges, for the tests of the node (C16) and of
the conformance cases that judge a server's responder (issue 17 items 4 and 5)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from estkit.ca.authority import CertificateAuthority
from estkit.ca.ocsp import issue_responder_certificate


class Responder:
    """A plain-HTTP OCSP "responder" on 127.0.0.1 (where anyone on the path can answer) giving
    ``answer``: bytes, or a function of the request's body; ``status`` as the HTTP status. It
    records the paths asked, so a test shows the answer was fetched and then judged."""

    def __init__(self) -> None:
        self.answer: bytes | Callable[[bytes], bytes] = b""
        self.status = 200
        self.asked: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                request = self.rfile.read(length)
                outer.asked.append(self.path)
                answer = outer.answer(request) if callable(outer.answer) else outer.answer
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/ocsp-response")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def lookalike_ca(issuer: x509.Certificate, directory: Path) -> CertificateAuthority:
    """An impostor CA whose issuing certificate has the very subject of ``issuer``."""

    def name(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str | None:
        values = cert.subject.get_attributes_for_oid(oid)
        return str(values[0].value) if values else None

    mallory = CertificateAuthority.create(
        directory,
        key_type="p256",
        issuing_common_name=name(issuer, NameOID.COMMON_NAME),
        organization=name(issuer, NameOID.ORGANIZATION_NAME),
    )
    assert mallory.issuer_certificate.subject == issuer.subject
    return mallory


def forged_answer(
    leaf: x509.Certificate,
    issuer: x509.Certificate,
    mallory: CertificateAuthority,
    *,
    revoked: bool,
    forgery: str,
) -> bytes:
    """A well-formed OCSP answer about ``leaf`` saying good or ``revoked``: signed by a responder
    an impostor CA (``mallory``, named like the issuer) delegated to ("another-ca"), by that
    impostor CA itself under the issuer's name ("issuer-name"), or ("genuine", ``mallory`` then
    being the real CA) by the issuer itself: right signature, status as asked."""
    now = datetime.now(UTC)
    builder = ocsp.OCSPResponseBuilder().add_response(
        leaf,
        issuer,
        hashes.SHA1(),
        ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD,
        now - timedelta(minutes=1),
        now + timedelta(hours=1),
        now - timedelta(minutes=1) if revoked else None,
        x509.ReasonFlags.key_compromise if revoked else None,
    )
    mallory_key: Any = mallory.issuer_key_for(mallory.generation)
    if forgery == "another-ca":
        responder = issue_responder_certificate(mallory.issuer_certificate, mallory_key)
        builder = builder.responder_id(
            ocsp.OCSPResponderEncoding.HASH, responder.certificate
        ).certificates([responder.certificate])
        mallory_key = responder.key
    elif forgery == "issuer-name":
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.NAME, mallory.issuer_certificate)
    else:  # "genuine": the issuer's own key (a real but wrong answer)
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.NAME, issuer)
        mallory_key = mallory.issuer_key_for(mallory.generation)
    answer = builder.sign(mallory_key, hashes.SHA256())
    return answer.public_bytes(serialization.Encoding.DER)
