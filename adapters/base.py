"""The adapter seam: translate one platform to and from Switchboard's messages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from bot.conversation import Received
from bot.messages import IncomingMessage, OutgoingMessage, SentRef

Dispatch = Callable[[IncomingMessage], Awaitable[Received]]


class ChatAdapter(Protocol):
    """Inbound: ``start`` listens and calls ``dispatch`` (persist + enqueue) before acking.
    ``IncomingMessage.external_id`` must identify the message within its channel: where a
    platform numbers messages per chat (Slack ts, Telegram message_id), qualify it with the
    chat. Outbound: ``send`` is called by any worker with a reply from the outbox."""

    channel: str

    async def start(self, dispatch: Dispatch) -> None: ...

    async def send(self, out: OutgoingMessage) -> SentRef: ...

    async def stop(self) -> None: ...
