"""Call a registered tool (see ``switchboard tools``) with arguments, which may use
expressions. The call is audited like any other; files the tool makes land in the run's
workspace, where a ``reply`` node can attach them. A tool with effects that succeeded is
not called again when the node is retried or resumed: the same node of the same run is the
same call."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from pydantic import Field

from bot.tools import ToolError, catalog
from workflows.errors import NodeFailed
from workflows.expressions import is_template
from workflows.nodes.base import Fits, NodeContext, NodeResult, OneOf, Params


class ToolNodeParams(Params):
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)


class Tool:
    name: ClassVar[str] = "tool"
    params: ClassVar[type[Params]] = ToolNodeParams
    raw: ClassVar[tuple[str, ...]] = ()
    pure: ClassVar[bool] = False

    def checks(self, params: Mapping[str, Any]) -> Iterator[OneOf | Fits]:
        """A known tool, with arguments that tool takes."""
        name, args, tools = params.get("tool"), params.get("args") or {}, catalog()
        if not isinstance(name, str) or is_template(name) or not isinstance(args, dict):
            return
        yield OneOf(("tool",), name, tuple(tools.names()), "tool")
        if name in tools:
            model = tools.get(name).params
            yield Fits(("args",), model, args, f"tool {name!r}", f"{name} argument")

    async def run(self, ctx: NodeContext, params: ToolNodeParams) -> NodeResult:
        tools = ctx.core.tools if ctx.core is not None else catalog()
        try:
            result = await tools.call(ctx.caller(), params.tool, params.args)
        except ToolError as exc:
            raise NodeFailed(exc.text, retryable=exc.retryable) from exc
        files = [a for a in result.attachments if a.data]
        if files:
            ctx.workspace.mkdir(parents=True, exist_ok=True)
            for attachment in files:
                (ctx.workspace / attachment.filename).write_bytes(attachment.data)
        return NodeResult(output=result.output, attachments=result.attachments)
