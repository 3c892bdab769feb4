"""The node seam: each node type is a small object with a parameter model and ``run``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from bot.messages import Attachment, Button, ConversationRef
from bot.tools import ToolContext

if TYPE_CHECKING:
    from bot.core import Core
    from bot.sandbox import Sandbox
    from workflows.spec import WorkflowSpec
    from workflows.store import Current


class Params(BaseModel):
    """Base of every node type's parameters: unknown keys are mistakes, not extras."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Poster(Protocol):
    """Posts a message into the run's conversation (or ``target``) through the outbox."""

    async def __call__(
        self,
        text: str,
        files: tuple[Attachment, ...],
        target: ConversationRef | None,
        buttons: tuple[Button, ...] = (),
    ) -> None: ...


@dataclass(frozen=True)
class Child:
    """A run of another stored workflow that a `workflow` node asks for: checked (it exists,
    is turned on, nests within the limit) and its inputs resolved."""

    current: Current
    spec: WorkflowSpec
    inputs: dict[str, Any]
    depth: int


@dataclass(frozen=True)
class NodeContext:
    """What a node may use while it runs; nothing else reaches it."""

    core: Core | None  # None when a workflow's tests run: no model, no database
    run_id: int
    node_id: str
    attempt: int
    variables: Mapping[str, Any]
    workspace: Path
    ref: ConversationRef | None
    timeout: float
    # Names this node of this run across retries and resumptions, and apart from any other
    # run (even one with the same id in a database made anew): for idempotency keys.
    call_key: str
    # Posts a message into the run's conversation (or a named one) through the outbox.
    post: Poster
    # Where the node's own expressions run (a condition's `if`, a map's items), within bounds.
    sandbox: Sandbox
    # Runs a sub-workflow for this node: a durable run of its own the node waits for, or (in
    # a workflow's tests) a run in memory whose result comes at once. None: not available.
    subflow: Callable[[Child], Awaitable[NodeResult]] | None = None

    def caller(self) -> ToolContext:
        """This node as the caller of tools: the same node of the same run is the same call."""
        return ToolContext(
            core=self.core,
            run_id=self.run_id,
            node_id=self.node_id,
            idempotency_key=self.call_key,
            workspace=self.workspace,
            timeout=self.timeout,
        )


@dataclass(frozen=True)
class NodeResult:
    output: Any = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    attachments: tuple[Attachment, ...] = ()
    # A timer or an approval: the run waits (releasing the worker) until then, or until resumed.
    wait_until: datetime | None = None
    waiting_for: str | None = None


@dataclass(frozen=True)
class OneOf:
    """A check a node type asks of the validator: ``name`` (at ``loc`` in its parameters)
    is one of ``known``."""

    loc: tuple[str, ...]
    name: str
    known: tuple[str, ...]
    kind: str  # what the names are, in messages: "tool"


@dataclass(frozen=True)
class Fits:
    """A check a node type asks of the validator: ``values`` (at ``loc`` in its parameters)
    must be valid for ``model``; ``label`` and ``noun`` name them in messages."""

    loc: tuple[str, ...]
    model: type[BaseModel]
    values: Mapping[str, Any]
    label: str  # "required by {label}": "tool 'calculate'"
    noun: str  # "unknown {noun} 'x'": "calculate argument"


@runtime_checkable
class ChecksMore(Protocol):
    """A node type whose parameters say how to check more of them (a tool's arguments, the
    node a map runs) when the document is saved."""

    def checks(self, params: Mapping[str, Any]) -> Iterator[OneOf | Fits]: ...


class NodeType(Protocol):
    name: ClassVar[str]
    params: ClassVar[type[Params]]
    # Parameters that hold expressions evaluated by the node itself, not rendered up front.
    raw: ClassVar[tuple[str, ...]]
    # No outside effects and cheap: recorded once when done rather than also when started.
    pure: ClassVar[bool]

    async def run(self, ctx: NodeContext, params: Any) -> NodeResult: ...
