"""A long reply becomes parts a platform accepts, cut where the text's structure allows."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.split import split

# Fixed examples (derandomize) so a CI run is repeatable; no deadline, the machine is shared.
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FENCE_LINE = re.compile(r"[ \t]*(`{3,}|~{3,})(.*)")


def fence_opens(line: str) -> re.Match[str] | None:
    found = FENCE_LINE.fullmatch(line)
    if found and found[1][0] == "`" and "`" in found[2]:
        return None
    return found


def fence_closes(opening: re.Match[str], line: str) -> bool:
    found = FENCE_LINE.fullmatch(line)
    return bool(
        found
        and found[1][0] == opening[1][0]
        and len(found[1]) >= len(opening[1])
        and not found[2].strip()
    )


def open_fence(lines: list[str]) -> re.Match[str] | None:
    """The fence still open after these lines, CommonMark's way (written apart from the module)."""
    opening = None
    for line in lines:
        if opening is None:
            opening = fence_opens(line)
        elif fence_closes(opening, line):
            opening = None
    return opening


def cores(part: str) -> Iterator[str]:
    """The part, then the part without a first and/or last line that is a fence line."""
    lines = part.split("\n")
    first = 1 if FENCE_LINE.fullmatch(lines[0]) else 0
    last = 1 if len(lines) > 1 and FENCE_LINE.fullmatch(lines[-1]) else 0
    for head in dict.fromkeys((0, first)):
        for tail in dict.fromkeys((0, last)):
            yield "\n".join(lines[head : len(lines) - tail])


def find(text: str, core: str, cursor: int) -> tuple[int, int] | None:
    """Where ``core`` starts in ``text`` after nothing but whitespace from ``cursor``."""
    stop = len(text) - len(text[cursor:].lstrip())
    for start in range(cursor, stop + 1):
        if core and text.startswith(core, start):
            return start, start + len(core)
    return None


def locate(text: str, parts: list[str]) -> list[tuple[int, int]]:
    """The exact property: each part, with the fence lines the splitter added taken off, is the
    next piece of ``text``, and only whitespace lies between (and around) these pieces."""
    spans: list[tuple[int, int]] = []
    cursor = 0
    for part in parts:
        span = next((s for core in cores(part) if (s := find(text, core, cursor))), None)
        assert span is not None, f"part not found in the text after {cursor}: {part!r}"
        spans.append(span)
        cursor = span[1]
    assert not text[cursor:].strip()
    return spans


# Whole sentences and code lines are sampled rather than drawn character by character: that kept
# the texts as varied where it matters (breaks, fences, widths) and the suite fast.
SENTENCES = [
    "Yes.",
    "The reply goes to Slack, Telegram and Discord!",
    "Is x<y && a&b true?",
    "déjà vu über 😀 naïve",
    "A **bold** word, a `code` span and a_snake_case name",
    "See https://example.com/a?b=1&c=2 (the docs).",
    "wordofwidth12 wordofwidth12 wordofwidth12",
    "No full stop here",
    "Mention <!here> and <@U123> stay text.",
    "\u201cQuoted.\u201d Then more",
]
CODE_LINES = [
    "",
    "def reply(text: str) -> list[str]:",
    "    return split(text, 4096)",
    "\tif a < b and c > d:",
    "        print('<!channel>')",
    "x = [1, 2, 3]  # trailing comment",
    "```",
    "~~~~~",
]
SENTENCE = st.sampled_from(SENTENCES)
GAP = st.sampled_from([" ", " ", " ", "  ", "\t"])


@st.composite
def paragraphs(draw: st.DrawFn) -> str:
    lines = draw(st.lists(st.lists(SENTENCE, min_size=1, max_size=4), min_size=1, max_size=4))
    return "\n".join(draw(GAP).join(line) for line in lines)


@st.composite
def code_blocks(draw: st.DrawFn) -> str:
    marker = draw(st.sampled_from(["```", "~~~", "````"]))
    info = draw(st.sampled_from(["", "python", "js", "c++ ", "sh title=a"]))
    indent = draw(st.sampled_from(["", "", "  ", "   "]))
    body = draw(st.lists(st.sampled_from(CODE_LINES), max_size=25))
    closing = [indent + marker] if draw(st.booleans()) or draw(st.booleans()) else []
    return "\n".join([indent + marker + info, *body, *closing])


@st.composite
def replies(draw: st.DrawFn) -> str:
    blocks = draw(st.lists(st.one_of(paragraphs(), code_blocks()), min_size=1, max_size=12))
    text = ""
    for block in blocks:
        text += block + draw(st.sampled_from(["\n\n", "\n", "\n\n\n", "\n  \n"]))
    return text


PIECES = [
    "a",
    "bc",
    "word",
    " ",
    " ",
    "\n",
    "\n\n",
    "\t",
    ".",
    "!",
    "é",
    "```",
    "~~~",
    "`",
    "x" * 40,
]
ANY_TEXT = st.lists(st.sampled_from(PIECES), max_size=400).map("".join)
LIMITS = st.one_of(st.integers(20, 400), st.integers(20, 5000))


