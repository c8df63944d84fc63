"""Third-party witnesses: OpenSSL checks what estkit wrote."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

OPENSSL = shutil.which("openssl") or "openssl"


def openssl_verify(root: Path, chain_file: Path) -> subprocess.CompletedProcess[str]:
    """Third-party witness: does OpenSSL accept the installed chain against the installed root?"""
    return subprocess.run(
        [OPENSSL, "verify", "-CAfile", str(root), "-untrusted", str(chain_file), str(chain_file)],
        capture_output=True,
        text=True,
        check=False,
    )
