"""A model's Markdown becomes each platform's dialect, with nothing in it a platform acts on."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.dialects import DIALECTS, render, to_mrkdwn


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("**bold**, *italic*, _also_ and ~~gone~~", "*bold*, _italic_, _also_ and ~gone~"),
        ("# Title\n\n## Part **two**\n\nText.", "*Title*\n\n*Part two*\n\nText."),
        ("Run `make test`.", "Run `make test`."),
        ("line one\nline two  \nline three", "line one\nline two\nline three"),
    ],
)
def test_formatting_becomes_mrkdwn(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


def test_control_characters_are_escaped_in_text_and_in_code() -> None:
    markdown = "If 1 < 2 & 3 > 2, see `a<b && c>d`:\n\n```python\nif a < b and c > d & e:\n```"
    assert to_mrkdwn(markdown) == (
        "If 1 &lt; 2 &amp; 3 &gt; 2, see `a&lt;b &amp;&amp; c&gt;d`:\n\n"
        "```\nif a &lt; b and c &gt; d &amp; e:\n```"
    )


@pytest.mark.parametrize(
    "hostile",
    [
        "<!channel>",
        "<!everyone>",
        "<!here|here>",
        "<@U0123ABC>",
        "<#C0123ABC>",
        "<!subteam^S0123|@team>",
        "[click](!channel)",
        "[me](@U0123ABC)",
        "![x](!everyone)",
        "`<!channel>`",
        "```\n<!channel>\n```",
        "[<!here>](https://example.com)",
        "**<@U0123ABC>**",
    ],
)
def test_slack_mentions_written_by_the_model_stay_inert(hostile: str) -> None:
    mrkdwn = to_mrkdwn(f"Hello {hostile} there")
    assert not re.search(r"<[!@#]", mrkdwn), mrkdwn


def test_links_keep_their_target_and_text() -> None:
    markdown = (
        "See [the docs](https://example.com/a?b=1&c=2), <https://auto.example> "
        "or [mail](mailto:a@b.c)."
    )
    assert to_mrkdwn(markdown) == (
        "See <https://example.com/a?b=1&amp;c=2|the docs>, "
        "<https://auto.example|https://auto.example> or <mailto:a@b.c|mail>."
    )


def test_links_to_other_schemes_keep_only_their_text() -> None:
    assert to_mrkdwn("[call](tel:123) and [get](ftp://example.com/x)") == "call and get"
    # markdown-it does not even read these as links: they are shown as written.
    assert to_mrkdwn("[run](javascript:alert(1))") == "[run](javascript:alert(1))"


def test_images_become_links_and_relative_ones_their_text() -> None:
    markdown = "![a <chart>](https://example.com/c.png) and ![local](c.png)"
    assert to_mrkdwn(markdown) == "<https://example.com/c.png|a &lt;chart&gt;> and local"


def test_code_keeps_its_lines_and_drops_the_language_slack_cannot_show() -> None:
    markdown = "```sh\n#!/bin/sh\necho 'hi'\n    indented\n```"
    assert to_mrkdwn(markdown) == "```\n#!/bin/sh\necho 'hi'\n    indented\n```"


def test_lists_nest_with_bullets_and_numbers() -> None:
    markdown = "- fruit\n  - apple\n    - green\n- veg\n\n1. one\n2. two"
    assert to_mrkdwn(markdown) == (
        "•   fruit\n    ◦   apple\n        ▪   green\n\n•   veg\n\n1.  one\n2.  two"
    )


def test_a_code_block_that_opens_a_list_item_starts_on_its_own_line() -> None:
    mrkdwn = to_mrkdwn("- ```\n  ls -l\n  ```\n- done")
    assert "\n```\nls -l\n```" in mrkdwn
    assert mrkdwn.startswith("•   \n```")


def test_every_line_of_a_quote_stays_quoted() -> None:
    markdown = "> first line\n> second line\n>\n> - a point\n> - another\n\nAfter."
    assert to_mrkdwn(markdown) == (
        "> first line\n> second line\n> •   a point\n> •   another\n\nAfter."
    )


def test_code_in_a_quote_starts_its_own_line() -> None:
    mrkdwn = to_mrkdwn("> Look:\n> ```\n> x < 1\n> ```\n\nAfter.")
    assert mrkdwn == "> Look:\n> \n```\nx &lt; 1\n```\n\nAfter."


def test_a_table_becomes_an_aligned_grid_in_a_code_block() -> None:
    markdown = (
        "Prices:\n\n"
        "| Item | Price | Note |\n"
        "|:-----|------:|------|\n"
        "| **Tea** | 3 | [shop](https://example.com) |\n"
        "| Coffee & cake | 12 | `<b>` |\n\n"
        "Done."
    )
    assert to_mrkdwn(markdown) == (
        "Prices:\n\n"
        "```\n"
        "Item          | Price | Note\n"
        "--------------+-------+---------------------------\n"
        "Tea           | 3     | shop (https://example.com)\n"
        "Coffee &amp; cake | 12    | &lt;b&gt;\n"
        "```\n\n"
        "Done."
    )


def test_markdown_passes_through_as_written() -> None:
    text = "**as** `is` <!channel>"
    assert DIALECTS["markdown"](text) == text


PIECES = ["a", " ", "\n", "\n\n", "<", ">", "&", "!channel", "@U1", "#C1", "[", "](", ")", "`"]
PIECES += ["```\n", "**", "|", "https://x.y", "mailto:", "![", "> ", "- ", "1. ", "&amp;", "\\"]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(PIECES), max_size=60).map("".join))
def test_no_input_produces_a_control_sequence_other_than_a_web_link(markdown: str) -> None:
    mrkdwn = to_mrkdwn(markdown)
    bare = re.sub(r"<(?:https?://|mailto:)[^\s<>|]*(?:\|[^<>]*)?>", "", mrkdwn)
    bare = re.sub(r"^> ", "", bare, flags=re.MULTILINE)  # a quote's own marker
    assert not re.search("[<>]", bare), mrkdwn
    assert not re.search(r"&(?!amp;|lt;|gt;)", mrkdwn), mrkdwn


def test_render_splits_after_converting_so_escapes_count_against_the_limit() -> None:
    markdown = "\n\n".join(["Fish & chips < 5 > 3 & more. " * 10] * 30)
    parts = render(markdown, "mrkdwn", 500)
    assert len(parts) > len(markdown) // 500
    assert all(len(part) <= 500 for part in parts)
    assert "&amp;" in parts[0] and "&" not in parts[0].replace("&amp;", "").replace(
        "&lt;", ""
    ).replace("&gt;", "")


def test_render_keeps_code_blocks_balanced_in_every_part() -> None:
    code = "```python\n" + "\n".join(f"print({i} < {i + 1})" for i in range(200)) + "\n```"
    parts = render(f"Code:\n\n{code}\n\nEnd.", "mrkdwn", 300)
    assert all(len(part) <= 300 for part in parts)
    assert all(part.count("```") % 2 == 0 for part in parts)
    assert render("plain", "markdown", 100) == ["plain"]
