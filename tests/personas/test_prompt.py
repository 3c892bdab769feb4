"""The history sent to a model fits its token budget, newest first, whole messages only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.storage.models import Message
from personas.prompt import build


def words(messages: Sequence[dict[str, Any]]) -> int:
    return sum(len(m["content"].split()) for m in messages)


def history(*texts: str) -> list[Message]:
    return [
        Message(direction="in" if i % 2 == 0 else "out", text=text) for i, text in enumerate(texts)
    ]


def test_everything_fits_in_a_large_budget() -> None:
    sent = build("be kind", history("one two", "three"), "four", 100, words)

    assert sent == [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "one two"},
        {"role": "assistant", "content": "three"},
        {"role": "user", "content": "four"},
    ]


def test_the_oldest_messages_give_way_first() -> None:
    past = history("a b c d e", "f g", "h i j")
    sent = build("sys", past, "now", 1 + 1 + 3 + 2, words)

    assert [m["content"] for m in sent] == ["sys", "f g", "h i j", "now"]


def test_the_current_message_always_goes_even_over_budget() -> None:
    sent = build("", history("old"), "a very long current message", 2, words)

    assert sent == [{"role": "user", "content": "a very long current message"}]
