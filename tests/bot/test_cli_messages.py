"""`switchboard messages failed|retry`, run as a person types them."""

from __future__ import annotations

from bot.app import Runtime
from bot.config import Settings
from bot.storage.models import Message
from tests.bot.test_cli import switchboard
from tests.fakes.llm_server import FakeLLM
from tests.support import delivered, drain, say


async def test_failed_messages_are_listed_and_retried_on_purpose(
    runtime: Runtime, settings: Settings, llm: FakeLLM
) -> None:
    assert (await switchboard(settings, "messages", "failed")).stdout == "No failed messages.\n"
    llm.fail_next(1, 500)
    received = await say(runtime, "please summarise the quarterly numbers")
    await drain(runtime)

    listed = await switchboard(settings, "messages", "failed")
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    assert line.startswith(f"#{received.message_id}  ")
    assert "terminal:alice" in line and "1 attempt " in line
    assert "openai/fake-model at" in line and "unavailable" in line
    assert "“please summarise the quarterly numbers”" in line

    retried = await switchboard(settings, "messages", "retry", str(received.message_id))
    assert retried.returncode == 0, retried.stderr
    assert f"Message #{received.message_id} is queued again" in retried.stdout
    async with runtime.core.sessions() as session:
        row = await session.get(Message, received.message_id)
    assert row is not None and (row.status, row.attempts, row.error) == ("received", 0, None)
    await drain(runtime)
    assert (await delivered(runtime))[-1].text == "echo: please summarise the quarterly numbers"

    again = await switchboard(settings, "messages", "retry", str(received.message_id))
    assert again.returncode == 1
    assert "is handled; only a failed message can be retried" in again.stderr
    unknown = await switchboard(settings, "messages", "retry", "99999")
    assert unknown.returncode == 1 and "There is no message #99999" in unknown.stderr
