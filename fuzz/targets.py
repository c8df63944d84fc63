"""The fuzz targets: every parser in ``estkit.protocol``, each fed raw bytes.

Why a separate module: the coverage-guided driver (atheris), the hypothesis fallback and the
bounded run in the test suite all exercise exactly these functions with exactly these rules.

The rule every target checks (docs/internal-api.md): a parser either returns, or raises one of the
documented, typed errors (``EstProtocolError`` subclasses; ``ValueError`` where the contract says
so). Anything else, a ``TypeError``, ``IndexError``, a raw ``cryptography`` or ``asn1crypto``
exception, recursion, is a crash: on the server it would become a 500 instead of a 400.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from estkit.protocol import (
    PKCS8,
    CsrPolicy,
    EstProtocolError,
    build_certs_only,
    build_csr,
    build_serverkeygen_response,
    check_csr_policy,
    decode_base64_body,
    decode_body,
    decode_certs_only_body,
    decode_csr_body,
    decode_csrattrs,
    describe_csr,
    encode_base64_body,
    generate_private_key,
    load_private_key,
    parse_certs_only,
    parse_csr,
    parse_fingerprint,
    parse_media_type,
    parse_path,
    parse_retry_after,
    parse_serverkeygen_response,
    private_key_to_der,
    validate_label,
)

# A fixed "now" keeps parse_retry_after deterministic (HTTP-dates are relative to it).
FIXED_NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
# Inputs longer than this are cut: the server never hands a parser more than its body limit
# (64 KiB), and shorter inputs keep the fuzzer fast.
MAX_INPUT_BYTES = 64 * 1024


@dataclass(frozen=True)
class Target:
    """One parser under test: ``run(data)`` calls it; ``allowed`` are its documented errors."""

    name: str
    run: Callable[[bytes], object]
    allowed: tuple[type[BaseException], ...] = (EstProtocolError,)


def _text(data: bytes) -> str:
    # latin-1 maps every byte to one character, so the fuzzer controls every code point < 256.
    return data.decode("latin-1")


def _csr_full(data: bytes) -> object:
    """Parse, then describe and policy-check, as the server does with every CSR body."""
    csr = decode_csr_body(data)
    info = describe_csr(csr)
    check_csr_policy(info, CsrPolicy())
    return info


def _csrattrs_full(data: bytes) -> object:
    attrs, warnings = decode_csrattrs(data)
    # What a client does with the result: every derived property must also be safe.
    return (
        attrs.requires_pop,
        attrs.requested_curve,
        attrs.requested_rsa_bits,
        attrs.requested_hash,
        attrs.requested_extension_oids,
        attrs.describe(),
        warnings,
    )


def _media_type_full(data: bytes) -> object:
    media_type = parse_media_type(_text(data))
    return (str(media_type), media_type.essence, media_type.matches("application/pkcs10"))


def _serverkeygen(data: bytes) -> object:
    """First line = the Content-Type header, the rest = the body."""
    content_type, _, body = data.partition(b"\n")
    return parse_serverkeygen_response(body, _text(content_type))


def _retry_after(data: bytes) -> object:
    value = parse_retry_after(_text(data), FIXED_NOW)
    if value is not None and not value >= 0:  # also catches NaN
        raise AssertionError(f"parse_retry_after returned {value!r}; expected None or >= 0")
    return value


def _path(data: bytes) -> object:
    return parse_path(_text(data))


def _label(data: bytes) -> object:
    return validate_label(_text(data))


def _certs_only_body(data: bytes) -> object:
    return decode_certs_only_body(data)


TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target("decode_body", decode_body),
        Target("decode_base64_body", decode_base64_body),
        Target("parse_csr", parse_csr),
        Target("decode_csr_body", _csr_full),
        Target("parse_certs_only", parse_certs_only),
        Target("decode_certs_only_body", _certs_only_body),
        Target("decode_csrattrs", _csrattrs_full),
        Target("parse_media_type", _media_type_full),
        Target("parse_serverkeygen_response", _serverkeygen),
        # Documented to return None for anything unusable: no exception is allowed at all.
        Target("parse_retry_after", _retry_after, allowed=()),
        Target("parse_path", _path),
        Target("validate_label", _label),
        Target("parse_fingerprint", lambda data: parse_fingerprint(_text(data)), (ValueError,)),
        Target("load_private_key", load_private_key),
    )
}


@dataclass(frozen=True)
class Outcome:
    """What one input did: ``crash`` is None when the parser behaved."""

    crash: BaseException | None


def check_input(target: Target, data: bytes) -> Outcome:
    """Run one input; an exception outside ``target.allowed`` is a crash."""
    try:
        target.run(data[:MAX_INPUT_BYTES])
    except target.allowed:
        return Outcome(None)
    except Exception as exc:  # includes RecursionError: deep nesting must be a typed error too
        return Outcome(exc)
    return Outcome(None)


# ------------------------------------------------------------------------------------------------
# seeds: valid (and nearly valid) examples of every input, so mutation starts from deep paths


def _seed_material() -> dict[str, list[bytes]]:
    key = generate_private_key("p256")
    rsa_key = generate_private_key("rsa2048")
    csr = build_csr(
        key,
        common_name="seed.example.com",
        dns_names=["seed.example.com"],
        serial_number="SEED-1",
        challenge_password="c2VlZA==",
    )
    csr_der = csr.public_bytes(serialization.Encoding.DER)
    csr_pem = csr.public_bytes(serialization.Encoding.PEM)
    rsa_csr_der = build_csr(rsa_key, common_name="rsa.example.com").public_bytes(
        serialization.Encoding.DER
    )
    now = dt.datetime.now(dt.UTC)
    name = x509.Name.from_rfc4514_string("CN=seed CA")
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pkcs7 = build_certs_only([certificate])
    # RFC 7030 section 4.5.2 example CsrAttrs.
    csrattrs = base64.b64decode(
        "MEEGCSqGSIb3DQEJBzASBgcqhkjOPQIBMQcGBSuBBAAiMBYGCSqGSIb3DQEJDjEJBgcrBgEBAQEWBggqhkjOPQQDAw=="
    )
    multipart, multipart_type = build_serverkeygen_response(
        private_key_to_der(key), PKCS8, [certificate]
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return {
        "decode_body": [encode_base64_body(csr_der), csr_pem, csr_der, csr_der + b"\0\0"],
        "decode_base64_body": [encode_base64_body(csr_der), b"YQ==\r\n", b" \t"],
        "parse_csr": [csr_der, rsa_csr_der],
        "decode_csr_body": [encode_base64_body(csr_der), csr_pem, csr_der, rsa_csr_der],
        "parse_certs_only": [pkcs7],
        "decode_certs_only_body": [
            encode_base64_body(pkcs7),
            pkcs7,
            certificate.public_bytes(serialization.Encoding.PEM),
        ],
        "decode_csrattrs": [csrattrs, b"\x30\x00", csrattrs + b"\0"],
        "parse_media_type": [
            b"application/pkcs7-mime; smime-type=certs-only",
            b'multipart/mixed; boundary="a b"',
            b"text/plain; charset=utf-8",
        ],
        "parse_serverkeygen_response": [multipart_type.encode() + b"\n" + multipart],
        "parse_retry_after": [b"120", b"Wed, 21 Oct 2015 07:28:00 GMT", b"-5", b"1e9"],
        "parse_path": [
            b"/.well-known/est/cacerts",
            b"/.well-known/est/label1/simpleenroll?x=1",
        ],
        "validate_label": [b"arbitraryLabel1", b"a.b_c~d-e"],
        "parse_fingerprint": [b"sha256:" + b"ab" * 32, b"AB:" * 31 + b"AB"],
        "load_private_key": [key_pem, private_key_to_der(key)],
    }


_SEEDS: dict[str, list[bytes]] | None = None
# Inputs that once crashed a parser (``TARGET-what.bin``): replayed by the test suite and used as
# seeds, so a fixed bug stays fixed.
REGRESSIONS_DIR = Path(__file__).resolve().parent / "regressions"


def regressions(name: str) -> list[Path]:
    """Saved crash inputs for target ``name``."""
    return sorted(REGRESSIONS_DIR.glob(f"{name}-*.bin"))


def seeds(name: str) -> list[bytes]:
    """Seed inputs for ``name`` (made once per process: key generation is not free)."""
    global _SEEDS
    if _SEEDS is None:
        _SEEDS = _seed_material()
    return list(_SEEDS.get(name, [b""])) + [path.read_bytes() for path in regressions(name)]


__all__ = [
    "FIXED_NOW",
    "REGRESSIONS_DIR",
    "TARGETS",
    "Outcome",
    "Target",
    "check_input",
    "regressions",
    "seeds",
]
