"""The tools one installation offers, and the one way to call them: checked, timed, audited.

Every call made with a database at hand (``ctx.core``) becomes one row of the append-only
audit log: who asked, with what arguments (secret-looking values masked), and what came of
it, including refusals and failures. A tool with effects called again under an idempotency
key it already succeeded under returns the recorded result instead of acting twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from bot import audit
from bot.names import NAME, closest
from bot.storage.models import AuditEvent
from bot.tools.base import Tool, ToolContext, ToolError, ToolResult
from bot.values import jsonable, problems

log = logging.getLogger(__name__)

ACTION = "tool"
SECRET_LOOKING = re.compile(
    r"pass(word)?|secret|token|api[_-]?key|authori[sz]ation|credential", re.I
)
MAX_RECORDED = 256 * 1024  # characters of a result kept in the audit log


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        if not NAME.match(tool.name):
            raise ValueError(f"tool name {tool.name!r}: use a-z, 0-9, '_' and '-' only")
        if tool.name in self._tools:
            raise ValueError(f"two tools are called {tool.name!r}")
        self._tools[tool.name] = tool

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def names(self) -> list[str]:
        return sorted(self._tools)

    def get(self, name: str) -> Tool:
        tool = self._tools.get(name)
        if tool is None:
            raise ToolError(unknown_text(name, self.names()))
        return tool

    def schemas(self, names: Sequence[str]) -> list[dict[str, Any]]:
        """The named tools as a model's function-calling definitions (OpenAI format)."""
        return [schema(self.get(name)) for name in names]

    async def refuse(
        self, ctx: ToolContext, name: str, arguments: Mapping[str, Any], reason: str
    ) -> ToolError:
        """Record a call the caller may not make; the error to raise says why."""
        await _record(ctx, name, arguments, "refused", time.perf_counter(), error=reason)
        return ToolError(reason)

    async def call(self, ctx: ToolContext, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        """Run a tool for ``ctx``; ToolError says what went wrong, in words a model or a
        person can act on."""
        started = time.perf_counter()
        try:
            tool = self.get(name)
            params = _check(tool, arguments)
        except ToolError as exc:
            await _record(ctx, name, arguments, "refused", started, error=exc.text)
            raise
        if ctx.core is None and not tool.offline:
            raise ToolError(f"{name} needs the network or the database: mock it in the test")
        if tool.effects and (done := await _replay(ctx, name)) is not None:
            return done
        try:
            result = await asyncio.wait_for(tool.run(ctx, params), ctx.timeout)
        except TimeoutError:
            error = ToolError(f"{name} timed out after {ctx.timeout:g} s", retryable=True)
            await _record(ctx, name, arguments, "error", started, error=error.text)
            raise error from None
        except ToolError as exc:
            await _record(ctx, name, arguments, "error", started, error=exc.text)
            raise
        except Exception as exc:  # a bug in a tool must fail the call, not its caller
            log.exception("tool %s crashed", name)
            error = ToolError(f"{name} failed unexpectedly: {type(exc).__name__}: {exc}")
            await _record(ctx, name, arguments, "error", started, error=error.text)
            raise error from exc
        await _record(ctx, name, arguments, "ok", started, result=result)
        return result


def unknown_text(name: str, known: Sequence[str]) -> str:
    close = closest(name, known)
    hint = f" Did you mean '{close}'?" if close else ""
    return f"There is no tool called '{name}'.{hint} Tools: {', '.join(known) or 'none'}."


def schema(tool: Tool) -> dict[str, Any]:
    parameters = tool.params.model_json_schema()
    parameters.pop("title", None)
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": parameters},
    }


def _check(tool: Tool, arguments: Mapping[str, Any]) -> Any:
    try:
        return tool.params.model_validate(dict(arguments))
    except ValidationError as exc:
        raise ToolError(f"{tool.name}: {problems(exc, whole='arguments')}") from exc


# --- the audit log ---------------------------------------------------------------------------


def actor(ctx: ToolContext) -> str:
    """Who acted, most specific first: a workflow's node, a persona, a person."""
    if ctx.run_id is not None:
        return f"run:{ctx.run_id}/{ctx.node_id or ''}"
    if ctx.persona:
        return f"persona:{ctx.persona}"
    return f"user:{ctx.user_id}" if ctx.user_id is not None else "system"


def redact(value: Any) -> Any:
    """Arguments as recorded: values under secret-looking keys are masked."""
    if isinstance(value, Mapping):
        return {
            str(k): "***" if SECRET_LOOKING.search(str(k)) else redact(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def _recorded(result: ToolResult) -> dict[str, Any]:
    text = json.dumps(result.output, default=str, ensure_ascii=False)
    output = json.loads(text) if len(text) <= MAX_RECORDED else {"truncated": text[:MAX_RECORDED]}
    return {
        "output": output,
        "complete": len(text) <= MAX_RECORDED,
        "attachments": [a.filename for a in result.attachments],
    }


async def _record(
    ctx: ToolContext,
    name: str,
    arguments: Mapping[str, Any],
    status: str,
    started: float,
    *,
    result: ToolResult | None = None,
    error: str | None = None,
) -> None:
    if ctx.core is None:
        return  # a workflow's tests: nothing was done for real
    data: dict[str, Any] = {
        "arguments": redact(jsonable(dict(arguments))),
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        "user_id": ctx.user_id,
        "persona": ctx.persona,
        "conversation_id": ctx.conversation_id,
        "run_id": ctx.run_id,
        "node_id": ctx.node_id,
    }
    if result is not None:
        data["result"] = _recorded(result)
    if error is not None:
        data["error"] = error
    await audit.record(
        ctx.core.autocommit,
        actor=actor(ctx),
        action=ACTION,
        subject=name,
        status=status,
        data=data,
        key=ctx.idempotency_key,
    )


async def _replay(ctx: ToolContext, name: str) -> ToolResult | None:
    """The result of the same call that already succeeded, if any."""
    if ctx.core is None or ctx.idempotency_key is None:
        return None
    async with ctx.core.autocommit.connect() as conn:
        data = await conn.scalar(
            select(AuditEvent.data)
            .where(
                AuditEvent.key == ctx.idempotency_key,
                AuditEvent.action == ACTION,
                AuditEvent.subject == name,
                AuditEvent.status == "ok",
            )
            .order_by(AuditEvent.id.desc())
            .limit(1)
        )
    if data is None or not data.get("result", {}).get("complete", False):
        return None
    return ToolResult(output=data["result"]["output"], replayed=True)
