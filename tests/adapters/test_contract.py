"""The contract every channel keeps: one class of scenarios run against each channel (web,
terminal, memory, Slack), with the same assertions, each channel driven the way its people
use it (``tests/adapters/drivers.py``). A scenario a channel cannot have by its nature is
skipped with the driver's reason; a channel joins by adding its driver to ``DRIVERS``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from sqlalchemy import update

from bot import outbox
from bot.app import Runtime
from bot.conversation import conversation_for
from bot.messages import Button, OutgoingMessage
from bot.storage.models import Message, Outbox
from tests.adapters.drivers import (
    Driver,
    Edits,
    HearsItself,
    MemoryDriver,
    RateLimited,
    Shown,
    SlackDriver,
    TerminalDriver,
    WebDriver,
)
from tests.fakes.llm_server import FakeLLM
from tests.fakes.slack_server import FakeSlack
from tests.support import BINARY_FILES, count, files_command, outbox_rows, save_workflow, wait_until

Make = Callable[[Runtime, FakeSlack], Driver]
DRIVERS: dict[str, Make] = {
    "web": lambda runtime, fake: WebDriver(runtime),
    "terminal": lambda runtime, fake: TerminalDriver(runtime),
    "memory": lambda runtime, fake: MemoryDriver(runtime),
    "slack": SlackDriver,
}

LATER = """
name: later
command: /later
inputs:
  text: {type: string, description: what to think about}
nodes:
  think: {type: llm, prompt: "{{ text }}"}
  answer: {type: reply, needs: [think], text: "Later: {{ think }}"}
"""
NOTES = b"- Ann: ship it\n- Bo: wait"

# Bugs this suite found, by scenario and channel: the scenario runs, and is expected to fail
# until the bug is fixed (then it passes, the xfail is strict, and the entry must go).
KNOWN_BUGS: dict[tuple[str, str], str] = {}


def publish(approver: str) -> str:
    return f"""
name: publish
command: /publish
inputs:
  text: {{type: string, description: what to publish}}
nodes:
  check: {{type: approval, message: "Publish '{{{{ text }}}}'?", approvers: ["{approver}"]}}
  go: {{type: reply, needs: [check], when: "check.approved", text: "Published: {{{{ text }}}}"}}
"""


@pytest.fixture(scope="module")
async def fake_slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture(params=list(DRIVERS))
async def driver(
    request: pytest.FixtureRequest, runtime: Runtime, fake_slack: FakeSlack
) -> AsyncIterator[Driver]:
    fake_slack.reset()
    made = DRIVERS[request.param](runtime, fake_slack)
    async with made.running():
        yield made


def texts(seen: Sequence[Shown]) -> list[str]:
    return [message.text for message in seen if message.text]


def files(seen: Sequence[Shown]) -> list[tuple[str, bytes]]:
    return [found for message in seen for found in message.files]


async def shown(
    driver: Driver, texts_at_least: int = 1, *, until: Callable[[list[Shown]], bool] | None = None
) -> list[Shown]:
    """What the person sees once ``texts_at_least`` messages with text (or ``until``) came."""
    found: list[Shown] = []

    async def enough() -> bool:
        nonlocal found
        found = await driver.seen()
        return until(found) if until is not None else len(texts(found)) >= texts_at_least

    await wait_until(enough, 30, f"the bot's messages on {driver.name}", every=0.1)
    return found


async def post(runtime: Runtime, driver: Driver, text: str, key: str) -> None:
    """A message Switchboard starts in the person's conversation (a workflow's, a reminder)."""
    conversation = await conversation_for(runtime.core, driver.ref)
    await outbox.post(
        runtime.core, conversation, OutgoingMessage(driver.ref, text, idempotency_key=key)
    )


async def draw(driver: Driver, runtime: Runtime) -> list[Shown]:
    """The person runs a command that answers with BINARY_FILES; what they see then."""
    runtime.core.commands.add(files_command("draw"))
    await driver.command("draw")
    return await shown(driver, until=lambda seen: len(files(seen)) >= len(BINARY_FILES))


def known_bug(request: pytest.FixtureRequest, driver: Driver, scenario: str) -> None:
    bug = KNOWN_BUGS.get((scenario, driver.name))
    if bug is not None:
        reason = bug.format(name=driver.name, limit=driver.capabilities.text_limit)
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True, raises=AssertionError))


def cannot(driver: Driver, what: str) -> str:
    """Why ``driver``'s channel cannot have ``what`` (the driver must say)."""
    return f"{driver.name}: {driver.cannot[what]}"


