"""Slash-command parsing and the registry every command (built-in or contributed) lives in."""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot import replies
from bot.errors import UserFacingError
from bot.names import closest
from bot.turns import Reply, Turn

if TYPE_CHECKING:
    from bot.core import Core

Handler = Callable[["Core", Turn, list[str]], Awaitable[Reply]]
# Commands stored at run time (a workflow's /digest): None when the name is not theirs.
Fallback = Callable[["Core", Turn, str, list[str]], Awaitable[Reply | None]]


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    summary: str
    handler: Handler
    min_args: int = 0
    max_args: int | None = 0


@dataclass
class CommandRegistry:
    commands: dict[str, Command] = field(default_factory=dict)
    fallbacks: list[Fallback] = field(default_factory=list)

    def add(self, command: Command) -> None:
        if command.name in self.commands:
            raise ValueError(f"command /{command.name} is registered twice")
        self.commands[command.name] = command

    def extend(self, commands: Iterable[Command]) -> None:
        for command in commands:
            self.add(command)

    def listing(self) -> list[tuple[str, str]]:
        return [(c.usage, c.summary) for c in sorted(self.commands.values(), key=lambda c: c.name)]

    def closest(self, name: str) -> str | None:
        found = closest(name, self.commands, cutoff=0.5)
        if found:
            return found
        prefixed = [known for known in self.commands if known.startswith(name[:2])]
        return prefixed[0] if name and len(prefixed) == 1 else None

    async def dispatch(self, core: Core, turn: Turn) -> Reply:
        name, args = parse(turn.text)
        command = self.commands.get(name)
        if command is None:
            return await self._fallback(core, turn, name, args)
        if len(args) < command.min_args or (
            command.max_args is not None and len(args) > command.max_args
        ):
            return Reply(replies.usage_line(command.usage))
        return await command.handler(core, turn, args)

    async def _fallback(self, core: Core, turn: Turn, name: str, args: list[str]) -> Reply:
        for fallback in self.fallbacks:
            reply = await fallback(core, turn, name, args)
            if reply is not None:
                return reply
        return Reply(replies.unknown_command(name, self.closest(name)))


def is_command(text: str) -> bool:
    return text.startswith("/") and len(text) > 1 and not text[1].isspace()


def parse(text: str) -> tuple[str, list[str]]:
    """``/persona use writer`` → ("persona", ["use", "writer"]); quotes group words."""
    head, _, rest = text[1:].partition(" ")
    # Slack and Telegram may address a command to a bot: /help@switchboard_bot
    name = head.split("@", 1)[0].lower()
    try:
        args = shlex.split(rest)
    except ValueError as exc:
        raise UserFacingError(f"I couldn't read the arguments ({exc}). Check your quotes.") from exc
    return name, args
