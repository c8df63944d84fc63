"""Signatures per second through a PKCS#11 token (SoftHSM2) against the same key type in-process.

Why: a CA whose keys live in a token pays a library call, a session lock and (for certificates)
a throwaway-key draft, the reassembly and a verification per signature (estkit.ca.signer). This
shows what that costs, on two levels, for P-256 and RSA-2048:

- raw signatures over a 1 KiB TBS-sized message (the token call alone vs ``key.sign``);
- whole certificates issued by ``CertificateAuthority.issue`` (CSR checks, builder, signature).

A temporary SoftHSM2 token is initialised here (``softhsm2-util``, Debian package ``softhsm2``)
in a temporary ``SOFTHSM2_CONF``; nothing outside the temporary directory is touched.

Run: ``python benchmarks/bench_pkcs11.py [--duration SECONDS]``. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

TOKEN_LABEL = "bench"
PIN = "123456"
SO_PIN = "12345678"
# A TBS certificate of a typical leaf is 400-900 bytes.
MESSAGE_BYTES = 1024
MODULE_GLOBS = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/*/softhsm/libsofthsm2.so")
KEY_TYPES = ("p256", "rsa2048")


def _rate(label: str, func: Callable[[], object], duration: float) -> float:
    func()  # warm-up (opens the session, builds the throwaway key)
    count = errors = 0
    started = time.perf_counter()
    while time.perf_counter() - started < duration:
        try:
            func()
        except Exception:
            errors += 1
        count += 1
    elapsed = time.perf_counter() - started
    rate = count / elapsed
    print(f"  {label:<44} {rate:9.1f}/s  (n={count}, errors={errors})")
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per figure")
    args = parser.parse_args()
    util = shutil.which("softhsm2-util")
    modules = [m for pattern in MODULE_GLOBS for m in sorted(glob.glob(pattern))]
    if util is None or not modules:
        print("softhsm2 is not installed (Debian package softhsm2)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="estkit-bench-pkcs11-") as tmp:
        base = Path(tmp)
        (base / "tokens").mkdir()
        conf = base / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\n")
        os.environ["SOFTHSM2_CONF"] = str(conf)
        subprocess.run(
            [
                util,
                "--init-token",
                "--free",
                "--label",
                TOKEN_LABEL,
                "--so-pin",
                SO_PIN,
                "--pin",
                PIN,
            ],
            check=True,
            capture_output=True,
        )
        uri = f"pkcs11:token={TOKEN_LABEL}?module-path={modules[0]}&pin-value={PIN}"
        return _measure(base, uri, args.duration)


def _measure(base: Path, uri: str, duration: float) -> int:
    print(f"PKCS#11 (SoftHSM2) vs in-process, {duration:g} s per figure")
    for key_type in KEY_TYPES:
        _figures(base, uri, key_type, duration)
    return 0


def _figures(base: Path, uri: str, key_type: str, duration: float) -> None:
    from estkit.ca.authority import CertificateAuthority
    from estkit.ca.pkcs11 import Pkcs11Uri, generate_key
    from estkit.ca.profiles import Profile
    from estkit.protocol.csr import build_csr
    from estkit.protocol.keys import generate_private_key

    message = os.urandom(MESSAGE_BYTES)
    csr = build_csr(generate_private_key("p256"), common_name="bench.example.com")
    print(f"{key_type}:")
    local = generate_private_key(key_type)
    token_key = generate_key(Pkcs11Uri.parse(uri), key_type, "bench")
    algorithm = hashes.SHA256()

    def local_sign() -> bytes:
        if isinstance(local, ec.EllipticCurvePrivateKey):
            return local.sign(message, ec.ECDSA(algorithm))
        return local.sign(message, padding.PKCS1v15(), algorithm)

    raw_local = _rate("raw signature, in-process", local_sign, duration)
    raw_token = _rate(
        "raw signature, token", lambda: token_key._sign_in_token(message, algorithm), duration
    )
    file_ca = CertificateAuthority.create(base / f"file-{key_type}", key_type=key_type)
    token_ca = CertificateAuthority.create(
        base / f"token-{key_type}", key_type=key_type, key_uri=uri
    )
    cert_local = _rate(
        "certificates issued, key file", lambda: file_ca.issue(csr, Profile()), duration
    )
    cert_token = _rate(
        "certificates issued, token", lambda: token_ca.issue(csr, Profile()), duration
    )
    print(
        f"  token/in-process: raw {raw_token / raw_local:.2f}x, "
        f"certificates {cert_token / cert_local:.2f}x"
    )


if __name__ == "__main__":
    raise SystemExit(main())
