"""Prompt actions: tried, saved, run on a message, text or the thread, and kept in history."""

from __future__ import annotations

from sqlalchemy import select

from bot.app import Runtime
from bot.storage.models import PromptActionRun
from tests.fakes.llm_server import FakeLLM
from tests.support import reply_to


async def test_try_then_save_then_run_on_the_message_before(runtime: Runtime, llm: FakeLLM) -> None:
    await reply_to(runtime, "the meeting moved to Friday")
    tried = await reply_to(runtime, '/t try "Make formal: {{ text }}"')
    assert tried.text == "echo: Make formal: the meeting moved to Friday"

    saved = await reply_to(
        runtime, '/t save formal "Rewrite formally in {{ lang }}: {{ text }}" temperature=0.1'
    )
    assert saved.text.startswith("Saved the action formal.")
    ran = await reply_to(runtime, "/t formal lang=German see you soon")
    assert ran.text == "echo: Rewrite formally in German: see you soon"
    assert llm.requests[-1]["temperature"] == 0.1

    listed = (await reply_to(runtime, "/t")).text
    assert "formal — Rewrite formally in {{ lang }}: {{ text }}" in listed
    history = (await reply_to(runtime, "/t history")).text
    assert "formal · openai/fake-model · ok" in history and "try · " in history
    async with runtime.core.sessions() as session:
        runs = (await session.scalars(select(PromptActionRun).order_by(PromptActionRun.id))).all()
    assert [(r.name, r.input, r.status) for r in runs] == [
        ("try", "the meeting moved to Friday", "ok"),
        ("formal", "see you soon", "ok"),
    ]
    assert runs[1].prompt_tokens > 0


async def test_an_action_on_the_whole_thread(runtime: Runtime, llm: FakeLLM) -> None:
    await reply_to(runtime, "first point")
    await reply_to(runtime, '/t try "Summarise: {{ thread }}" thread')
    prompt = llm.requests[-1]["messages"][-1]["content"]
    assert prompt == "Summarise: Person: first point\nAssistant: echo: first point"


async def test_bad_actions_are_explained(runtime: Runtime) -> None:
    assert "There is no action called 'nope'" in (await reply_to(runtime, "/t nope")).text
    await reply_to(runtime, '/t save x "{{ colour }} {{ text }}"')
    assert "reads colour, which it will not get" in (await reply_to(runtime, "/t x hi")).text
    assert (
        "may not use __class__"
        in (await reply_to(runtime, '/t try "{{ text.__class__ }}" hi')).text
    )
    assert "no message before this one" in (await reply_to(runtime, '/t try "{{ text }}"')).text
