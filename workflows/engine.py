"""The engine: advance a run as far as it can go, one wave of ready nodes at a time.

Each step is written before it runs (with its rendered input) and again when it ends, so a
run taken over by another worker after a crash resumes after its last finished node:
finished nodes, and their side effects, are never repeated. A node interrupted mid-way is
run again; nodes with outside effects (reply, http POST) use idempotency keys for that.
Timers and approvals park the run as ``waiting`` and give the worker back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bot.core import Core
from bot.errors import LimitExceeded, UserFacingError
from bot.messages import Attachment, Button, ConversationRef
from bot.sandbox import Sandbox
from bot.values import jsonable, problems
from workflows.errors import NodeFailed, WorkflowError
from workflows.expressions import evaluate, render
from workflows.nodes import NODE_TYPES
from workflows.nodes.base import Child, NodeContext, NodeResult, NodeType
from workflows.spec import NodeSpec
from workflows.state import DONE_STEP, FINAL_RUN, RunState, RunStore, StepState

log = logging.getLogger(__name__)

Post = Callable[
    [RunState, str, str, tuple[Attachment, ...], ConversationRef | None, tuple[Button, ...]],
    Awaitable[None],
]
Wake = Callable[[RunState, datetime], Awaitable[None]]
Progress = Callable[[RunState, str], Awaitable[None]]
# (run, node id, the child asked for) → the `workflow` node's result (see NodeContext.subflow)
Subflow = Callable[[RunState, str, Child], Awaitable[NodeResult]]

PROGRESS_AFTER = 5.0  # seconds into a run before the first progress line
PROGRESS_EVERY = 10.0  # seconds between progress lines


@dataclass
class Engine:
    core: Core | None  # None in tests and dry runs: nodes that need a model must be mocked
    store: RunStore
    post: Post  # (run, node id, text, files, target) → a message in a conversation
    wake: Wake  # schedule the run to continue at a time (timers)
    workspace_root: Path
    sandbox: Sandbox  # where expressions run, within bounds
    progress: Progress | None = None  # a long run's status line, updated in place
    subflow: Subflow | None = None  # how a `workflow` node runs its child

    async def advance(self, run_id: int) -> RunState:
        return await self.proceed(await self.store.load(run_id))

    async def proceed(self, run: RunState) -> RunState:
        """Advance a run already read."""
        if run.status in FINAL_RUN:
            return run
        await self._start(run)
        failed = [s for s in run.steps.values() if s.status == "failed"]
        if failed and run.status == "running":
            await self._fail(run, failed[0].node_id, failed[0].error or "failed")
        while run.status == "running":
            if (problem := _over_limits(run)) is not None:
                await self._fail(run, None, problem)
                break
            ready = self._ready(run)
            if not ready:
                await self._settle(run)
                break
            room = run.spec.limits.max_steps - run.step_count
            wave = ready[: min(run.spec.limits.max_parallel, room)]
            await self._report(run, wave)
            # The last wave's steps are written before the next wave starts (with the run, if
            # it changed), so a run taken over resumes after its last finished wave; a run
            # that ends after its wave writes its steps with its end, in one statement.
            if run.unsaved and (run.unsaved_steps or not all(_pure(run, n) for n in wave)):
                await self._save_run(run)
            elif run.unsaved_steps:
                await self._save_steps(run)
            # What expressions see is the same for the whole wave: its nodes need only
            # nodes of earlier waves.
            variables = self.variables(run)
            await asyncio.gather(*(self._execute(run, node, variables) for node in wave))
            failed = [s for s in run.steps.values() if s.status == "failed"]
            if failed:
                await self._fail(run, failed[0].node_id, failed[0].error or "failed")
        return run

    async def _start(self, run: RunState) -> None:
        now = datetime.now(UTC)
        if run.status == "queued":
            run.started_at = now
        for step in run.steps.values():
            if step.status == "waiting" and step.wait_until is not None and step.wait_until <= now:
                await self._time_is_up(run, step, now)
        run.status, run.wait_until = "running", None
        run.unsaved = True  # written with the first node that has effects, or at the end

    async def _save_run(self, run: RunState) -> None:
        """Write the run with the steps not yet written: one statement."""
        steps, run.unsaved_steps, run.unsaved = run.unsaved_steps, [], False
        await self.store.save_run(run, steps)

    async def _save_step(self, run: RunState, step: StepState, *, pure: bool = False) -> None:
        """A pure node's step is written with the next write, at the latest before the next
        wave; any other at once (with the waiting ones), so a node with effects is known to
        have started or ended."""
        run.steps[step.node_id] = step
        run.unsaved_steps.append(step)
        if not pure:
            await self._save_steps(run)

    async def _save_steps(self, run: RunState) -> None:
        steps, run.unsaved_steps = run.unsaved_steps, []
        await self.store.save_steps(run, steps)

    async def _report(self, run: RunState, wave: list[NodeSpec]) -> None:
        """Tell a long run's conversation where it is, at most every PROGRESS_EVERY seconds."""
        if self.progress is None or run.started_at is None:
            return
        now = datetime.now(UTC)
        elapsed = (now - run.started_at).total_seconds()
        if elapsed < PROGRESS_AFTER or now.timestamp() - run.last_progress < PROGRESS_EVERY:
            return
        run.last_progress = now.timestamp()
        done = sum(s.status in DONE_STEP for s in run.steps.values())
        current = ", ".join(node.id for node in wave)
        await self.progress(
            run,
            f"Run #{run.id} of {run.workflow}: {done}/{len(run.spec.nodes)} steps done, "
            f"now {current} ({elapsed:.0f} s)",
        )

    async def _time_is_up(self, run: RunState, step: StepState, now: datetime) -> None:
        """A timer ends well; an approval nobody gave in time fails its node."""
        node = run.spec.nodes.get(step.node_id)
        kind = node.type if node is not None else ""
        if kind == "approval":
            step.status, step.error = "failed", "nobody approved or rejected in time"
        else:
            step.status = "succeeded"
        if kind == "input":
            step.output = {"answer": None, "by": None}
        step.finished_at = now
        await self._save_step(run, step, pure=True)  # written with the run, which runs next

    def _ready(self, run: RunState) -> list[NodeSpec]:
        """Nodes not yet finished (or interrupted) whose needs are all done."""
        return [
            node
            for node in run.spec.nodes.values()
            if _step_status(run, node.id) in ("pending", "running")
            and all(_step_status(run, need) in DONE_STEP for need in node.needs)
        ]

    async def _settle(self, run: RunState) -> None:
        waiting = [s for s in run.steps.values() if s.status == "waiting"]
        if waiting:
            run.status = "waiting"
            due = [s.wait_until for s in waiting if s.wait_until is not None]
            run.wait_until = min(due) if due else None
            await self._save_run(run)
            if run.wait_until is not None:
                await self.wake(run, run.wait_until)
            return
        await self._finish(run)

    async def _finish(self, run: RunState) -> None:
        variables = self.variables(run)
        try:
            output = run.spec.output
            run.output = jsonable(
                await render(output, variables, self.sandbox) if output is not None else _last(run)
            )
        except UserFacingError as exc:
            await self._fail(run, None, f"output: {exc.text}")
            return
        run.status, run.finished_at = "succeeded", datetime.now(UTC)
        await self._save_run(run)

    async def _fail(self, run: RunState, node_id: str | None, error: str) -> None:
        run.status, run.failed_node, run.error = "failed", node_id, error
        run.finished_at = datetime.now(UTC)
        await self._save_run(run)

    # --- one node -------------------------------------------------------------------------

    async def _execute(self, run: RunState, node: NodeSpec, variables: dict[str, Any]) -> None:
        step = run.steps.get(node.id) or StepState(node.id)
        try:
            skip = await _skipped(run, node, variables, self.sandbox)
        except UserFacingError as exc:
            return await self._end(run, step, pure=True, error=f"when: {exc.text}")
        if skip:
            step.status, step.finished_at = "skipped", datetime.now(UTC)
            return await self._save_step(run, step, pure=True)
        node_type = NODE_TYPES[node.type]
        try:
            rendered = {
                key: value if key in node_type.raw else await render(value, variables, self.sandbox)
                for key, value in node.params.items()
            }
        except UserFacingError as exc:
            return await self._end(run, step, pure=True, error=exc.text)
        step.status, step.input, step.started_at = "running", jsonable(rendered), datetime.now(UTC)
        step.attempts += 1
        run.step_count += 1
        pure = _pure(run, node)
        if not pure:
            # Marks a node with outside effects as started; a pure one is simply run again.
            await self._save_step(run, step)
        try:
            result = await self._result(run, node, node_type, rendered, variables)
        except (WorkflowError, LimitExceeded, ValidationError, TimeoutError) as exc:
            error = _describe(exc, run.spec.limits.node_timeout)
            return await self._end(run, step, pure=pure, error=error)
        except Exception as exc:  # a bug in a node must fail the node, not the worker
            log.exception("node %s of run %s crashed", node.id, run.id)
            error = f"unexpected error: {type(exc).__name__}: {exc}"
            return await self._end(run, step, pure=pure, error=error)
        await self._end(run, step, pure=pure, result=result)

    async def _result(
        self,
        run: RunState,
        node: NodeSpec,
        node_type: NodeType,
        rendered: dict[str, Any],
        variables: dict[str, Any],
    ) -> NodeResult:
        params = node_type.params.model_validate(rendered)  # mocked nodes too: tests catch typos
        if node.id in run.mocks:
            return NodeResult(output=run.mocks[node.id])
        limits = run.spec.limits
        for attempt in range(limits.retries + 1):
            context = self._context(run, node, attempt, variables)
            try:
                return await asyncio.wait_for(node_type.run(context, params), limits.node_timeout)
            except (NodeFailed, TimeoutError) as exc:
                retryable = not isinstance(exc, NodeFailed) or exc.retryable
                if not retryable or attempt == limits.retries:
                    raise
                await asyncio.sleep(limits.retry_backoff**attempt)
        raise AssertionError("unreachable: the last attempt raises")

    async def _end(
        self,
        run: RunState,
        step: StepState,
        *,
        pure: bool,
        result: NodeResult | None = None,
        error: str = "",
    ) -> None:
        step.finished_at = datetime.now(UTC)
        if result is None:
            step.status, step.error = "failed", error
        else:
            step.output = jsonable(result.output)
            step.prompt_tokens, step.completion_tokens = (
                result.prompt_tokens,
                result.completion_tokens,
            )
            step.cost_usd, step.error = result.cost_usd, None
            step.status = "waiting" if result.wait_until or result.waiting_for else "succeeded"
            step.wait_until = result.wait_until
            run.add_usage(step)
        await self._save_step(run, step, pure=pure)

    def _context(
        self, run: RunState, node: NodeSpec, attempt: int, variables: dict[str, Any]
    ) -> NodeContext:
        async def post(
            text: str,
            files: tuple[Attachment, ...],
            target: ConversationRef | None,
            buttons: tuple[Button, ...] = (),
        ) -> None:
            await self.post(run, node.id, text, files, target, buttons)

        async def subflow(child: Child) -> NodeResult:
            assert self.subflow is not None
            return await self.subflow(run, node.id, child)

        return NodeContext(
            core=self.core,
            run_id=run.id,
            node_id=node.id,
            attempt=attempt,
            variables=variables,
            workspace=self.workspace(run),
            ref=run.ref,
            timeout=run.spec.limits.node_timeout,
            call_key=_call_key(run, node.id),
            post=post,
            sandbox=self.sandbox,
            subflow=subflow if self.subflow is not None else None,
        )

    def workspace(self, run: RunState) -> Path:
        return run_folder(self.workspace_root, run.id)

    def variables(self, run: RunState) -> dict[str, Any]:
        """What expressions see: inputs by name, finished nodes' outputs by id, and the run."""
        outputs = {node_id: step.output for node_id, step in run.steps.items()}
        skipped = {n: None for n in run.spec.nodes if _step_status(run, n) == "skipped"}
        return {
            **run.inputs,
            "inputs": dict(run.inputs),
            **outputs,
            **skipped,
            "run": {
                "id": run.id,
                "workflow": run.workflow,
                "version": run.version,
                "depth": run.depth,
            },
            "now": datetime.now(UTC),
        }


