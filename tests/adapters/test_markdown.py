"""Markdown from a reply becomes HTML with nothing executable in it."""

from __future__ import annotations

import pytest

from adapters.markdown import to_html

LINK = 'target="_blank" rel="noopener noreferrer nofollow"'


def test_code_blocks_lists_and_links() -> None:
    html = to_html(
        "Steps:\n\n1. **install**\n2. run `make`\n\n- a\n- b\n\n"
        "```python\nprint('<hi>')\n```\n\nSee [the docs](https://example.com/a?b=1&c=2)."
    )
    assert "<ol>\n<li><strong>install</strong></li>\n<li>run <code>make</code></li>" in html
    assert "<ul>\n<li>a</li>\n<li>b</li>\n</ul>" in html
    assert "<pre><code class=\"language-python\">print('&lt;hi&gt;')\n</code></pre>" in html
    assert f'<a href="https://example.com/a?b=1&amp;c=2" {LINK}>the docs</a>' in html


@pytest.mark.parametrize(
    "text",
    [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        '<a href="javascript:alert(1)">x</a>',
        "<iframe src=https://example.com></iframe>",
        "<div onclick=alert(1)>x</div>\n\nmore",
    ],
)
def test_raw_html_is_shown_as_text(text: str) -> None:
    html = to_html(text)
    assert "<" not in html.replace("<p>", "").replace("</p>", "")


@pytest.mark.parametrize(
    "target",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "vbscript:x",
        "data:text/html,x",
        "file:///etc/passwd",
        "/api/files/1/0",
    ],
)
def test_only_web_and_mail_links_become_links(target: str) -> None:
    assert "<a " not in to_html(f"[click]({target}) <{target}>")
    assert f'<a href="mailto:a@example.com" {LINK}>' in to_html("[mail](mailto:a@example.com)")


def test_an_image_becomes_a_link_and_loads_nothing() -> None:
    html = to_html("![chart](https://example.com/chart.png)")
    assert "<img" not in html
    assert f'<a href="https://example.com/chart.png" {LINK}>chart</a>' in html


def test_lines_stay_lines() -> None:
    # Command replies such as /help are lines of plain text.
    assert to_html("Commands:\n  /help — list\n  /new — start over") == (
        "<p>Commands:<br />\n/help — list<br />\n/new — start over</p>\n"
    )
