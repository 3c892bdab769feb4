"""A workflow's own `tests:`, run in memory with mocked node outputs: no model, no network,
no database. Also the dry run's execution plan."""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.config import TemplateBounds
from bot.core import Core
from bot.messages import Attachment, Button, ConversationRef
from bot.sandbox import Sandbox
from workflows.engine import Engine
from workflows.errors import NodeFailed, WorkflowError
from workflows.inputs import resolve
from workflows.nodes.base import Child, NodeResult
from workflows.nodes.compose import child_failed
from workflows.spec import TestCase, WorkflowSpec
from workflows.state import MemoryStore, RunState


@dataclass
class Posted:
    node_id: str
    text: str
    files: tuple[str, ...]
    target: ConversationRef | None


@dataclass
class MemoryRun:
    run: RunState
    posts: list[Posted] = field(default_factory=list)


async def run_in_memory(
    spec: WorkflowSpec,
    inputs: dict[str, Any],
    mocks: dict[str, Any] | None = None,
    *,
    core: Core | None = None,
    workspace: Path | None = None,
    depth: int = 0,
    sandbox: Sandbox | None = None,
) -> MemoryRun:
    """Run ``spec`` to its end (or its first wait) in memory. Templates render in
    ``sandbox``, else the core's, else one made for this run with the default bounds."""
    if sandbox is None and core is not None:
        sandbox = core.sandbox
    async with contextlib.AsyncExitStack() as stack:
        if sandbox is None:
            sandbox = await stack.enter_async_context(Sandbox(TemplateBounds()))
        return await _run_in_memory(spec, inputs, mocks, core, workspace, depth, sandbox)


async def _run_in_memory(
    spec: WorkflowSpec,
    inputs: dict[str, Any],
    mocks: dict[str, Any] | None,
    core: Core | None,
    workspace: Path | None,
    depth: int,
    sandbox: Sandbox,
) -> MemoryRun:
    store = MemoryStore()
    run = store.add(
        RunState(
            id=1,
            workflow=spec.name,
            version=0,
            spec=spec,
            inputs=resolve(spec, inputs),
            depth=depth,
        )
    )
    run.mocks = dict(mocks or {})
    result = MemoryRun(run)

    async def post(
        run: RunState,
        node_id: str,
        text: str,
        files: tuple[Attachment, ...],
        target: Any,
        buttons: tuple[Button, ...],
    ) -> None:
        result.posts.append(Posted(node_id, text, tuple(f.filename for f in files), target))

    async def wake(run: RunState, when: datetime) -> None:
        """Timers are not waited for in memory: the run stays waiting and the caller sees it."""

    async def subflow(parent: RunState, node_id: str, child: Child) -> NodeResult:
        """In memory a sub-workflow runs to its end at once, in the parent's folder."""
        inner = await run_in_memory(
            child.spec,
            child.inputs,
            core=core,
            workspace=engine.workspace(parent),
            depth=child.depth,
            sandbox=sandbox,
        )
        result.posts += inner.posts
        done = inner.run
        if done.status != "succeeded":
            raise NodeFailed(child_failed(done.workflow, done.status, done.failed_node, done.error))
        return NodeResult(
            output=done.output,
            prompt_tokens=done.prompt_tokens,
            completion_tokens=done.completion_tokens,
            cost_usd=done.cost_usd,
        )

    with tempfile.TemporaryDirectory() as scratch:
        engine = Engine(
            core, store, post, wake, workspace or Path(scratch), sandbox, subflow=subflow
        )
        await engine.advance(run.id)
    return result


@dataclass(frozen=True)
class CaseResult:
    name: str
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems


async def run_tests(spec: WorkflowSpec) -> list[CaseResult]:
    async with Sandbox(TemplateBounds()) as sandbox:
        return [await run_case(spec, case, sandbox) for case in spec.tests]


async def run_case(spec: WorkflowSpec, case: TestCase, sandbox: Sandbox) -> CaseResult:
    try:
        outcome = await run_in_memory(spec, case.inputs, case.mocks, sandbox=sandbox)
    except WorkflowError as exc:
        return CaseResult(case.name, (exc.text,))
    return CaseResult(case.name, tuple(_compare(case.expect, outcome.run)))


def _compare(expect: dict[str, Any], run: RunState) -> list[str]:
    problems = []
    status = expect.get("status", "succeeded")
    if run.status != status:
        reason = f" at node '{run.failed_node}': {run.error}" if run.error else ""
        problems.append(f"status: expected {status}, got {run.status}{reason}")
    if "output" in expect and run.output != expect["output"]:
        problems.append(f"output: expected {expect['output']!r}, got {run.output!r}")
    for node_id, wanted in expect.get("nodes", {}).items():
        step = run.steps.get(node_id)
        got = step.output if step else None
        if got != wanted:
            problems.append(f"nodes.{node_id}: expected {wanted!r}, got {got!r}")
    return problems


def plan(spec: WorkflowSpec) -> list[list[str]]:
    """The waves a run goes through: each wave's nodes run together, after the one before."""
    done: set[str] = set()
    waves = []
    while len(done) < len(spec.nodes):
        wave = [n.id for n in spec.nodes.values() if n.id not in done and set(n.needs) <= done]
        if not wave:
            raise WorkflowError("the nodes wait for each other in a cycle")
        waves.append(wave)
        done.update(wave)
    return waves
