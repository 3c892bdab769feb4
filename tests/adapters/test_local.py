"""The local channels' streams: where a client that starts late reads from; passing updates
never fail a turn."""

from __future__ import annotations

from redis.asyncio import Redis

from adapters.local import LocalStream, Resume
from bot.app import Runtime
from bot.messages import ConversationRef, OutgoingMessage
from tests.support import free_port

REF = ConversationRef(channel="web", chat="tab-chat")


def _reply(in_reply_to: int | None, text: str, key: str) -> OutgoingMessage:
    return OutgoingMessage(REF, text, idempotency_key=key, in_reply_to=in_reply_to)


async def test_resume_starts_before_the_first_piece_of_a_reply_still_being_written(
    runtime: Runtime,
) -> None:
    stream = LocalStream(runtime.redis, "web")
    assert await stream.resume(REF.chat) == Resume("0-0", "0-0", ())

    await stream.send(_reply(None, "earlier", "post:1"))
    await stream.delta(REF, 7, "Once")
    await stream.delta(REF, 8, "Other")
    await stream.delta(REF, 7, " upon")
    await stream.send(_reply(8, "Other reply", "reply:8:0"))
    await stream.status(REF, "run:1", "working")
    entries = await stream.history(REF.chat)

    resume = await stream.resume(REF.chat)
    assert resume == Resume(entries[0].entry_id, entries[-1].entry_id, (7,))
    after = await stream.read(REF.chat, resume.after, 100)
    assert [
        e.data.get("text") for e in after if e.kind == "delta" and e.data["in_reply_to"] == 7
    ] == [
        "Once",
        " upon",
    ]

    await stream.send(_reply(7, "Once upon a time", "reply:7:0"))
    done = await stream.resume(REF.chat)
    assert done.writing == () and done.after == done.until


async def test_a_reply_being_written_as_the_stream_begins_resumes_from_its_start(
    runtime: Runtime,
) -> None:
    stream = LocalStream(runtime.redis, "web")
    await stream.delta(REF, 3, "first piece")
    resume = await stream.resume(REF.chat)
    assert (resume.after, resume.writing) == ("0-0", (3,))
    assert [e.data["text"] for e in await stream.read(REF.chat, resume.after, 100)] == [
        "first piece"
    ]


async def test_a_message_is_an_event_for_the_other_clients(runtime: Runtime) -> None:
    stream = LocalStream(runtime.redis, "web")
    await stream.message(REF, {"id": 5, "client_id": "c", "text": "hi", "files": []})
    (entry,) = await stream.history(REF.chat)
    assert (entry.kind, entry.out, entry.data["text"]) == ("message", None, "hi")


async def test_a_live_update_is_skipped_while_redis_is_down() -> None:
    redis = Redis(port=free_port())  # nothing listens there
    stream = LocalStream(redis, "web")
    ref = ConversationRef(channel="web", chat="c1")
    try:
        await stream.delta(ref, 1, "half a rep")
        await stream.status(ref, "run:1", "step 2 of 3")
    finally:
        await redis.aclose()
