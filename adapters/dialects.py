"""Model replies are Markdown; each platform reads its own dialect of it.

A dialect is one function from Markdown to the text a platform shows, registered by name in
``DIALECTS``; an adapter names its dialect and its text limit, and ``render`` gives it the
parts to send. Conversion comes before splitting: a dialect changes the length (Slack's
``&amp;`` is five characters for one), so the parts are measured in the text that is sent,
and the splitter's fences are the ones each dialect keeps (``` for Markdown and mrkdwn).
Telegram (HTML), Discord (Markdown within its limits) and email (HTML and text) join as more
functions here.

Slack's mrkdwn comes from slackify-markdown, built on the markdown-it-py parser the web chat
already uses (a parser, unlike regex converters such as markdown-to-mrkdwn). Its renderer is a
markdown-it renderer, and markdown-it renders each token type with the method of that name, so
``_Mrkdwn`` overrides the rules where its output is unsafe or lossy rather than changing the
library: Slack reads ``&``, ``<`` and ``>`` as control characters everywhere, code included
(https://api.slack.com/reference/surfaces/formatting#escaping), so every one the model wrote is
escaped and ``<!channel>`` or ``<@U…>`` in a reply stays text instead of notifying people;
links keep only web and mail targets; shebang lines in code are kept; every line of a quote
stays quoted. Slack has no tables, so a table becomes an aligned grid in a code block before
conversion. Never post with ``link_names`` or ``parse=full``: those make a plain ``@here``
in model text notify.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from markdown_it import MarkdownIt
from markdown_it.token import Token
from slackify_markdown.slackify import SlackifyMarkdown

from adapters.markdown import SAFE_SCHEMES
from adapters.split import split

Dialect = Literal["markdown", "mrkdwn"]


def identity(markdown: str) -> str:
    """Markdown as written, for platforms that read Markdown."""
    return markdown


def to_mrkdwn(markdown: str) -> str:
    """``markdown`` as Slack mrkdwn, with no mention, link or escape the model did not mean."""
    text = _tables_as_code(markdown.replace("\r\n", "\n").replace("\r", "\n"))
    mrkdwn: str = _Mrkdwn(text).slackify()
    return mrkdwn.strip("\n")


DIALECTS: dict[Dialect, Callable[[str], str]] = {"markdown": identity, "mrkdwn": to_mrkdwn}


def render(text: str, dialect: Dialect, limit: int) -> list[str]:
    """A Markdown reply in ``dialect``, in parts of at most ``limit`` characters each."""
    return split(DIALECTS[dialect](text), limit)


def _escape(text: str) -> str:
    return html.escape(text, quote=False)


def _safe(url: str) -> bool:
    return url.strip().lower().startswith(SAFE_SCHEMES)


def _target(url: str) -> str:
    # markdown-it already percent-encodes < > and |, the characters that end a Slack link.
    return _escape(url).replace("|", "%7C")


Rule = Callable[..., str]
Tokens = Sequence[Token]


class _Mrkdwn(SlackifyMarkdown):  # type: ignore[misc]  # the library ships no type hints
    """slackify-markdown's renderer with the rules where a reply could do harm replaced."""

    def __init__(self, markdown_text: str) -> None:
        super().__init__(markdown_text)
        self._quotes = 0
        self._link_kept = False

    def text(self, tokens: Tokens, idx: int, options: Any, env: Any) -> str:
        return _escape(tokens[idx].content)

    def code_inline(self, tokens: Tokens, idx: int, options: Any, env: Any) -> str:
        return f"`{_escape(tokens[idx].content)}`"

    def fence(self, tokens: Tokens, idx: int, options: Any, env: Any) -> str:
        # A blank line after it, as in the Markdown: the splitter prefers to cut there.
        lead = "\n" if self._quotes else _lead(tokens, idx)  # a quote's "> " precedes it
        return f"{lead}```\n{_escape(tokens[idx].content)}```{self.NEW_LINE * 2}"

    code_block = fence

    def link_open(self, tokens: Tokens, idx: int, options: Any, env: Any) -> str:
        href = str(tokens[idx].attrGet("href") or "")
        self._link_kept = _safe(href)
        if not self._link_kept:
            return ""
        return f"<{_target(href)}" + ("" if tokens[idx + 1].type == "link_close" else "|")

    def link_close(self, tokens: Tokens, idx: int, options: Any, env: Any) -> str:
        return ">" if self._link_kept else ""

    def image(self, tokens: Tokens, idx: int, options: Any, env: Any) -> str:
        src, alt = str(tokens[idx].attrGet("src") or ""), _escape(tokens[idx].content)
        if not _safe(src):
            return alt
        return f"<{_target(src)}|{alt}>" if alt else f"<{_target(src)}>"

    def blockquote_open(self, tokens: Tokens, idx: int, options: Any, env: Any) -> str:
        self._quotes += 1
        return f"{_lead(tokens, idx)}> " if self._quotes == 1 else ""  # Slack has no nesting

    def blockquote_close(self, tokens: Tokens, idx: int, options: Any, env: Any) -> str:
        self._quotes -= 1
        close: Rule = super().blockquote_close
        return close(tokens, idx, options, env) if not self._quotes else ""

    def softbreak(self, tokens: Tokens, idx: int, options: Any, env: Any) -> str:
        return "\n> " if self._quotes else "\n"

    hardbreak = softbreak

    def paragraph_close(self, tokens: Tokens, idx: int, options: Any, env: Any) -> str:
        if self._quotes and not _ends_quote(tokens, idx):
            return "\n> "
        close: Rule = super().paragraph_close
        return close(tokens, idx, options, env)


