"""The IS-04 tag a node advertises about certificate provisioning (BCP-003-03 C17).

An NMOS node lists in its IS-04 Node resource which BCP-003-03 versions it runs, so a controller
can tell which devices renew their certificates themselves: ``"urn:x-nmos:tag:certprov":
["v1.0"]`` when EST is enabled, an empty list when it is switched off (C2).
"""

from __future__ import annotations

CERTPROV_TAG = "urn:x-nmos:tag:certprov"
SUPPORTED_VERSIONS = ("v1.0",)


def certprov_tag(est_enabled: bool) -> dict[str, list[str]]:
    """The tag to merge into the IS-04 Node resource's ``tags``."""
    return {CERTPROV_TAG: list(SUPPORTED_VERSIONS) if est_enabled else []}
