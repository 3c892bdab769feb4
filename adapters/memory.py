"""A channel in memory, the seam's counterpart of httpx's ``MockTransport``: a test (yours,
of your own workflows) plays a person with ``say`` and reads what the bot sent in ``sent``.

``sent`` holds the messages as a person would see them: split at the text limit, the files'
bytes read in, and a reply sent again under its idempotency key recorded once, as every
channel must. One function, ``handler``, decides each send: it returns a ``SentRef`` (or
None: the next id) or raises ``AdapterError`` (a 429 with ``retry_after``, an outage), and
then nothing is recorded.

It is registered nowhere: what it holds lives in one process, so only a test running the
receiving side and the worker in one process can use it, and that test adds it to
``core.channels``.
"""

from __future__ import annotations

import inspect
import itertools
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from adapters.dialects import render
from adapters.split import split
from bot.channels import Capabilities, Content, Dispatch, Received
from bot.errors import ServiceUnavailable
from bot.messages import (
    Attachment,
    Author,
    ConversationRef,
    IncomingMessage,
    OutgoingMessage,
    SentRef,
)

Handler = Callable[[OutgoingMessage], SentRef | Awaitable[SentRef | None] | None]

CAPABILITIES = Capabilities(text_limit=4000, buttons=True)


class MemoryChannel:
    def __init__(
        self,
        name: str = "memory",
        capabilities: Capabilities = CAPABILITIES,
        handler: Handler | None = None,
        *,
        content: Content | None = None,
    ) -> None:
        self.channel = name
        self.capabilities = capabilities
        self.handler = handler
        self.content = content  # without it, files stored by reference are recorded bare
        self.sent: list[OutgoingMessage] = []
        self._refs: dict[str, SentRef] = {}  # by idempotency key
        self._numbers = itertools.count(1)
        self._dispatch: Dispatch | None = None

    async def start(self, dispatch: Dispatch) -> None:
        self._dispatch = dispatch

    async def stop(self) -> None:
        self._dispatch = None

    async def send(self, out: OutgoingMessage) -> SentRef:
        known = self._refs.get(out.idempotency_key) if out.idempotency_key else None
        if known is not None:
            return known
        messages = await self._messages(out)
        decided = self.handler(out) if self.handler is not None else None
        ref = (await decided if inspect.isawaitable(decided) else decided) or self._next_ref()
        self.sent.extend(messages)
        if out.idempotency_key:
            self._refs[out.idempotency_key] = ref
        return ref

    async def receive(self, incoming: IncomingMessage) -> Received:
        """Hand ``incoming`` on as a platform's message, stored before this returns."""
        if self._dispatch is None:
            raise ServiceUnavailable(self.channel, "the channel is not started")
        return await self._dispatch(incoming)

    async def say(
        self,
        text: str,
        *,
        chat: str = "person",
        person: str = "person",
        attachments: Sequence[Attachment] = (),
    ) -> Received:
        """A person writes ``text`` (with files) in ``chat``, each time a new message."""
        ref = ConversationRef(channel=self.channel, chat=chat)
        author = Author(person, person)
        return await self.receive(
            IncomingMessage(ref, uuid.uuid4().hex, author, text, tuple(attachments))
        )

    def _next_ref(self) -> SentRef:
        return SentRef(f"{self.channel}:{next(self._numbers)}")

    async def _messages(self, out: OutgoingMessage) -> list[OutgoingMessage]:
        """``out`` as the person sees it: its text in parts, the files and buttons on the last."""
        parts = self._parts(out.text) if out.text.strip() else [""]
        files = tuple([await self._read(attachment) for attachment in out.attachments])
        *first, last = [replace(out, text=part, attachments=(), buttons=()) for part in parts]
        return [*first, replace(last, attachments=files, buttons=out.buttons)]

    def _parts(self, text: str) -> list[str]:
        limit, dialect = self.capabilities.text_limit, self.capabilities.dialect
        if limit is None:
            return [text]
        if dialect in ("markdown", "mrkdwn"):
            return render(text, dialect, limit)
        return split(text, limit)  # a dialect with no converter yet: Markdown as written

    async def _read(self, attachment: Attachment) -> Attachment:
        if attachment.data or self.content is None:
            return attachment
        return replace(attachment, data=await self.content(attachment))
