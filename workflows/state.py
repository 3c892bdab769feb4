"""A run's state, and where it is kept: Postgres for real runs, memory for tests and dry runs.

The engine reads a run once and writes each step as it changes; the store is the seam, so
the same engine runs a workflow's `tests:` in memory and real runs durably.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from bot.messages import ConversationRef
from workflows.spec import WorkflowSpec

FINAL_RUN = ("succeeded", "failed", "cancelled")
DONE_STEP = ("succeeded", "skipped")


@dataclass
class StepState:
    node_id: str
    status: str = "pending"  # running → succeeded | failed | skipped | waiting
    input: Any = None
    output: Any = None
    error: str | None = None
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    wait_until: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass
class RunState:
    id: int
    workflow: str
    version: int
    spec: WorkflowSpec
    status: str = "queued"
    inputs: dict[str, Any] = field(default_factory=dict)
    mocks: dict[str, Any] = field(default_factory=dict)
    ref: ConversationRef | None = None
    conversation_id: int | None = None
    output: Any = None
    error: str | None = None
    failed_node: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    step_count: int = 0
    depth: int = 0  # how deep inside other workflows' workflow nodes this run is
    # A sub-workflow's run: the run, and its `workflow` node, waiting for this one to end.
    parent_run_id: int | None = None
    parent_node: str | None = None
    wait_until: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    steps: dict[str, StepState] = field(default_factory=dict)
    # Kept in memory only, while one worker advances the run:
    unsaved: bool = False  # its status changed and is not written yet
    # Steps of pure nodes, written with the next write (a pure node is simply run again).
    unsaved_steps: list[StepState] = field(default_factory=list)
    last_progress: float = 0.0  # when its status line was last updated (epoch seconds)

    def add_usage(self, step: StepState) -> None:
        self.prompt_tokens += step.prompt_tokens
        self.completion_tokens += step.completion_tokens
        if step.cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + step.cost_usd


class RunStore(Protocol):
    async def load(self, run_id: int) -> RunState: ...

    async def save_run(self, run: RunState, steps: Sequence[StepState] = ()) -> None:
        """Write the run, and these steps with it."""

    async def save_steps(self, run: RunState, steps: Sequence[StepState]) -> None: ...


class MemoryStore:
    """Runs that live only as long as this object: tests, dry runs, benchmarks."""

    def __init__(self) -> None:
        self.runs: dict[int, RunState] = {}

    def add(self, run: RunState) -> RunState:
        self.runs[run.id] = run
        return run

    async def load(self, run_id: int) -> RunState:
        return self.runs[run_id]

    async def save_run(self, run: RunState, steps: Sequence[StepState] = ()) -> None:
        await self.save_steps(run, steps)
        self.runs[run.id] = run

    async def save_steps(self, run: RunState, steps: Sequence[StepState]) -> None:
        run.steps.update((step.node_id, step) for step in steps)
