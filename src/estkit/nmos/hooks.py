"""Running the ``on_change`` hook after a new certificate and key are installed.

Why a hook: the process that serves TLS (the NMOS node API, a web server) must reload to pick up
the new pair; estkit cannot know how. Like certbot's deploy hooks, the command gets the paths in
environment variables and its failure is reported but never undoes the installation: the new
pair is valid and already on disk.

Environment given to the hook:
``ESTKIT_EVENT`` (``provisioned``, ``renewed``, ``root-changed``, ``removed``),
``ESTKIT_KEY_TYPE`` (``rsa``/``ecdsa``, empty for root events), ``ESTKIT_CERT``, ``ESTKIT_KEY``,
``ESTKIT_ROOT_CA``, ``ESTKIT_OUTPUT_DIR``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# A reload command that takes longer than this is stuck; the agent must go on renewing.
HOOK_TIMEOUT_SECONDS = 120
# Keep only the end of a failing hook's output for the log/status.
MAX_HOOK_OUTPUT_CHARS = 2000


@dataclass(frozen=True)
class HookResult:
    command: str
    returncode: int | None
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        if self.returncode is None:
            return f"on_change hook {self.command!r} did not finish: {self.output}"
        if self.ok:
            return f"on_change hook {self.command!r} succeeded"
        return f"on_change hook {self.command!r} exited with {self.returncode}: {self.output}"


def hook_environment(
    event: str,
    *,
    slot: str | None,
    cert_path: Path | None,
    key_path: Path | None,
    root_ca_path: Path,
    output_dir: Path,
) -> dict[str, str]:
    return {
        "ESTKIT_EVENT": event,
        "ESTKIT_KEY_TYPE": slot or "",
        "ESTKIT_CERT": str(cert_path) if cert_path else "",
        "ESTKIT_KEY": str(key_path) if key_path else "",
        "ESTKIT_ROOT_CA": str(root_ca_path),
        "ESTKIT_OUTPUT_DIR": str(output_dir),
    }


def run_hook(
    command: str | Sequence[str], variables: Mapping[str, str], *, cwd: Path | None = None
) -> HookResult:
    """Run ``command`` (a shell string, or an argv list run without a shell) with ``variables``."""
    shown = command if isinstance(command, str) else " ".join(command)
    env = dict(os.environ, **variables)
    try:
        completed = subprocess.run(
            command if isinstance(command, str) else list(command),
            shell=isinstance(command, str),
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=HOOK_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return HookResult(shown, None, f"killed after {HOOK_TIMEOUT_SECONDS} s")
    except OSError as exc:
        return HookResult(shown, None, f"could not start: {exc.strerror or exc}")
    output = (completed.stdout + completed.stderr).strip()[-MAX_HOOK_OUTPUT_CHARS:]
    return HookResult(shown, completed.returncode, output)
