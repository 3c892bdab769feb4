"""A persona acts through the tools its file lists: the model asks, the tool runs (audited),
the result goes back, and the persona answers in words."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from bot.app import Runtime
from bot.storage.models import AuditEvent
from personas import acting, store
from personas.spec import PersonaSpec, PersonaSpecError, load_file
from tests.fakes.llm_server import FakeLLM
from tests.support import reply_to

CLERK = PersonaSpec(
    name="clerk",
    system_prompt="You keep the books.",
    tools=["calculate", "current_time"],
)


@pytest.fixture
async def clerk(runtime: Runtime) -> None:
    async with runtime.core.sessions.begin() as session:
        await store.upsert(session, CLERK, source="test")
    await reply_to(runtime, "/persona use clerk")


async def _audit(runtime: Runtime) -> list[AuditEvent]:
    async with runtime.core.sessions() as session:
        return list(await session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


@pytest.mark.usefixtures("clerk")
async def test_the_model_calls_a_tool_and_answers_with_its_result(
    runtime: Runtime, llm: FakeLLM
) -> None:
    llm.script({"name": "calculate", "arguments": {"expression": "17 * 3"}}, "That makes 51.")

    assert (await reply_to(runtime, "what is 17 times 3?")).text == "That makes 51."
    offered = [tool["function"]["name"] for tool in llm.requests[-2]["tools"]]
    assert offered == ["calculate", "current_time"]
    asked, told = llm.requests[-1]["messages"][-2:]
    assert asked["tool_calls"][0]["function"]["name"] == "calculate"
    assert told["role"] == "tool" and json.loads(told["content"])["result"] == 51
    [event] = await _audit(runtime)
    assert (event.actor, event.subject, event.status) == ("persona:clerk", "calculate", "ok")
    assert event.data["user_id"] is not None and event.data["conversation_id"] is not None


@pytest.mark.usefixtures("clerk")
async def test_a_tool_the_persona_lacks_or_a_failing_call_is_told_to_the_model(
    runtime: Runtime, llm: FakeLLM
) -> None:
    llm.script(
        {"name": "read_webpage", "arguments": {"url": "https://example.org"}},
        {"name": "calculate", "arguments": {"expression": "1 / 0"}},
        "I cannot do that.",
    )

    assert (await reply_to(runtime, "read example.org, then divide by zero")).text == (
        "I cannot do that."
    )
    results = [m for m in llm.requests[-1]["messages"] if m["role"] == "tool"]
    errors = [json.loads(m["content"])["error"] for m in results]
    assert errors[0] == (
        "The persona clerk may not use read_webpage; its tools: calculate, current_time."
    )
    assert "division by zero" in errors[1]
    assert [(e.subject, e.status) for e in await _audit(runtime)] == [
        ("read_webpage", "refused"),
        ("calculate", "error"),
    ]


@pytest.mark.usefixtures("clerk")
async def test_a_model_that_keeps_calling_tools_is_made_to_answer(
    runtime: Runtime, llm: FakeLLM
) -> None:
    call = {"name": "current_time", "arguments": {}}
    llm.script(*[call] * acting.MAX_ROUNDS, "Enough: it is late.")

    assert (await reply_to(runtime, "what time is it, again and again?")).text == (
        "Enough: it is late."
    )
    assert "tools" not in llm.requests[-1]
    assert len(await _audit(runtime)) == acting.MAX_ROUNDS


def test_a_persona_file_naming_an_unknown_tool_is_refused(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "p.yaml"
    path.write_text("name: p\nsystem_prompt: hi\ntools: [calculator]\n")
    with pytest.raises(PersonaSpecError, match="Did you mean 'calculate'"):
        load_file(path)
