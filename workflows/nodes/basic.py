"""Nodes that shape data and choose paths: template, condition, switch, delay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from pydantic import Field, model_validator

from workflows.expressions import evaluate
from workflows.nodes.base import NodeContext, NodeResult, Params


class TemplateParams(Params):
    text: Any = None  # any value: strings with {{ }} were rendered before the node runs
    data: Any = None


class Template:
    """Transform text or data: the output is ``text`` (or ``data``) after rendering."""

    name: ClassVar[str] = "template"
    params: ClassVar[type[Params]] = TemplateParams
    raw: ClassVar[tuple[str, ...]] = ()
    pure: ClassVar[bool] = True

    async def run(self, ctx: NodeContext, params: TemplateParams) -> NodeResult:
        return NodeResult(output=params.text if params.text is not None else params.data)


class ConditionParams(Params):
    if_: str = Field(alias="if")


class Condition:
    """True or false; later nodes branch with ``when: "{{ this_node }}"``."""

    name: ClassVar[str] = "condition"
    params: ClassVar[type[Params]] = ConditionParams
    raw: ClassVar[tuple[str, ...]] = ("if",)
    pure: ClassVar[bool] = True

    async def run(self, ctx: NodeContext, params: ConditionParams) -> NodeResult:
        return NodeResult(output=bool(await evaluate(params.if_, ctx.variables, ctx.sandbox)))


class SwitchParams(Params):
    value: str
    cases: dict[str, Any]
    default: str = "default"


class Switch:
    """The name of the first case equal to ``value``; later nodes branch on it."""

    name: ClassVar[str] = "switch"
    params: ClassVar[type[Params]] = SwitchParams
    raw: ClassVar[tuple[str, ...]] = ("value",)
    pure: ClassVar[bool] = True

    async def run(self, ctx: NodeContext, params: SwitchParams) -> NodeResult:
        value = await evaluate(params.value, ctx.variables, ctx.sandbox)
        for case, expected in params.cases.items():
            if value == expected:
                return NodeResult(output=case)
        return NodeResult(output=params.default)


class DelayParams(Params):
    seconds: float | None = Field(default=None, ge=0)
    until: datetime | None = None

    @model_validator(mode="after")
    def _one(self) -> DelayParams:
        if (self.seconds is None) == (self.until is None):
            raise ValueError("give either seconds or until")
        return self


class Delay:
    """Wait without holding a worker: the run sleeps in the database and a timer resumes it."""

    name: ClassVar[str] = "delay"
    params: ClassVar[type[Params]] = DelayParams
    raw: ClassVar[tuple[str, ...]] = ()
    pure: ClassVar[bool] = False

    async def run(self, ctx: NodeContext, params: DelayParams) -> NodeResult:
        if params.until is not None:
            until = params.until if params.until.tzinfo else params.until.replace(tzinfo=UTC)
        else:
            until = datetime.now(UTC) + timedelta(seconds=params.seconds or 0)
        return NodeResult(output=until.isoformat(), wait_until=until)
