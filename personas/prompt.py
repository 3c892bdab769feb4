"""The messages sent to a model: the persona's system prompt and as much recent history as fits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bot.storage.models import Message

Counter = Callable[[Sequence[dict[str, Any]]], int]


def build(
    system_prompt: str, history: Sequence[Message], current: str, budget: int, count: Counter
) -> list[dict[str, Any]]:
    """Newest history first until ``budget`` tokens are spent; the current message always goes."""
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    tail = [{"role": "user", "content": current}]
    remaining = budget - count(head + tail)
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
