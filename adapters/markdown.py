"""Markdown from personas and workflows, turned into HTML a page can show without risk.

Rendered on the server with markdown-it-py (CommonMark, tables, strikethrough) rather than
in the browser: one well-kept parser, no sanitiser to vendor and keep current in the page.
Raw HTML in the text is escaped, never passed through; links keep only http, https and
mailto targets and open in a new tab without access to the page; images become links (an
image would load from anywhere the text names, and the page's CSP refuses them anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import OptionsDict

SAFE_SCHEMES = ("http:", "https:", "mailto:")


def _safe_link(url: str) -> bool:
    return url.strip().lower().startswith(SAFE_SCHEMES)


def _link_open(
    renderer: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: Any
) -> str:
    tokens[idx].attrSet("target", "_blank")
    tokens[idx].attrSet("rel", "noopener noreferrer nofollow")
    return renderer.renderToken(tokens, idx, options, env)


def _parser() -> MarkdownIt:
    # Line breaks are kept as written: command replies (/help) are lines of text, not prose.
    md = MarkdownIt("commonmark", {"html": False, "breaks": True})
    md.enable(["table", "strikethrough"])
    md.disable("image")
    md.validateLink = _safe_link  # type: ignore[method-assign]
    md.add_render_rule("link_open", _link_open)
    return md


_MD = _parser()


def to_html(text: str) -> str:
    """``text`` as Markdown, rendered to HTML with nothing executable in it."""
    html: str = _MD.render(text)
    return html
