"""The tool seam: a tool is a name, a description, a parameter model and ``run``.

Personas call tools when their model asks to; workflows call them from a ``tool`` node.
Either way the call goes through ``ToolRegistry.call``, which checks the arguments and
writes the call to the audit log. A tool never sees who asked except through
``ToolContext``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from bot.errors import UserFacingError
from bot.messages import Attachment

if TYPE_CHECKING:
    from bot.core import Core


class ToolParams(BaseModel):
    """Base of every tool's arguments: unknown keys are mistakes, not extras."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolError(UserFacingError):
    """A call that could not be done, said so that a person (or a model) can act on it.
    ``retryable``: the same call may work later (a timeout, a server error)."""

    def __init__(self, text: str, *, retryable: bool = False) -> None:
        super().__init__(text)
        self.retryable = retryable


@dataclass(frozen=True)
class ToolContext:
    """Who is calling, from where; what a tool may use while it runs."""

    core: Core | None  # None when a workflow's tests run: offline tools only
    user_id: int | None = None
    persona: str | None = None
    conversation_id: int | None = None
    run_id: int | None = None
    node_id: str | None = None
    # The same key for the same logical call (a workflow node, a model's tool call id): a
    # tool with effects that already succeeded under it is not done again.
    idempotency_key: str | None = None
    workspace: Path | None = None  # where a tool may write files (a run's folder)
    timeout: float = 60.0


@dataclass(frozen=True)
class ToolResult:
    output: Any = None  # JSON-able: what the model or the next node sees
    attachments: tuple[Attachment, ...] = ()
    replayed: bool = False  # recorded earlier under the same idempotency key, not run again
    extra: Mapping[str, Any] = field(default_factory=dict)


class Tool(Protocol):
    name: ClassVar[str]  # letters, digits, '_' and '-' only: models' function names
    description: ClassVar[str]  # one or two sentences, for the model and `switchboard tools`
    params: ClassVar[type[ToolParams]]
    # Changes something outside Switchboard (sends, writes, buys): such calls are never
    # repeated under the same idempotency key.
    effects: ClassVar[bool]
    # Runs without a database or the network: a workflow's tests may run it unmocked.
    offline: ClassVar[bool]

    async def run(self, ctx: ToolContext, params: Any) -> ToolResult: ...