@PROPERTY
@given(st.one_of(ANY_TEXT, replies()), LIMITS)
def test_every_part_fits_and_no_content_is_lost(text: str, limit: int) -> None:
    parts = split(text, limit)
    assert all(len(part) <= limit for part in parts)
    assert all(part and part == part.strip() for part in parts)
    locate(text, parts)


@PROPERTY
@given(replies(), st.integers(60, 3000))
def test_fences_are_balanced_and_reopened_as_written(text: str, limit: int) -> None:
    parts = split(text, limit)
    for part, (start, _end) in zip(parts, locate(text, parts), strict=True):
        assert open_fence(part.split("\n")) is None, part
        opening = open_fence(text[:start].split("\n")[:-1])
        if opening is not None:
            assert part.startswith(opening[0].strip() + "\n")


@PROPERTY
@given(replies(), st.integers(60, 3000))
def test_no_word_is_cut_when_every_word_fits(text: str, limit: int) -> None:
    spans = locate(text, split(text, limit))
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert text[end:start], f"cut inside a word: {text[end - 10 : end + 10]!r}"


def test_empty_and_blank_replies_have_no_parts() -> None:
    assert split("", 100) == []
    assert split(" \n\n\t ", 100) == []


def test_a_reply_that_fits_is_one_part_without_surrounding_whitespace() -> None:
    assert split("\n\n  Hello *there*.\n\nBye.  \n", 4096) == ["Hello *there*.\n\nBye."]


def test_a_paragraph_break_is_preferred_to_a_line_a_sentence_or_a_word() -> None:
    text = "First paragraph.\n\nSecond one, line one.\nLine two. Still two and more"
    assert split(text, 60) == [
        "First paragraph.",
        "Second one, line one.\nLine two. Still two and more",
    ]


def test_a_long_line_is_cut_after_a_sentence_then_between_words() -> None:
    text = "One sentence here. Another sentence follows and it is long enough to cut"
    assert split(text, 40) == [
        "One sentence here.",
        "Another sentence follows and it is long",
        "enough to cut",
    ]


def test_text_without_spaces_is_cut_hard_at_the_limit() -> None:
    assert split("x" * 10_000, 4096) == ["x" * 4096, "x" * 4096, "x" * 1808]


def test_a_slack_sized_reply_of_45000_characters_becomes_two_parts() -> None:
    paragraph = "Slack allows forty thousand characters in a message. " * 9
    text = "\n\n".join([paragraph.strip()] * 95)
    assert len(text) > 45_000
    parts = split(text, 40_000)
    assert len(parts) == 2
    assert all(len(part) <= 40_000 for part in parts)
    assert "\n\n".join(parts) == text


@pytest.mark.parametrize("limit", [4096, 2000])
def test_telegram_and_discord_limits_keep_paragraphs_and_code_whole(limit: int) -> None:
    prose = "A paragraph that explains a step of the answer in some detail. " * 6
    code = "```python\n" + "\n".join(f"value_{i} = compute({i})" for i in range(40)) + "\n```"
    blocks = [prose.strip(), code] * 6
    parts = split("\n\n".join(blocks), limit)
    assert all(len(part) <= limit for part in parts)
    for part in parts:
        assert set(part.split("\n\n")) <= set(blocks)


def test_a_code_block_longer_than_the_limit_is_closed_and_reopened() -> None:
    lines = [f"    print('line {i}')  # {'x' * (i % 7 + 1)}" for i in range(300)]
    text = "Here:\n\n```python\ndef show():\n" + "\n".join(lines) + "\n```\n\nDone."
    parts = split(text, 500)
    assert len(parts) > 10
    assert parts[0] == "Here:"
    assert parts[-1].endswith("\n```\n\nDone.")
    code = [*parts[1:-1], parts[-1].removesuffix("\n\nDone.")]
    for part in code:
        assert part.startswith("```python\n") and part.endswith("\n```")
        assert len(part) <= 500
    body = [line for part in code for line in part.split("\n")[1:-1]]
    assert body == ["def show():", *lines]


def test_tilde_fences_keep_their_marker_and_info_string() -> None:
    text = "~~~~ sh title=run\n" + "\n".join(f"echo {i}" for i in range(50)) + "\n~~~~"
    parts = split(text, 120)
    assert len(parts) > 1
    assert all(p.startswith("~~~~ sh title=run\n") and p.endswith("\n~~~~") for p in parts)


def test_a_fence_left_open_by_the_model_is_closed() -> None:
    assert split("Look:\n\n```js\nlet a = 1;", 4096) == ["Look:\n\n```js\nlet a = 1;\n```"]


def test_an_indented_fence_is_closed_where_it_was_opened_and_reopened_at_the_margin() -> None:
    text = "1. Run:\n   ```sh\n" + "\n".join(f"   make step{i}" for i in range(20)) + "\n   ```"
    parts = split(text, 100)
    assert parts[0].startswith("1. Run:\n   ```sh\n   make step0") and parts[0].endswith("\n   ```")
    assert all(p.startswith("```sh\n   make") for p in parts[1:])


def test_a_fence_too_long_for_the_limit_is_split_as_text() -> None:
    text = "```" + "a" * 50 + "\ncode\n```"
    parts = split(text, 20)
    assert all(len(part) <= 20 for part in parts)
    locate(text, parts)


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        split("text", 0)
