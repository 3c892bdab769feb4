"""Ask a model. Several llm nodes with different models in one graph is the point:
draft with one, critique with another, refine with the first."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import jsonschema
from pydantic import Field

from bot.errors import LLMError, LLMTimeout, LLMUnreachable
from workflows.errors import NodeFailed
from workflows.nodes.base import NodeContext, NodeResult, Params


class LLMParams(Params):
    prompt: str
    system: str = ""
    model: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    # A JSON schema: the model is asked for JSON, and the node's output is the parsed object.
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


class LLM:
    name: ClassVar[str] = "llm"
    params: ClassVar[type[Params]] = LLMParams
    raw: ClassVar[tuple[str, ...]] = ()
    pure: ClassVar[bool] = False

    async def run(self, ctx: NodeContext, params: LLMParams) -> NodeResult:
        if ctx.core is None:
            raise NodeFailed("this node calls a model: give it a mock in the test")
        try:
            completion = await ctx.core.llm.complete(
                _messages(params),
                model=params.model or ctx.core.settings.model,
                temperature=params.temperature,
                max_tokens=params.max_tokens,
                context={"run_id": ctx.run_id},
            )
        except LLMError as exc:
            # The chat wording ends with "send /retry"; a run is retried with /run retry.
            reason = exc.text.split(" Your message is saved")[0]
            raise NodeFailed(
                reason, retryable=isinstance(exc, LLMUnreachable | LLMTimeout)
            ) from exc
        output: Any = completion.text
        if params.schema_ is not None:
            output = _parse(completion.text, params.schema_)
        return NodeResult(
            output=output,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            cost_usd=completion.cost_usd,
        )


def _messages(params: LLMParams) -> list[dict[str, str]]:
    system = params.system
    if params.schema_ is not None:
        system += (
            "\n\nAnswer with one JSON value and nothing else, valid against this JSON schema:\n"
            + json.dumps(params.schema_)
        )
    head = [{"role": "system", "content": system.strip()}] if system.strip() else []
    return [*head, {"role": "user", "content": params.prompt}]


def _parse(text: str, schema: dict[str, Any]) -> Any:
    body = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        value = json.loads(body)
        jsonschema.validate(value, schema)
    except json.JSONDecodeError as exc:
        raise NodeFailed(f"the model did not answer with JSON ({exc})", retryable=True) from exc
    except jsonschema.ValidationError as exc:
        raise NodeFailed(
            f"the model's JSON does not fit the schema: {exc.message}", retryable=True
        ) from exc
    return value
