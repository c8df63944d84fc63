"""The console's pages as HTML: pure functions of store data, every value escaped."""

from estkit.console.views.ca import ca_content
from estkit.console.views.certificates import OPERATOR_REVOCATION_REASONS, certificates_content
from estkit.console.views.common import (
    MESSAGE_STYLE_HASH,
    PageContext,
    digest_of,
    message_page,
    notice_box,
    page,
)
from estkit.console.views.dashboard import dashboard_content
from estkit.console.views.requests import requests_content

__all__ = [
    "MESSAGE_STYLE_HASH",
    "OPERATOR_REVOCATION_REASONS",
    "PageContext",
    "ca_content",
    "certificates_content",
    "dashboard_content",
    "digest_of",
    "message_page",
    "notice_box",
    "page",
    "requests_content",
]
