"""The EST server's address: origin, optional label, operation URLs and the same-origin rule.

Why its own module: every request URL and every redirect decision derives from here, so the rule
"follow a redirect only to the same scheme, host and port" (RFC 7030 §3.2.1, checklist E10) is
written once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import httpx

from estkit.protocol import WELL_KNOWN_EST, build_path, validate_label

DEFAULT_HTTPS_PORT = 443
# Operation URLs kept ready: 6 operations for a handful of servers/labels per process.
MAX_CACHED_URLS = 256


@dataclass(frozen=True)
class EstEndpoint:
    """``https://host[:port]`` plus an optional label (E7)."""

    origin: httpx.URL
    label: str | None = None

    @classmethod
    def parse(cls, url: str, label: str | None = None) -> EstEndpoint:
        """Accept ``https://host[:port]`` with or without ``/.well-known/est[/label]``.

        Raises ``ValueError`` with the fix for anything else (plain http, other paths, a label
        given twice).
        """
        try:
            parsed = httpx.URL(url.strip())
        except (httpx.InvalidURL, TypeError) as exc:
            raise ValueError(f"not a valid server URL {url!r}: {exc}") from None
        if parsed.scheme != "https":
            raise ValueError(
                f"EST needs HTTPS, got {url!r}: use https://host[:port] (RFC 7030 §3.2)"
            )
        if not parsed.host:
            raise ValueError(f"server URL {url!r} has no host name")
        if parsed.query or parsed.fragment:
            raise ValueError(f"server URL {url!r} must not have a query or fragment")
        path = parsed.path.rstrip("/")
        url_label: str | None = None
        if path and path != WELL_KNOWN_EST:
            if not path.startswith(WELL_KNOWN_EST + "/"):
                raise ValueError(
                    f"server URL path {parsed.path!r} is not {WELL_KNOWN_EST}[/label]; "
                    "give just https://host[:port] and the label separately"
                )
            url_label = path[len(WELL_KNOWN_EST) + 1 :]
        if url_label and label and url_label != label:
            raise ValueError(
                f"label given twice and differently: {url_label!r} in the URL, {label!r} as option"
            )
        chosen = label or url_label or None
        if chosen is not None:
            chosen = validate_label(chosen)
        origin = parsed.copy_with(path="/", query=None, fragment=None)
        return cls(origin=origin, label=chosen)

    @property
    def base_url(self) -> str:
        return str(self.origin).rstrip("/")

    def url_for(self, operation: str) -> httpx.URL:
        return _operation_url(self.origin, self.label, operation)

    def __str__(self) -> str:
        return self.base_url + build_path("cacerts", self.label).rsplit("/", 1)[0]


@functools.lru_cache(maxsize=MAX_CACHED_URLS)
def _operation_url(origin: httpx.URL, label: str | None, operation: str) -> httpx.URL:
    # Cached: building a URL re-parses it, a measurable part of the client's per-request cost.
    return origin.copy_with(path=build_path(operation, label))


def effective_port(url: httpx.URL) -> int:
    return url.port or DEFAULT_HTTPS_PORT


def same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    """Scheme, host and port all equal (RFC 6454 origin), hosts compared case-insensitively."""
    return (
        a.scheme == b.scheme
        and a.host.lower() == b.host.lower()
        and effective_port(a) == effective_port(b)
    )
