"""Install the real third-party programs the tests drive (dnsmasq, PostgreSQL, testssl.sh, ...).

Why here and not in a README step: the test command must work on a fresh machine, so the fixture
that needs a program makes sure it is there. On Debian as root this runs apt-get once per package;
elsewhere the test is skipped with a message saying what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

_LOCK = threading.Lock()
_APT_UPDATED = False
APT_TIMEOUT_SECONDS = 900


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(
        # Wait for another apt run (a second fixture, unattended upgrades) to release the lock.
        ["apt-get", "-o", "DPkg::Lock::Timeout=600", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=APT_TIMEOUT_SECONDS,
    )


def ensure_program(program: str, package: str, *, extra_paths: tuple[str, ...] = ()) -> str:
    """Return the path of ``program``, installing Debian ``package`` if it is missing.

    ``extra_paths`` are directories to look in besides PATH (PostgreSQL keeps ``initdb`` in
    /usr/lib/postgresql/<version>/bin).
    """
    global _APT_UPDATED

    def find() -> str | None:
        found = shutil.which(program)
        if found:
            return found
        for pattern in extra_paths:
            for candidate in sorted(Path("/").glob(pattern.lstrip("/")), reverse=True):
                if (candidate / program).exists():
                    return str(candidate / program)
        return None

    with _LOCK:
        path = find()
        if path:
            return path
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            pytest.skip(f"{program} is not installed; install the Debian package '{package}'")
        if not _APT_UPDATED:
            _apt("update")
            _APT_UPDATED = True
        result = _apt("install", "-y", "--no-install-recommends", package)
        path = find()
        if not path:
            pytest.fail(
                f"could not install {package} for {program}: "
                f"{(result.stderr or result.stdout)[-800:]}"
            )
        return path
