"""Tiny, escaping-by-default HTML building for the console.

Why not a template engine: jinja2 is not a dependency of estkit, and the console's pages are a
handful of tables. Every value that is not already :class:`Html` is passed through
``html.escape`` on its way into a page, so a certificate subject such as
``CN=<script>`` can never become markup. Markup is only ever built by the helpers here.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from string import Template

AttrValue = str | int | bool | None


class Html(str):
    """A string that is already safe to insert into a page (built by these helpers)."""

    __slots__ = ()


def esc(value: object) -> Html:
    """Escape ``value`` for text or a quoted attribute, unless it is already :class:`Html`."""
    if isinstance(value, Html):
        return value
    return Html(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[object], separator: str = "") -> Html:
    """Concatenate parts, escaping each one that is not already markup."""
    return Html(esc(separator).join(esc(part) for part in parts))


def _attributes(attrs: Mapping[str, AttrValue]) -> str:
    rendered = []
    for name, value in attrs.items():
        # Python keywords and dashes: class_ -> class, data_live -> data-live.
        attr = name.rstrip("_").replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            rendered.append(f" {attr}")
        else:
            rendered.append(f' {attr}="{esc(value)}"')
    return "".join(rendered)


VOID_ELEMENTS = frozenset({"input", "br", "meta", "link", "img", "hr"})


def tag(element: str, /, *content: object, **attrs: AttrValue) -> Html:
    """Build one element: ``tag("td", "x", class_="num")`` -> ``<td class="num">x</td>``."""
    opening = f"<{element}{_attributes(attrs)}>"
    if element in VOID_ELEMENTS:
        return Html(opening)
    return Html(f"{opening}{join(content)}</{element}>")


@cache
def _load_template(name: str) -> Template:
    text = resources.files("estkit.console").joinpath("templates", name).read_text("utf-8")
    return Template(text)


def render(template_name: str, **values: object) -> Html:
    """Fill a template from ``templates/`` with escaped values (``$name`` placeholders)."""
    return Html(_load_template(template_name).substitute({k: esc(v) for k, v in values.items()}))
