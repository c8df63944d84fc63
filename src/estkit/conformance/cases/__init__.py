"""The catalogue of conformance cases, in the order they run.

Why one table: a reader sees every case, the requirement it cites and whether it applies to any
RFC 7030 server (``all``) or only to an NMOS BCP-003-03 one (``nmos``) without opening the case
functions; ``--only`` and the reports use the ids below.
"""

from __future__ import annotations

import ssl

from estkit.conformance.cases import bcp003, dns, est, revocation, tls
from estkit.conformance.model import Case

# fmt: off
ALL_CASES: tuple[Case, ...] = (
    # The prototype's seven, done for real.
    Case("cacerts-root", "Latest root CA returned and anchoring the server", "E1, C5, S2", "all",
         est.cacerts_root),
    Case("enroll-rsa", "RSA certificate issued with the manufacturer certificate",
         "E2, S3, S6, C8", "all", est.enroll("rsa")),
    Case("reenroll-rsa", "RSA re-enrollment with the issued certificate", "E3, C13", "all",
         est.reenroll("rsa")),
    Case("enroll-ecdsa", "ECDSA certificate issued with the manufacturer certificate",
         "E2, S3, S6, C8", "all", est.enroll("ecdsa")),
    Case("reenroll-ecdsa", "ECDSA re-enrollment with the issued certificate", "E3, C13", "all",
         est.reenroll("ecdsa")),
    Case("rogue-client-refused", "Rogue manufacturer certificate refused", "S3", "all",
         bcp003.rogue_client_refused),
    Case("tls12-rsa-kex-refused", "Non-listed suites refused: RSA key exchange", "T3", "nmos",
         tls.non_listed_refused("rsa-kex")),
    # RFC 7030 / RFC 8951.
    Case("response-encoding", "Media types and base64 bodies of every response",
         "E1, E2, E4, E5, E15, E16", "all", est.response_encoding),
    Case("cacerts-chain", "/cacerts completes every chain", "E1", "all", est.cacerts_chain),
    Case("csrattrs", "/csrattrs is 200 and parseable, or 204/404", "E4", "all", est.csrattrs),
    Case("serverkeygen-key", "/serverkeygen key matches its certificate", "E5, S8", "all",
         est.serverkeygen_key),
    Case("unknown-label", "Unknown label answers 404", "E7", "all", est.unknown_label),
    Case("wrong-method", "Wrong HTTP method refused with a 4xx", "E2, E10", "all",
         est.wrong_method),
    Case("wrong-content-type", "Wrong request content type refused with a 4xx", "E2, E16",
         "all", est.wrong_content_type),
    Case("malformed-base64", "Malformed base64 refused with a 4xx", "E15, T5", "all",
         est.malformed_base64),
    Case("bad-csr-signature", "CSR with a bad signature refused with a 4xx", "E2", "all",
         est.bad_csr_signature),
    Case("oversized-body", "Oversized request refused with 413", "T5", "all",
         est.oversized_body),
    Case("reenroll-changed-subject", "Re-enrollment with a changed subject refused", "E3", "all",
         est.reenroll_changed_subject),
    Case("pop-wrong-challenge", "Wrong PoP challengePassword refused", "E14", "all",
         est.pop_wrong_challenge),
    Case("pop-tls13-exporter", "TLS 1.3 PoP: tls-exporter linked CSR taken, replay refused",
         "E14", "all", est.pop_tls13_exporter),
    # BCP-003-03 EST server.
    Case("no-http-auth-challenge", "No HTTP authentication challenge", "S5", "nmos",
         bcp003.no_http_auth_challenge),
    Case("no-cert-without-client-auth", "No certificate without client authentication", "S3",
         "all", bcp003.no_cert_without_client_auth),
    Case("eku-server-client", "EKU serverAuth and clientAuth on every issued certificate", "S7",
         "nmos", bcp003.eku_server_client),
    Case("rsa-and-ecdsa", "Certificates issued for RSA and ECDSA keys", "S6", "nmos",
         bcp003.rsa_and_ecdsa),
    Case("issued-matches-csr", "Issued certificate matches the CSR, sane validity",
         "E2, C9, T4", "all", bcp003.issued_matches_csr),
    Case("serverkeygen-offered", "/serverkeygen offered", "S1, S8", "nmos",
         bcp003.serverkeygen_offered),
    Case("retry-after", "Deferred answers carry Retry-After", "E8, S4", "all", est.retry_after),
    Case("enroll-manufacturer-only", "Enrollment with the manufacturer certificate alone",
         "C8, S3, S5", "nmos", dns.enroll_manufacturer_only),
    # BCP-003-03 discovery (with a DNS domain to look in).
    Case("dns-advertised", "Discoverable by unicast DNS-SD (_nmos-certs._tcp)", "D1, D5", "nmos",
         dns.dns_advertised),
    Case("dns-srv-target", "SRV target resolves and is named by the TLS certificate", "D2, S2",
         "nmos", dns.dns_srv_target),
    Case("dns-txt-pri", "TXT pri present and an integer", "D3", "nmos", dns.dns_txt_pri),
    Case("dns-api-selector", "TXT api_selector matches the tested label", "D4", "nmos",
         dns.dns_api_selector),
    # BCP-003-01 TLS.
    Case("server-certificate-valid", "Server certificate verifies against the trust anchors",
         "S2", "all", tls.server_certificate_valid),
    Case("tls12", "TLS 1.2 supported", "T1, E11", "all", tls.tls12),
    Case("tls13", "TLS 1.3 supported", "T1", "nmos", tls.tls13),
    Case("tls10-refused", "TLS 1.0 refused", "T1, E11", "all",
         tls.legacy_refused(ssl.TLSVersion.TLSv1)),
    Case("tls11-refused", "TLS 1.1 refused", "T1, E11", "all",
         tls.legacy_refused(ssl.TLSVersion.TLSv1_1)),
    Case("tls12-mandatory-suite", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 supported", "T3",
         "nmos", tls.tls12_mandatory_suite),
    Case("tls12-listed-suites", "Recommended TLS 1.2 suites supported", "T3", "nmos",
         tls.tls12_listed_suites),
    Case("tls13-mandatory-suite", "TLS_AES_128_GCM_SHA256 supported", "T2", "nmos",
         tls.tls13_mandatory_suite),
    Case("tls13-listed-suites", "Recommended TLS 1.3 suites supported", "T2", "nmos",
         tls.tls13_listed_suites),
    Case("tls12-cbc-sha1-refused", "Non-listed suites refused: CBC with SHA-1", "T3", "nmos",
         tls.non_listed_refused("cbc-sha1")),
    Case("tls-3des-refused", "Non-listed suites refused: 3DES", "T3", "nmos",
         tls.non_listed_refused("3des")),
    Case("tls12-other-suites-refused", "Non-listed suites refused: everything else offered",
         "T3", "nmos", tls.non_listed_refused("other")),
    Case("server-certificate-types", "RSA and ECDSA server certificates", "T5", "nmos",
         tls.server_certificate_types),
    Case("server-certificate-names", "No wildcard or IP names in server certificates", "T4",
         "nmos", tls.server_certificate_names),
    Case("no-plain-http", "No plain HTTP on the EST port", "T5", "all", tls.no_plain_http),
    # Revocation status the issued certificates point at (OCSP via AIA, CRL distribution point).
    Case("revocation-pointers", "Issued certificate names an OCSP responder and a CRL (info)",
         "C16", "all", revocation.revocation_pointers),
    Case("ocsp-good", "OCSP answers good, signed by the issuer, for a fresh certificate", "C16",
         "all", revocation.ocsp_good),
    Case("crl-good", "CRL signed by the issuer, fresh, without a fresh certificate", "C16", "all",
         revocation.crl_good),
    Case("ocsp-revoked", "OCSP answers revoked once the operator revoked a certificate", "C16",
         "all", revocation.ocsp_revoked),
    Case("crl-revoked", "CRL lists a certificate once the operator revoked it", "C16", "all",
         revocation.crl_revoked),
)
# fmt: on

CASE_IDS: tuple[str, ...] = tuple(case.id for case in ALL_CASES)
assert len(set(CASE_IDS)) == len(CASE_IDS), "case ids must be unique"