def _call_key(run: RunState, node_id: str) -> str:
    started = int(run.started_at.timestamp() * 1000) if run.started_at else 0
    return f"run-{run.id}-{started}-{node_id}"


def run_folder(root: Path, run_id: int) -> Path:
    """A run's own folder; created by the first node that writes a file."""
    return root / str(run_id)


def _pure(run: RunState, node: NodeSpec) -> bool:
    """Without outside effects (a mocked node has none): written with the next write."""
    return NODE_TYPES[node.type].pure or node.id in run.mocks


def _step_status(run: RunState, node_id: str) -> str:
    step = run.steps.get(node_id)
    return step.status if step is not None else "pending"


async def _skipped(
    run: RunState, node: NodeSpec, variables: dict[str, Any], sandbox: Sandbox
) -> bool:
    """Skipped when its condition is false, or when every node it waits for was skipped."""
    if node.needs and all(_step_status(run, need) == "skipped" for need in node.needs):
        return True
    return node.when is not None and not await evaluate(node.when, variables, sandbox)


def _over_limits(run: RunState) -> str | None:
    limits = run.spec.limits
    if run.step_count >= limits.max_steps:
        return f"stopped after {run.step_count} steps: the limit is {limits.max_steps} (max_steps)"
    if run.started_at is not None:
        elapsed = (datetime.now(UTC) - run.started_at).total_seconds()
        if elapsed > limits.max_run_seconds:
            return (
                f"stopped after {elapsed:.0f} s: the limit is {limits.max_run_seconds:g} s "
                "(limits.max_run_seconds)"
            )
    if limits.budget_usd is not None and (run.cost_usd or 0) > limits.budget_usd:
        spent = run.cost_usd or 0.0
        return f"stopped at ${spent:.4f}: the budget is ${limits.budget_usd:g} (budget_usd)"
    return None


def _last(run: RunState) -> Any:
    finished = [s for s in run.steps.values() if s.status == "succeeded"]
    return finished[-1].output if finished else None


def _describe(exc: Exception, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s (limits.node_timeout)"
    if isinstance(exc, ValidationError):
        return problems(exc)
    assert isinstance(exc, UserFacingError)
    return exc.text
