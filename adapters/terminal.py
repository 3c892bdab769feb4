"""The terminal channel: `switchboard chat`, one message or a REPL, through the whole path."""

from __future__ import annotations

import asyncio
import getpass
import time
import uuid
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from adapters.local import LocalStream
from bot.messages import (
    Attachment,
    Author,
    ConversationRef,
    IncomingMessage,
    OutgoingMessage,
    SentRef,
)

CHANNEL = "terminal"
DeltaPrinter = Callable[[str], Awaitable[None]]


class ReplyTimeout(TimeoutError):
    pass


class TerminalAdapter:
    """The client half of the terminal channel; workers deliver through ``LocalStream``."""

    channel = CHANNEL

    def __init__(self, redis: Redis, user: str | None = None) -> None:
        self.user = user or getpass.getuser()
        self.stream = LocalStream(redis, CHANNEL)
        self.ref = ConversationRef(channel=CHANNEL, chat=self.user)

    def incoming(self, text: str, attachments: tuple[Attachment, ...] = ()) -> IncomingMessage:
        return IncomingMessage(
            ref=self.ref,
            external_id=uuid.uuid4().hex,
            author=Author(self.user, self.user),
            text=text,
            attachments=attachments,
        )

    async def send(self, out: OutgoingMessage) -> SentRef:
        return await self.stream.send(out)

    async def mark(self) -> str:
        """The stream position before sending, so the reply is found even if it comes fast
        (and the chat watched: its replies are shown as they are written)."""
        await self.stream.watched(self.user)
        return await self.stream.last_id(self.user)

    async def wait_reply(
        self, message_id: int, after: str, timeout: float, on_delta: DeltaPrinter | None = None
    ) -> OutgoingMessage:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            await self.stream.watched(self.user)
            for entry in await self.stream.read(self.user, after, int(min(left, 1.0) * 1000) + 1):
                after = entry.entry_id
                if entry.data.get("in_reply_to") != message_id:
                    continue
                if entry.out is not None:
                    return entry.out
                if on_delta is not None:
                    await on_delta(entry.data["text"])
            await asyncio.sleep(0)
        raise ReplyTimeout(f"no reply within {timeout:.0f} s")
