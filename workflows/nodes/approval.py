"""Pause until an authorised person approves or rejects in the chat, or time runs out.

The run waits in the database (no worker is held); /approve or /reject resumes it. The
node's output is {"approved": true|false, "by": …, "note": …}, so later nodes can branch
with ``when: "{{ this_node.approved }}"``. Nobody deciding in time fails the node.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import ClassVar

from pydantic import Field

from bot.messages import Button
from workflows.nodes.base import NodeContext, NodeResult, Params


class ApprovalParams(Params):
    message: str
    # Who may decide: "slack:U123" (a platform account) or "role:admin"; empty: anyone.
    approvers: list[str] = Field(default_factory=list)
    timeout: float = Field(default=86_400, gt=0)


class Approval:
    name: ClassVar[str] = "approval"
    params: ClassVar[type[Params]] = ApprovalParams
    raw: ClassVar[tuple[str, ...]] = ()
    pure: ClassVar[bool] = False

    async def run(self, ctx: NodeContext, params: ApprovalParams) -> NodeResult:
        who = ", ".join(params.approvers) or "anyone here"
        await ctx.post(
            f"Run #{ctx.run_id} asks for approval: {params.message}\n"
            f"Reply /approve {ctx.run_id} or /reject {ctx.run_id} [reason] ({who} may decide).",
            (),
            None,
            (
                Button("Approve", f"/approve {ctx.run_id}"),
                Button("Reject", f"/reject {ctx.run_id}"),
            ),
        )
        return NodeResult(
            output={"kind": "approval", "approvers": params.approvers},
            wait_until=datetime.now(UTC) + timedelta(seconds=params.timeout),
            waiting_for="approval",
        )
