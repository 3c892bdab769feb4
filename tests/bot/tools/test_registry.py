"""Every tool call goes through the registry: arguments checked, the call audited, a call
with effects never made twice under one idempotency key."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any, ClassVar

import pytest
from pydantic import Field
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from bot.app import Runtime
from bot.core import Core
from bot.storage.models import AuditEvent
from bot.tools import ToolContext, ToolError, ToolParams, ToolRegistry, ToolResult, catalog


class SendParams(ToolParams):
    to: str = Field(description="who gets it")
    api_token: str = Field(default="", description="a credential, never recorded")


class Send:
    """A tool with effects that counts how often it really acted."""

    name: ClassVar[str] = "send"
    description: ClassVar[str] = "Send a note."
    params: ClassVar[type[ToolParams]] = SendParams
    effects: ClassVar[bool] = True
    offline: ClassVar[bool] = True

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def run(self, ctx: ToolContext, params: SendParams) -> ToolResult:
        if params.to == "nobody":
            raise ToolError("nobody is not an address")
        if params.to == "bug":
            raise KeyError("oops")
        if params.to == "slow":
            await asyncio.sleep(5)
        self.sent.append(params.to)
        return ToolResult(output={"sent_to": params.to, "n": len(self.sent)})


@pytest.fixture
def send() -> Send:
    return Send()


@pytest.fixture
def core(runtime: Runtime, send: Send) -> Core:
    return dataclasses.replace(runtime.core, _tools=ToolRegistry([*_shipped(), send]))


def _shipped() -> list[Any]:
    return [catalog().get(name) for name in catalog().names()]


async def _audit(core: Core) -> list[AuditEvent]:
    async with core.sessions() as session:
        return list(await session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


async def test_a_call_is_audited_with_who_asked_and_no_secrets(core: Core) -> None:
    ctx = ToolContext(core=core, user_id=7, persona="assistant", conversation_id=3)
    result = await core.tools.call(ctx, "send", {"to": "ann", "api_token": "s3cret"})

    assert result.output == {"sent_to": "ann", "n": 1} and not result.replayed
    [event] = await _audit(core)
    assert (event.actor, event.action, event.subject, event.status) == (
        "persona:assistant",
        "tool",
        "send",
        "ok",
    )
    assert event.data["arguments"] == {"to": "ann", "api_token": "***"}
    assert event.data["result"]["output"] == {"sent_to": "ann", "n": 1}
    assert (event.data["user_id"], event.data["conversation_id"]) == (7, 3)
    assert "s3cret" not in str(event.data)


async def test_the_same_call_with_effects_is_made_once(core: Core, send: Send) -> None:
    ctx = ToolContext(core=core, run_id=5, node_id="notify", idempotency_key="run:5:notify")
    first = await core.tools.call(ctx, "send", {"to": "ann"})
    again = await core.tools.call(ctx, "send", {"to": "ann"})
    other = await core.tools.call(
        dataclasses.replace(ctx, idempotency_key="k2"), "send", {"to": "bo"}
    )

    assert send.sent == ["ann", "bo"]
    assert again.replayed and again.output == first.output == {"sent_to": "ann", "n": 1}
    assert other.output == {"sent_to": "bo", "n": 2}
    assert [e.actor for e in await _audit(core)] == ["run:5/notify", "run:5/notify"]


async def test_unknown_tools_and_bad_arguments_are_refused_and_audited(core: Core) -> None:
    ctx = ToolContext(core=core, user_id=1)
    with pytest.raises(
        ToolError, match=re.escape("There is no tool called 'sned'. Did you mean 'send'?")
    ):
        await core.tools.call(ctx, "sned", {"to": "ann"})
    with pytest.raises(ToolError, match=re.escape("send: to: Field required; cc: Extra inputs")):
        await core.tools.call(ctx, "send", {"cc": "ann"})

    events = await _audit(core)
    assert [(e.subject, e.status) for e in events] == [("sned", "refused"), ("send", "refused")]
    assert "Did you mean 'send'" in events[0].data["error"]


async def test_failures_are_audited_and_said_plainly(core: Core) -> None:
    ctx = ToolContext(core=core, timeout=0.2)
    with pytest.raises(ToolError, match="nobody is not an address"):
        await core.tools.call(ctx, "send", {"to": "nobody"})
    with pytest.raises(ToolError, match="send failed unexpectedly: KeyError"):
        await core.tools.call(ctx, "send", {"to": "bug"})
    with pytest.raises(ToolError, match=r"send timed out after 0.2 s") as timed_out:
        await core.tools.call(ctx, "send", {"to": "slow"})

    assert timed_out.value.retryable
    assert [e.status for e in await _audit(core)] == ["error", "error", "error"]


async def test_the_audit_log_cannot_be_rewritten(core: Core) -> None:
    await core.tools.call(ToolContext(core=core), "calculate", {"expression": "1 + 1"})
    for statement in ("UPDATE audit_events SET status = 'ok'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with core.sessions.begin() as session:
                await session.execute(text(statement))
    assert len(await _audit(core)) == 1


async def test_tools_describe_themselves_as_model_functions() -> None:
    [definition] = catalog().schemas(["calculate"])
    assert definition["type"] == "function"
    function = definition["function"]
    assert function["name"] == "calculate" and function["description"]
    assert function["parameters"]["required"] == ["expression"]
    assert "title" not in function["parameters"]


def test_tool_names_are_checked_when_registered(send: Send) -> None:
    with pytest.raises(ValueError, match="two tools are called 'send'"):
        ToolRegistry([send, send])
