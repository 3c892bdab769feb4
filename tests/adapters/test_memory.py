"""The memory channel on its own: what it records, how a handler decides a send, and a
person writing. The contract suite (test_contract.py) runs it through the whole path."""

from __future__ import annotations

import pytest

from adapters.memory import MemoryChannel
from bot.channels import Capabilities, Received
from bot.errors import AdapterError, ServiceUnavailable
from bot.messages import (
    Attachment,
    Button,
    ConversationRef,
    IncomingMessage,
    OutgoingMessage,
    SentRef,
)

REF = ConversationRef(channel="memory", chat="person")


async def test_a_send_the_handler_refuses_records_nothing_until_one_goes_through() -> None:
    refusals = [AdapterError("slow down", retry_after=1.0)]

    async def handler(out: OutgoingMessage) -> SentRef:
        if refusals:
            raise refusals.pop()
        return SentRef("platform-7")

    channel = MemoryChannel(handler=handler)
    hello = OutgoingMessage(REF, "hello", idempotency_key="k1")
    with pytest.raises(AdapterError) as refused:
        await channel.send(hello)
    assert refused.value.retry_after == 1.0 and channel.sent == []
    assert await channel.send(hello) == SentRef("platform-7")
    assert await channel.send(hello) == SentRef("platform-7")  # the same reply again
    assert await MemoryChannel().send(hello) == SentRef("memory:1")
    assert channel.sent == [hello]


async def test_a_long_message_is_split_with_its_files_read_and_buttons_last() -> None:
    async def content(attachment: Attachment) -> bytes:
        return f"bytes of #{attachment.file_id}".encode()

    channel = MemoryChannel(capabilities=Capabilities(text_limit=20), content=content)
    stored = Attachment("a.bin", file_id=3)
    buttons = (Button("Approve", "/approve 1"),)
    text = "first paragraph\n\nsecond paragraph"
    await channel.send(OutgoingMessage(REF, text, (stored,), "k", buttons=buttons))

    assert [(out.text, out.buttons) for out in channel.sent] == [
        ("first paragraph", ()),
        ("second paragraph", buttons),
    ]
    assert [a.data for out in channel.sent for a in out.attachments] == [b"bytes of #3"]


async def test_a_person_writes_once_the_channel_is_started() -> None:
    heard: list[IncomingMessage] = []

    async def dispatch(incoming: IncomingMessage) -> Received:
        heard.append(incoming)
        return Received(len(heard), 1, duplicate=False)

    channel = MemoryChannel()
    with pytest.raises(ServiceUnavailable):
        await channel.say("too early")
    await channel.start(dispatch)
    notes = Attachment("notes.md", "text/markdown", data=b"# notes")
    assert (await channel.say("hi", attachments=[notes])).message_id == 1
    await channel.say("hi")
    await channel.stop()

    first, second = heard
    assert (first.ref, first.author.external_id, first.text) == (REF, "person", "hi")
    assert first.attachments == (notes,)
    assert first.external_id != second.external_id  # each time a new message