class TestChannel:
    async def test_a_dm_is_answered_by_the_persona(self, driver: Driver, llm: FakeLLM) -> None:
        await driver.say("hello")
        assert texts(await shown(driver)) == ["echo: hello"]
        assert len(llm.requests) == 1

    async def test_a_command_starts_a_workflow_whose_reply_comes_later_in_the_conversation(
        self, driver: Driver, runtime: Runtime
    ) -> None:
        await save_workflow(runtime, LATER)
        await driver.command("later", "text=hello")
        started, answer = texts(await shown(driver, 2))
        assert started.startswith("Started run #1 of later.")
        assert answer == "Later: echo: hello"

    async def test_a_file_the_person_sends_reaches_the_persona(
        self, driver: Driver, llm: FakeLLM
    ) -> None:
        await driver.say("summarise this", {"notes.md": NOTES})
        await shown(driver)
        asked = [str(m["content"]) for request in llm.requests for m in request["messages"]]
        assert any("--- notes.md ---\n- Ann: ship it" in text for text in asked)

    async def test_binary_files_go_out_byte_for_byte(
        self, driver: Driver, runtime: Runtime
    ) -> None:
        seen = await draw(driver, runtime)
        assert texts(seen) == ["Made 2 files."]
        assert files(seen) == list(BINARY_FILES.items())

    async def test_a_long_reply_is_split_at_the_channels_limit(
        self, driver: Driver, runtime: Runtime, request: pytest.FixtureRequest
    ) -> None:
        known_bug(request, driver, "split")
        limit = driver.capabilities.text_limit
        words = (limit or 40_000) // 20
        paragraphs = [f"Paragraph {n}: " + "word " * words for n in range(12)]
        text = "\n\n".join(paragraphs)
        await post(runtime, driver, text, "long")
        seen = await shown(driver, until=lambda seen: "Paragraph 11:" in "".join(texts(seen)))
        parts = texts(seen)
        if limit is None:  # a channel that shows any length: one message, whole
            assert len(parts) == 1
        else:
            assert len(parts) >= 3 and all(len(part) <= limit for part in parts)
        assert parts[0].startswith("Paragraph 0:")
        assert " ".join(parts).split() == text.split()

    async def test_a_storm_of_rate_limits_drops_and_repeats_no_reply(
        self, driver: Driver, runtime: Runtime
    ) -> None:
        if not isinstance(driver, RateLimited):
            pytest.skip(cannot(driver, "rate limits"))
        driver.refuse(3)
        for n in range(3):
            await post(runtime, driver, f"reply {n}", f"storm:{n}")
        assert texts(await shown(driver, 3)) == ["reply 0", "reply 1", "reply 2"]
        rows = await outbox_rows(runtime)
        assert [row.status for row in rows] == ["sent"] * 3
        assert sum(row.attempts for row in rows) == 3 + 3  # every refusal was tried again

    async def test_a_reply_delivered_twice_is_seen_once(
        self, driver: Driver, runtime: Runtime
    ) -> None:
        before = await draw(driver, runtime)
        # A worker died after sending, before marking the row sent: it is sent again.
        (row,) = await outbox_rows(runtime)
        async with runtime.core.sessions.begin() as session:
            await session.execute(
                update(Outbox).where(Outbox.id == row.id).values(status="pending")
            )
        assert await outbox.deliver(runtime.core, runtime.core.channels, row.id) == "sent"
        assert await driver.seen() == before

    async def test_an_approval_is_answered_by_a_button(
        self, driver: Driver, runtime: Runtime
    ) -> None:
        await save_workflow(runtime, publish(driver.account))
        await driver.command("publish", "text=hello")
        started, asking = [m for m in await shown(driver, 2) if m.text]
        assert started.text.startswith("Started run #1 of publish.")
        assert "Publish 'hello'?" in asking.text
        approve = Button("Approve", "/approve 1")
        if driver.capabilities.buttons:
            assert asking.buttons == (approve, Button("Reject", "/reject 1"))
        await driver.click(asking, approve)
        assert texts(await shown(driver, 4))[2:] == [
            "Approved run #1; it goes on now.",
            "Published: hello",
        ]

    async def test_edited_and_deleted_messages_are_not_answered_again(
        self, driver: Driver, runtime: Runtime, llm: FakeLLM
    ) -> None:
        if not isinstance(driver, Edits):
            pytest.skip(cannot(driver, "edits"))
        await driver.say("hello")
        await shown(driver)
        await driver.edit_and_delete()
        await self._answered_once(driver, runtime, llm)

    async def test_the_bots_own_messages_are_ignored(
        self, driver: Driver, runtime: Runtime, llm: FakeLLM
    ) -> None:
        if not isinstance(driver, HearsItself):
            pytest.skip(cannot(driver, "echoes"))
        await driver.say("hello")
        (reply,) = await shown(driver)
        await driver.echo(reply)
        await self._answered_once(driver, runtime, llm)

    async def _answered_once(self, driver: Driver, runtime: Runtime, llm: FakeLLM) -> None:
        """One message stored and answered: what came after it was taken and dropped (the
        platform was acknowledged, so it was handed over before this)."""
        assert await count(runtime, Message.direction == "in") == 1
        assert len(llm.requests) == 1
        assert texts(await driver.seen()) == ["echo: hello"]
