"""Answering a stored message: each try counted, a turn bounded in time, and a message that
keeps failing set aside with one reply instead of being tried forever."""

from __future__ import annotations

import asyncio
import time

from bot.app import Runtime, open_runtime
from bot.config import Settings
from bot.core import Core, Responder
from bot.handler import handle
from bot.storage.models import Message
from bot.turns import Reply, Turn
from tests.fakes.llm_server import FakeLLM
from tests.support import delivered, drain, reply_to, say


class Breaking:
    """A responder that raises ``times`` times (every time by default), then answers as
    ``then`` does."""

    def __init__(self, then: Responder | None, times: int = 1_000) -> None:
        self.then, self.times, self.calls = then, times, 0

    async def respond(self, core: Core, turn: Turn) -> Reply:
        self.calls += 1
        if self.calls <= self.times or self.then is None:
            raise RuntimeError("the responder broke on purpose")
        return await self.then.respond(core, turn)


async def settled(runtime: Runtime, message_id: int, timeout: float = 30.0) -> Message:
    """The message once it is no longer waiting: its later tries come after a pause."""
    deadline = time.monotonic() + timeout
    while True:
        await drain(runtime)
        async with runtime.core.sessions() as session:
            row = await session.get(Message, message_id)
        assert row is not None
        if row.status != "received":
            return row
        assert time.monotonic() < deadline, f"message {message_id} still waits: {row.error}"
        await asyncio.sleep(0.1)


async def test_a_message_that_always_fails_is_set_aside_after_three_tries(
    runtime: Runtime,
) -> None:
    breaking = Breaking(None)
    runtime.core.responder = breaking
    received = await say(runtime, "this breaks the responder")
    row = await settled(runtime, received.message_id)

    assert breaking.calls == 3
    assert (row.status, row.attempts) == ("failed", 3)
    assert row.error is not None and "the responder broke on purpose" in row.error
    (out,) = await delivered(runtime)
    assert out.in_reply_to == received.message_id
    assert "set your message aside after 3 attempts" in out.text
    assert "RuntimeError: the responder broke on purpose" in out.text
    assert "/retry" in out.text


async def test_a_failure_that_passes_is_answered_once(runtime: Runtime) -> None:
    breaking = Breaking(runtime.core.responder, times=1)
    runtime.core.responder = breaking
    received = await say(runtime, "hello after a blip")
    row = await settled(runtime, received.message_id)

    assert (row.status, row.attempts, breaking.calls) == ("handled", 2, 2)
    assert [out.text for out in await delivered(runtime)] == ["echo: hello after a blip"]


async def test_retry_resets_the_tries_of_a_message_set_aside(runtime: Runtime) -> None:
    answering = runtime.core.responder
    runtime.core.responder = Breaking(None)
    received = await say(runtime, "try me again")
    await settled(runtime, received.message_id)
    runtime.core.responder = answering

    notice = await reply_to(runtime, "/retry")
    row = await settled(runtime, received.message_id)

    assert notice.text == "Trying again: “try me again”"
    assert (row.status, row.attempts) == ("handled", 1)
    answers = [o.text for o in await delivered(runtime) if o.in_reply_to == received.message_id]
    assert answers[-1] == "echo: try me again"


async def test_a_turn_that_hangs_is_stopped_and_the_conversation_goes_on(
    runtime: Runtime, settings: Settings, llm: FakeLLM
) -> None:
    llm.hang = True
    async with open_runtime(settings.model_copy(update={"turn_timeout": 0.5})) as quick:
        received = await say(quick, "think forever")
        row = await settled(quick, received.message_id)
        llm.hang = False
        after = await reply_to(quick, "and now a quick one")

    assert (row.status, row.attempts) == ("failed", 1)
    (stopped, _) = await delivered(runtime)
    assert stopped.in_reply_to == received.message_id
    assert "took more than 0.5 s and was stopped" in stopped.text
    assert after.text == "echo: and now a quick one"  # the conversation's lock was let go


async def test_turns_waiting_together_each_see_what_the_one_before_changed(
    runtime: Runtime, llm: FakeLLM
) -> None:
    await reply_to(runtime, "my name is Alice")
    await say(runtime, "/new")
    last = await say(runtime, "what is my name?")

    assert await handle(runtime.core, last.message_id)  # both turns, in one pass

    assert [m["content"] for m in llm.requests[-1]["messages"]][1:] == ["what is my name?"]
