"""The whole path: receive → queue → real worker → fake LLM over HTTP → outbox → channel."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from arq.connections import ArqRedis
from sqlalchemy import select

from adapters.local import LocalStream
from bot import files, replies
from bot.app import Runtime
from bot.conversation import receive
from bot.errors import ServiceUnavailable
from bot.messages import Attachment, ConversationRef
from bot.queue import ArqQueue
from bot.storage import db
from bot.storage.models import LLMCall, Message
from tests.fakes.llm_server import FakeLLM
from tests.support import (
    count,
    delivered,
    drain,
    free_port,
    incoming,
    outbox_rows,
    reply_to,
    say,
)


async def test_a_message_gets_one_persona_reply(runtime: Runtime, llm: FakeLLM) -> None:
    out = await reply_to(runtime, "hello there")

    assert out.text == "echo: hello there"
    sent = llm.requests[-1]
    assert sent["model"] == "fake-model"
    assert sent["messages"][0]["role"] == "system"
    assert "general assistant" in sent["messages"][0]["content"]
    assert sent["messages"][-1] == {"role": "user", "content": "hello there"}
    assert [row.status for row in await outbox_rows(runtime)] == ["sent"]


async def test_every_model_call_is_recorded(runtime: Runtime) -> None:
    await reply_to(runtime, "count my tokens please")

    async with runtime.core.sessions() as session:
        call = (await session.scalars(select(LLMCall))).one()
    assert call.status == "ok"
    assert call.model.endswith("fake-model")
    assert call.prompt_tokens > 0 and call.completion_tokens > 0
    assert call.latency_ms > 0
    assert call.cost_usd is None  # a custom model has no known price: never invented


async def test_the_same_external_id_twice_is_one_message_and_one_reply(runtime: Runtime) -> None:
    first = await say(runtime, "only once", external_id="evt-1")
    second = await say(runtime, "only once", external_id="evt-1")
    await drain(runtime)

    assert second.duplicate and second.message_id == first.message_id
    assert await count(runtime, Message.direction == "in") == 1
    assert len(await delivered(runtime)) == 1


async def test_history_goes_to_the_model_and_new_clears_it(runtime: Runtime, llm: FakeLLM) -> None:
    await reply_to(runtime, "my name is Alice")
    await reply_to(runtime, "what is my name?")
    contents = [m["content"] for m in llm.requests[-1]["messages"]]
    assert contents[1:] == ["my name is Alice", "echo: my name is Alice", "what is my name?"]

    assert "fresh conversation" in (await reply_to(runtime, "/new")).text
    await reply_to(runtime, "and now?")
    assert [m["content"] for m in llm.requests[-1]["messages"]][1:] == ["and now?"]


async def test_commands_do_not_reach_the_model(runtime: Runtime, llm: FakeLLM) -> None:
    await reply_to(runtime, "/help")
    await reply_to(runtime, "hi")

    assert len(llm.requests) == 1
    assert [m["content"] for m in llm.requests[0]["messages"]][1:] == ["hi"]


async def test_oversized_input_gets_a_clear_reply_and_is_kept(
    runtime: Runtime, llm: FakeLLM
) -> None:
    out = await reply_to(runtime, "x" * 100_000)

    assert "100,000 characters" in out.text and "32,000" in out.text
    assert llm.requests == []
    assert await count(runtime, Message.direction == "in", Message.status == "handled") == 1


async def test_empty_input_gets_a_hint(runtime: Runtime, llm: FakeLLM) -> None:
    out = await reply_to(runtime, "   ")

    assert "empty" in out.text
    assert llm.requests == []


async def test_undecodable_file_names_and_nul_bytes_are_stored_safely(runtime: Runtime) -> None:
    weird = Attachment(filename=b"r\xe9sum\xe9\xff.pdf", size=10)  # type: ignore[arg-type]
    out = await reply_to(runtime, "see\x00 attached", attachments=(weird,))

    assert out.text.startswith("echo: see\ufffd attached\n\n")
    assert "I couldn't read r\ufffdsum\ufffd\ufffd.pdf" in out.text
    async with runtime.core.sessions() as session:
        stored = await session.scalar(select(Message).where(Message.direction == "in"))
    assert stored is not None
    assert stored.attachments[0]["filename"] == "r\ufffdsum\ufffd\ufffd.pdf"


async def test_local_channels_see_the_reply_as_it_is_written(
    runtime: Runtime, llm: FakeLLM
) -> None:
    llm.chunk_delay = 0.06  # a model that writes slower than the channel shows
    await LocalStream(runtime.redis, "terminal").watched("alice")  # `switchboard chat` waits
    received = await say(runtime, "stream these words to me")
    await drain(runtime)

    entries = await LocalStream(runtime.redis, "terminal").history("alice")
    pieces = [e.data["text"] for e in entries if e.kind == "delta"]
    (final,) = [e.out for e in entries if e.out is not None]
    assert len(pieces) > 1
    assert all(e.data["in_reply_to"] == received.message_id for e in entries)
    # Updates are gathered (at most one per 100 ms); the finished reply completes them.
    assert final.text == "echo: stream these words to me"
    assert final.text.startswith("".join(pieces))


async def test_streaming_can_be_turned_off(runtime: Runtime) -> None:
    runtime.core.settings.stream_replies = False
    await reply_to(runtime, "no live updates")

    entries = await LocalStream(runtime.redis, "terminal").history("alice")
    assert [e.kind for e in entries] == ["reply"]


async def test_turns_of_one_conversation_are_answered_in_order(
    runtime: Runtime, llm: FakeLLM
) -> None:
    llm.latency = 0.5
    first = await say(runtime, "a slow question")
    second = await say(runtime, "/export")
    await drain(runtime)  # twenty jobs at once: both turns start together

    replies = await delivered(runtime)
    assert [r.in_reply_to for r in replies] == [first.message_id, second.message_id]
    exported = (await files.content(runtime.core.engine, replies[1].attachments[0])).decode()
    assert "echo: a slow question" in exported  # the export saw the answer before it


async def test_other_conversations_are_not_held_up(runtime: Runtime, llm: FakeLLM) -> None:
    llm.latency = 0.5
    await say(runtime, "slow, in one chat")
    other = ConversationRef(channel="terminal", chat="bob")
    quick = await say(runtime, "/help", ref=other)
    await drain(runtime)

    entries = await LocalStream(runtime.redis, "terminal").history("bob")
    assert [e.out.in_reply_to for e in entries if e.out] == [quick.message_id]
    async with runtime.core.sessions() as session:
        handled = (
            await session.scalars(
                select(Message.reply_to_id).where(Message.direction == "out").order_by(Message.id)
            )
        ).all()
    assert handled[0] == quick.message_id  # answered while the other chat waited for the model


async def test_a_message_the_database_cannot_take_is_refused_and_nothing_is_queued(
    runtime: Runtime, tmp_path: Path
) -> None:
    stopped = db.make_engine(f"postgresql+asyncpg://postgres@/switchboard?host={tmp_path}")
    core = dataclasses.replace(runtime.core, engine=stopped, sessions=db.make_sessions(stopped))
    try:
        with pytest.raises(ServiceUnavailable) as refused:
            await receive(core, incoming("is anyone there?"))
    finally:
        await stopped.dispose()

    assert refused.value.service == "database"
    assert str(refused.value) == replies.database_down()
    assert await runtime.redis.zcard(runtime.core.settings.queue_name) == 0


async def test_a_message_stored_while_the_queue_is_down_is_acknowledged_and_a_resend_queues_it(
    runtime: Runtime,
) -> None:
    core = dataclasses.replace(runtime.core, queue=_queue_nobody_answers(runtime))
    first = await receive(core, incoming("wait for me", external_id="q-1"))
    assert not first.duplicate
    assert await runtime.redis.zcard(runtime.core.settings.queue_name) == 0

    again = await say(runtime, "wait for me", external_id="q-1")  # the client's retry
    assert again.duplicate and again.message_id == first.message_id
    assert await runtime.redis.zcard(runtime.core.settings.queue_name) == 1
    await drain(runtime)

    assert await count(runtime, Message.direction == "in") == 1
    assert [out.in_reply_to for out in await delivered(runtime)] == [first.message_id]


async def test_a_message_stored_while_the_queue_was_down_is_answered_by_the_next_worker(
    runtime: Runtime,
) -> None:
    core = dataclasses.replace(runtime.core, queue=_queue_nobody_answers(runtime))
    stored = await receive(core, incoming("still there?"))

    await drain(runtime)  # a worker starting up sweeps what was stored and never queued

    assert [out.in_reply_to for out in await delivered(runtime)] == [stored.message_id]


def _queue_nobody_answers(runtime: Runtime) -> ArqQueue:
    return ArqQueue(ArqRedis(port=free_port()), runtime.core.settings.queue_name)
