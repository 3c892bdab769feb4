"""The messages sent to a model: the persona's system prompt, as much recent history as fits,
and the message with the text files sent with it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bot.files import section
from bot.messages import Attachment

Counter = Callable[[Sequence[dict[str, Any]]], int]


class Line(Protocol):
    """A message of the history: who said it ("in": the person) and what."""

    @property
    def direction(self) -> str: ...
    @property
    def text(self) -> str: ...


def build(
    system_prompt: str,
    history: Sequence[Line],
    current: str,
    budget: int,
    count: Counter,
    attached: str = "",
) -> list[dict[str, Any]]:
    """Newest history first until ``budget`` tokens are spent; the current message always
    goes, followed by ``attached`` (the files sent with it, within a budget of their own)."""
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    tail = [{"role": "user", "content": current}]
    remaining = budget - count(head + tail)
    if attached:
        tail = [
            {"role": "user", "content": "\n\n".join(p for p in (current, attached) if p.strip())}
        ]
    kept: list[dict[str, Any]] = []
    for message in reversed(history):
        entry = {
            "role": "user" if message.direction == "in" else "assistant",
            "content": message.text,
        }
        cost = count([entry])
        if cost > remaining:
            break
        kept.append(entry)
        remaining -= cost
    return head + kept[::-1] + tail


# A token stands for at most this many characters in practice: text longer than
# budget times this cannot fit, and is cut before counting (counting 25 MB would take seconds).
MAX_CHARS_PER_TOKEN = 8


@dataclass(frozen=True)
class Attached:
    """What the files sent with a message add to it: their text as the model reads it, the
    files cut to fit (name, characters kept, characters in all), and those not read."""

    text: str = ""
    cut: tuple[tuple[str, int, int], ...] = ()
    unread: tuple[Attachment, ...] = ()


def attach(
    readable: Sequence[tuple[Attachment, str]],
    unread: Sequence[Attachment],
    budget: int,
    count: Counter,
) -> Attached:
    """The text files in order, each under its name, until ``budget`` tokens are spent (the
    rest of a file that does not fit is left out, and the model is told); then the names
    of the files that are not text."""
    parts: list[str] = []
    cut: list[tuple[str, int, int]] = []
    remaining = budget
    for attachment, content in readable:
        kept = _fit(content, remaining, count)
        remaining -= _tokens(kept, count) if kept else 0
        part = section(attachment.filename, kept)
        if len(kept) < len(content):
            cut.append((attachment.filename, len(kept), len(content)))
            part += f"\n[{attachment.filename} is cut here: {_CUT.format(len(kept), len(content))}]"
        parts.append(part)
    if unread:
        names = ", ".join(f"{a.filename} ({a.content_type})" for a in unread)
        parts.append(f"[Also attached, but not text, so not included: {names}]")
    return Attached("\n\n".join(parts), tuple(cut), tuple(unread))


_CUT = "only its first {:,} of {:,} characters fit in the prompt"


def _fit(text: str, tokens: int, count: Counter) -> str:
    """The longest start of ``text`` (near enough) that stays within ``tokens``."""
    if tokens <= 0:
        return ""
    text = text[: tokens * MAX_CHARS_PER_TOKEN]
    for _ in range(5):
        used = _tokens(text, count)
        if used <= tokens:
            return text
        text = _at_space(text[: int(len(text) * tokens / used * 0.95)])
    return text[:tokens]


def _at_space(text: str) -> str:
    """Cut back to the last space or line end, so no word is split (unless none is near)."""
    end = max(text.rfind(" "), text.rfind("\n"))
    return text[:end] if end >= len(text) // 2 else text


def _tokens(text: str, count: Counter) -> int:
    return count([{"role": "user", "content": text}])
