"""Nodes that build on other parts: ask a persona, run a sub-workflow, map over a list."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any, ClassVar

from pydantic import Field

from bot.errors import UserFacingError
from workflows.errors import NodeFailed
from workflows.expressions import evaluate, render
from workflows.nodes.base import Child, Fits, NodeContext, NodeResult, OneOf, Params


class PersonaParams(Params):
    persona: str
    prompt: str


class Persona:
    """Ask a persona: its system prompt, model and temperature answer the prompt."""

    name: ClassVar[str] = "persona"
    params: ClassVar[type[Params]] = PersonaParams
    raw: ClassVar[tuple[str, ...]] = ()
    pure: ClassVar[bool] = False

    async def run(self, ctx: NodeContext, params: PersonaParams) -> NodeResult:
        if ctx.core is None:
            raise NodeFailed("this node asks a persona (a model): give it a mock in the test")
        from personas import acting, store

        async with ctx.core.sessions() as session:
            try:
                persona = await store.by_name(session, params.persona)
            except UserFacingError as exc:  # unknown persona: the text suggests the closest
                raise NodeFailed(exc.text) from exc
        system = persona.system_prompt
        messages = [{"role": "system", "content": system}] if system else []
        reply = await acting.answer(
            ctx.core,
            persona,
            [*messages, {"role": "user", "content": params.prompt}],
            caller=ctx.caller(),
            context={"run_id": ctx.run_id, "persona_id": persona.id},
        )
        return NodeResult(
            output=reply.text,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            cost_usd=reply.cost_usd,
        )


class SubflowParams(Params):
    workflow: str
    inputs: dict[str, Any] = Field(default_factory=dict)


class Subflow:
    """Run another stored workflow; its output is this node's output. For real runs the child
    is a run of its own, kept step by step (a crash resumes it after its last finished node),
    and this node waits for it without holding a worker."""

    name: ClassVar[str] = "workflow"
    params: ClassVar[type[Params]] = SubflowParams
    raw: ClassVar[tuple[str, ...]] = ()
    pure: ClassVar[bool] = False

    async def run(self, ctx: NodeContext, params: SubflowParams) -> NodeResult:
        if ctx.core is None or ctx.subflow is None:
            raise NodeFailed("this node runs another stored workflow: give it a mock in the test")
        from workflows.inputs import resolve
        from workflows.store import current as current_version
        from workflows.store import spec_of

        depth = int(ctx.variables.get("run", {}).get("depth", 0)) + 1
        current = await current_version(ctx.core.autocommit, params.workflow)
        if current is None:
            raise NodeFailed(f"there is no stored workflow called '{params.workflow}'")
        if not current.enabled:
            raise NodeFailed(f"the workflow '{current.name}' is turned off")
        spec = spec_of(current.source)
        if depth > spec.limits.max_depth:
            limit = spec.limits.max_depth
            raise NodeFailed(f"workflows nest deeper than {limit} (limits.max_depth)")
        return await ctx.subflow(Child(current, spec, resolve(spec, params.inputs), depth))


def child_failed(workflow: str, status: str, node: str | None, error: str | None) -> str:
    """Why a `workflow` node failed: how its child run ended."""
    where = f" at '{node}'" if node else ""
    return f"{workflow} {status}{where}: {error or 'no reason given'}"


class MapParams(Params):
    items: str  # an expression giving a list
    node: dict[str, Any]  # one node (type and parameters) run per item, with `item` and `index`
    parallel: int = Field(default=4, gt=0, le=32)


class Map:
    """Run one node per item of a list, a few at a time; the output is the list of outputs."""

    name: ClassVar[str] = "map"
    params: ClassVar[type[Params]] = MapParams
    raw: ClassVar[tuple[str, ...]] = ("items", "node")
    pure: ClassVar[bool] = False

    def checks(self, params: Mapping[str, Any]) -> Iterator[OneOf | Fits]:
        """The node it runs per item: a known type (not another map), with its parameters."""
        from workflows.nodes import NODE_TYPES

        node = params.get("node")
        if not isinstance(node, dict) or not isinstance(kind_name := node.get("type"), str):
            return
        known = tuple(sorted(name for name in NODE_TYPES if name != self.name))
        yield OneOf(("node", "type"), kind_name, known, "node type")
        if kind_name in known:
            kind = NODE_TYPES[kind_name]
            body = {k: v for k, v in node.items() if k != "type"}
            yield Fits(("node",), kind.params, body, f"node type {kind_name!r}", "parameter")

    async def run(self, ctx: NodeContext, params: MapParams) -> NodeResult:
        from workflows.nodes import NODE_TYPES

        items = await evaluate(params.items, ctx.variables, ctx.sandbox)
        if not isinstance(items, list):
            raise NodeFailed(f"items must be a list, got {type(items).__name__}")
        kind = NODE_TYPES.get(str(params.node.get("type")))
        if kind is None or kind.name == "map":
            raise NodeFailed(f"map cannot run a node of type {params.node.get('type')!r}")
        gate = asyncio.Semaphore(params.parallel)

        async def one(index: int, item: Any) -> NodeResult:
            variables = {**ctx.variables, "item": item, "index": index}
            body = {k: v for k, v in params.node.items() if k != "type"}
            rendered = {
                k: v if k in kind.raw else await render(v, variables, ctx.sandbox)
                for k, v in body.items()
            }
            async with gate:
                return await kind.run(
                    replace(ctx, variables=variables), kind.params.model_validate(rendered)
                )

        results = await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))
        costs = [r.cost_usd for r in results if r.cost_usd is not None]
        return NodeResult(
            output=[r.output for r in results],
            prompt_tokens=sum(r.prompt_tokens for r in results),
            completion_tokens=sum(r.completion_tokens for r in results),
            cost_usd=sum(costs) if costs else None,
        )
