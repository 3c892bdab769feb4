"""Post a message (and the run's files) into the conversation that started the run, or
into a named conversation."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from bot.messages import ConversationRef
from workflows.nodes.base import NodeContext, NodeResult, Params


class Target(Params):
    channel: str
    chat: str
    workspace: str = ""
    thread: str = ""


class ReplyParams(Params):
    text: str
    to: Target | None = None
    files: list[str] = Field(default_factory=list)  # names in the run's workspace


class Reply:
    name: ClassVar[str] = "reply"
    params: ClassVar[type[Params]] = ReplyParams
    raw: ClassVar[tuple[str, ...]] = ()
    pure: ClassVar[bool] = False

    async def run(self, ctx: NodeContext, params: ReplyParams) -> NodeResult:
        from workflows.nodes.files import read_attachment

        target = ConversationRef(**params.to.model_dump()) if params.to else None
        files = tuple(read_attachment(ctx.workspace, name) for name in params.files)
        await ctx.post(params.text, files, target)
        return NodeResult(output=params.text, attachments=files)
