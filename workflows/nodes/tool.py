"""Call a registered tool (see ``switchboard tools``) with arguments, which may use
expressions. The call is audited like any other; files the tool makes land in the run's
workspace, where a ``reply`` node can attach them. A tool with effects that succeeded is
not called again when the node is retried or resumed: the same node of the same run is the
same call."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from bot.tools import ToolError, catalog
from workflows.errors import NodeFailed
from workflows.nodes.base import NodeContext, NodeResult, Params


class ToolNodeParams(Params):
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)


class Tool:
    name: ClassVar[str] = "tool"
    params: ClassVar[type[Params]] = ToolNodeParams
    raw: ClassVar[tuple[str, ...]] = ()
    pure: ClassVar[bool] = False

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
