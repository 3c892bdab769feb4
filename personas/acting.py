"""A persona acts through its tools: the model asks for a call, the registry makes it
(checked and audited), the result goes back, until the model answers in words.

A persona may use only the tools its file lists. A refused or failed call is told to the
model as an error it can explain or work around; after ``MAX_ROUNDS`` rounds of calls the
model is asked to answer without tools, so a confused model cannot loop for ever.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bot.core import Core
from bot.llm import Completion, DeltaSink, ToolCall
from bot.storage.models import Persona
from bot.tools import ToolContext, ToolError

MAX_ROUNDS = 5
MAX_RESULT_CHARS = 20_000  # of one tool result, as the model sees it


@dataclass(frozen=True)
class Answer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    tool_calls: int


async def answer(
    core: Core,
    persona: Persona,
    messages: Sequence[Mapping[str, Any]],
    *,
    caller: ToolContext,
    on_delta: DeltaSink | None = None,
    context: Mapping[str, Any] | None = None,
) -> Answer:
    """The persona's reply to ``messages``, calling its tools as its model asks."""
    talk = [dict(m) for m in messages]
    # Only tools this installation has: a persona stored by an older version may list more.
    known = [name for name in persona.tools if name in core.tools]
    offered = core.tools.schemas(known) if known else None
    used: list[Completion] = []
    calls = 0
    for round_ in range(MAX_ROUNDS + 1):
        completion = await core.llm.complete(
            talk,
            model=persona.model or core.settings.model,
            fallbacks=persona.fallbacks,
            temperature=persona.temperature,
            max_tokens=persona.max_tokens,
            tools=offered if round_ < MAX_ROUNDS else None,
            on_delta=on_delta,
            context=context,
        )
        used.append(completion)
        if not completion.tool_calls or round_ == MAX_ROUNDS:
            break
        talk.append(_asked(completion))
        for call in completion.tool_calls:
            calls += 1
            talk.append(await _result(core, persona, call, caller))
    costs = [c.cost_usd for c in used if c.cost_usd is not None]
    return Answer(
        text=used[-1].text,
        prompt_tokens=sum(c.prompt_tokens for c in used),
        completion_tokens=sum(c.completion_tokens for c in used),
        cost_usd=sum(costs) if costs else None,
        tool_calls=calls,
    )


def _asked(completion: Completion) -> dict[str, Any]:
    """The model's turn that asked for calls, as the conversation must repeat it."""
    return {
        "role": "assistant",
        "content": completion.text or None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": call.raw_arguments or json.dumps(call.arguments),
                },
            }
            for call in completion.tool_calls
        ],
    }


async def _result(
    core: Core, persona: Persona, call: ToolCall, caller: ToolContext
) -> dict[str, Any]:
    key = f"{caller.idempotency_key}:{call.id}" if caller.idempotency_key else None
    ctx = replace(caller, persona=persona.name, idempotency_key=key)
    try:
        if call.name not in persona.tools:
            raise await core.tools.refuse(
                ctx, call.name, call.arguments, _not_allowed(persona, call.name)
            )
        result = await core.tools.call(ctx, call.name, call.arguments)
        content = json.dumps(result.output, ensure_ascii=False, default=str)
    except ToolError as exc:
        content = json.dumps({"error": exc.text}, ensure_ascii=False)
    if len(content) > MAX_RESULT_CHARS:
        content = content[:MAX_RESULT_CHARS] + " …(cut)"
    return {"role": "tool", "tool_call_id": call.id, "content": content}


def _not_allowed(persona: Persona, name: str) -> str:
    allowed = ", ".join(persona.tools) or "none"
    return f"The persona {persona.name} may not use {name}; its tools: {allowed}."