def _lead(tokens: Tokens, idx: int) -> str:
    """A newline when a block would start on its list item's bullet line: Slack reads code
    fences and quotes only at the start of a line (and so does the splitter)."""
    return "\n" if idx and tokens[idx - 1].type == "list_item_open" else ""


def _ends_quote(tokens: Tokens, idx: int) -> bool:
    """Only closing tokens follow ``idx`` before its quote ends."""
    for token in tokens[idx + 1 :]:
        if token.type == "blockquote_close":
            return True
        if token.nesting != -1:
            return False
    return True


_TABLES = MarkdownIt("commonmark").enable("table")
# A table needs a delimiter row such as |---|:--:|; without one, parsing twice is waste.
_DELIMITER_ROW = re.compile(r"^(?=.*\|)(?=.*-)[ \t|:-]+$", re.MULTILINE)


def _tables_as_code(markdown: str) -> str:
    """Top-level tables replaced by aligned grids in code blocks (nested ones stay as text)."""
    if not _DELIMITER_ROW.search(markdown):
        return markdown
    lines = markdown.split("\n")
    for (start, end), rows in reversed(list(_tables(_TABLES.parse(markdown)))):
        lines[start:end] = [_grid(rows)]
    return "\n".join(lines)


def _tables(tokens: Tokens) -> Iterator[tuple[list[int], list[list[str]]]]:
    opened = None
    for i, token in enumerate(tokens):
        if token.type == "table_open" and token.level == 0 and token.map:
            opened = i
        elif token.type == "table_close" and opened is not None:
            yield tokens[opened].map or [0, 0], _rows(tokens[opened:i])
            opened = None


def _rows(tokens: Tokens) -> list[list[str]]:
    rows: list[list[str]] = []
    for token in tokens:
        if token.type == "tr_open":
            rows.append([])
        elif token.type == "inline":
            rows[-1].append(_plain(token))
    return rows


def _plain(inline: Token) -> str:
    """A cell's text without its formatting; a link keeps its target after its text."""
    words: list[str] = []
    href = ""
    for child in inline.children or []:
        if child.type == "link_open":
            href = str(child.attrGet("href") or "")
        elif child.type == "link_close" and words[-1:] != [href]:
            words.append(f" ({href})")
        else:
            words.append(child.content)
    return "".join(words)


def _grid(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) for row in rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    body = "\n".join(line.rstrip() for line in lines)
    fence = "`" * max(3, 1 + max(map(len, re.findall("`+", body)), default=0))
    return f"{fence}\n{body}\n{fence}"
