"""Ask a person a question in a conversation and wait (in the database) for the answer.

The next message in that conversation that is not a command is taken as the answer (from
the people in ``from``, when given). The output is {"answer": text, "by": account}; nobody
answering within ``timeout`` gives {"answer": null}, so the graph can go on without it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import ClassVar

from pydantic import Field

from bot.conversation import conversation_for
from bot.messages import ConversationRef
from workflows.errors import NodeFailed
from workflows.nodes.base import NodeContext, NodeResult, Params
from workflows.nodes.reply import Target

KIND = "input"


class AskParams(Params):
    question: str
    # Who may answer: "slack:U123"; empty: anyone in the conversation.
    from_: list[str] = Field(default_factory=list, alias="from")
    to: Target | None = None
    timeout: float = Field(default=86_400, gt=0)


class Ask:
    name: ClassVar[str] = "input"
    params: ClassVar[type[Params]] = AskParams
    raw: ClassVar[tuple[str, ...]] = ()
    pure: ClassVar[bool] = False

    async def run(self, ctx: NodeContext, params: AskParams) -> NodeResult:
        target = ConversationRef(**params.to.model_dump()) if params.to else ctx.ref
        if ctx.core is None or target is None:
            raise NodeFailed("an input node needs a conversation to ask in: give it a mock")
        await ctx.post(params.question, (), target)
        return NodeResult(
            output={
                "kind": KIND,
                "question": params.question,
                "from": params.from_,
                "conversation_id": await conversation_for(ctx.core, target),
            },
            wait_until=datetime.now(UTC) + timedelta(seconds=params.timeout),
            waiting_for=KIND,
        )
