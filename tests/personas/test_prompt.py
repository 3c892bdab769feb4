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


def test_files_share_one_budget_in_order() -> None:
    from bot.messages import Attachment
    from personas.prompt import attach

    first, second = Attachment("a.txt", "text/plain"), Attachment("b.txt", "text/plain")
    png = Attachment("c.png", "image/png")
    given = attach([(first, "one two three"), (second, "four five six")], [png], 5, words)

    assert given.text.startswith("--- a.txt ---\none two three\n\n--- b.txt ---\nfour")
    assert given.cut == (("b.txt", len("four"), len("four five six")),)
    assert "[b.txt is cut here: only its first 4 of 13 characters fit" in given.text
    assert given.text.endswith("[Also attached, but not text, so not included: c.png (image/png)]")


def test_files_sent_with_the_message_do_not_push_the_history_out() -> None:
    past = history("a b", "c d")
    sent = build("sys", past, "now", 1 + 2 + 2 + 1, words, attached="--- f.txt ---\nx y z w")

    assert [m["content"] for m in sent] == ["sys", "a b", "c d", "now\n\n--- f.txt ---\nx y z w"]
