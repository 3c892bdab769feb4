"""Starting, advancing, cancelling and retrying runs, and what a person is told about them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import column, delete, func, literal_column, select, table, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot import locks, outbox, people, replies, usage
from bot.channels import MAX_FILE
from bot.conversation import conversation_for
from bot.core import Core
from bot.locks import HANDLING, conversation_lock
from bot.messages import Attachment, Button, ConversationRef, OutgoingMessage
from bot.people import Viewer
from bot.storage.models import (
    Message,
    Workflow,
    WorkflowRun,
    WorkflowStep,
)
from bot.turns import Reply, Turn
from workflows import store
from workflows.engine import Engine, run_folder
from workflows.errors import NodeFailed, WorkflowError
from workflows.inputs import resolve
from workflows.nodes.base import Child, NodeResult
from workflows.nodes.compose import child_failed
from workflows.nodes.files import read_attachment
from workflows.spec import WorkflowSpec
from workflows.state import FINAL_RUN, RunState

RUN_WORKFLOW = "run_workflow"
BUSY_RETRY = timedelta(seconds=2)  # when another worker is advancing the run
MAX_ATTACHED = 10  # files of a run attached to its last message


async def queue_run(core: Core, run_id: int, *, defer_until: datetime | None = None) -> bool:
    """A run's first job (started, scheduled, or found without one by the sweep); False when
    that job is already queued."""
    return await core.queue.enqueue(
        RUN_WORKFLOW, run_id, job_id=run_job_id(run_id), defer_until=defer_until
    )


def run_job_id(run_id: int, turn: int | str = 0) -> str:
    return f"run:{run_id}:{turn}"


async def start(
    core: Core,
    name: str,
    given: dict[str, Any],
    *,
    trigger: str,
    ref: ConversationRef | None = None,
    conversation_id: int | None = None,
    user_id: int | None = None,
    idempotency_key: str | None = None,
) -> tuple[int, str]:
    """Create a run of the current version and queue it; returns (run id, workflow name).
    A run already started with the same ``idempotency_key`` is returned instead."""
    for fresh in (False, True):  # the version read last time, then (if it changed) anew
        current = await store.current(core.autocommit, name, fresh=fresh)
        if current is None:
            async with core.sessions() as session:
                raise await store.unknown(session, name)
        if not current.enabled:
            raise WorkflowError(f"The workflow '{current.name}' is turned off.")
        spec = store.spec_of(current.source)
        if trigger == "command":
            async with core.sessions() as session:
                await check_allowed(session, spec, user_id, ref)
        run_id = await store.create_run(
            core.autocommit,
            current,
            inputs=resolve(spec, given),
            trigger=trigger,
            ref=ref,
            conversation_id=conversation_id,
            user_id=user_id,
            idempotency_key=idempotency_key,
        )
        if run_id is not None:
            await queue_run(core, run_id)
            return run_id, current.name
        if idempotency_key is not None:
            earlier = await store.keyed_run(core.autocommit, current.workflow_id, idempotency_key)
            if earlier is not None:
                return earlier, current.name
    raise WorkflowError(f"The workflow '{name}' changed while the run was starting: try again.")


async def check_allowed(
    session: AsyncSession, spec: WorkflowSpec, user_id: int | None, ref: ConversationRef | None
) -> None:
    """A workflow limited to some users, roles, channels, chats or workspaces refuses
    everyone else."""
    if (limits := await people.outside(session, spec.allow, user_id, ref)) is not None:
        raise WorkflowError(f"You may not run {spec.name}: it is limited to {limits}.")


def engine(core: Core, kept: store.PostgresRunStore | None = None) -> Engine:
    async def wake(run: RunState, when: datetime) -> None:
        await core.queue.enqueue(
            RUN_WORKFLOW, run.id, job_id=run_job_id(run.id, int(when.timestamp())), defer_until=when
        )

    async def post(
        run: RunState,
        node_id: str,
        text: str,
        files: tuple[Attachment, ...],
        target: ConversationRef | None,
        buttons: tuple[Button, ...] = (),
    ) -> None:
        if target is None and run.ref is None:
            raise WorkflowError(replies.nowhere_to_post())
        await _post(core, run, f"run:{run.id}:{node_id}", text, files, target, buttons)

    async def progress(run: RunState, text: str) -> None:
        channel = core.channels.status_line(run.ref.channel) if run.ref else None
        if channel is not None and run.ref is not None:
            await channel.status(run.ref, f"run:{run.id}", text)

    async def subflow(run: RunState, node_id: str, child: Child) -> NodeResult:
        return await start_child(core, run, node_id, child)

    return Engine(
        core,
        kept or store.PostgresRunStore(core.autocommit),
        post,
        wake,
        workspace_root(core),
        core.sandbox,
        progress=progress,
        subflow=subflow,
    )


def workspace_root(core: Core) -> Path:
    return core.settings.home / "runs"


async def advance(core: Core, run_id: int) -> RunState:
    """Run as far as the run can go, then tell the conversation how it ended.

    One worker at a time advances a run (a resumed run may also be queued by the sweep, a
    timer and an answer may come together). A job that finds it taken comes back shortly
    rather than being dropped: the holder may be parking the run just as this job's reason
    to resume it arrived."""
    kept = store.PostgresRunStore(core.autocommit)
    async with kept.claim(run_id) as claimed:
        if claimed is None:
            when = datetime.now(UTC) + BUSY_RETRY
            job_id = run_job_id(run_id, f"busy{int(when.timestamp())}")
            await core.queue.enqueue(RUN_WORKFLOW, run_id, job_id=job_id, defer_until=when)
            return await kept.load(run_id)
        run = await engine(core, kept).proceed(claimed)
    if run.status in FINAL_RUN and run.parent_run_id is not None:
        await _hand_back(core, run.id)  # a sub-workflow: its parent takes the result
    elif run.status in FINAL_RUN:
        await _announce(core, run)
    elif run.status == "waiting":
        await _collect(core, run)
    return run


async def _post(
    core: Core,
    run: RunState,
    key: str,
    text: str,
    files: tuple[Attachment, ...] = (),
    target: ConversationRef | None = None,
    buttons: tuple[Button, ...] = (),
) -> None:
    ref = target or run.ref
    if ref is None:
        return  # started from the shell, a schedule or a webhook: nobody to tell in a chat
    conversation_id = (
        run.conversation_id
        if ref == run.ref and run.conversation_id
        else await conversation_for(core, ref)
    )
    out = OutgoingMessage(ref, text, files, idempotency_key=key, buttons=buttons)
    # After the turn being answered there (the one that started this run, say): its reply
    # ("Started run #3") is written before what the run says.
    async with conversation_lock(core.engine, HANDLING, conversation_id):
        await outbox.post(core, conversation_id, out)


async def _announce(core: Core, run: RunState) -> None:
    """The run's last word in its chat: its output (unless it replied itself), or why it failed."""
    if run.status == "failed":
        await _post(core, run, f"run:{run.id}:failed", failure_text(run))
        return
    if run.status == "succeeded" and not _nodes(run, "succeeded", ("reply",)):
        files = produced_files(run_folder(workspace_root(core), run.id))
        await _post(core, run, f"run:{run.id}:done", done_text(run), files)


def last_message_key(run: RunState) -> str | None:
    """The key of the last message a run that has stopped (ended, or parked waiting for a
    person) sends to its conversation; None when it sends none (cancelled, or on a timer)."""
    if run.status == "failed":
        return f"run:{run.id}:failed"
    if run.status == "succeeded":
        replied = _nodes(run, "succeeded", ("reply",))
        return f"run:{run.id}:{replied[-1] if replied else 'done'}"
    asking = _nodes(run, "waiting", ("approval", "input")) if run.status == "waiting" else []
    return f"run:{run.id}:{asking[-1]}" if asking else None


def _nodes(run: RunState, status: str, types: tuple[str, ...]) -> list[str]:
    """Nodes of these types whose step has this status, in the order they finished."""
    found = [
        step
        for node_id, step in run.steps.items()
        if step.status == status and node_id in run.spec.nodes
        if run.spec.nodes[node_id].type in types
    ]
    found.sort(key=lambda step: step.finished_at.timestamp() if step.finished_at else 0.0)
    return [step.node_id for step in found]


async def started_by(core: Core, message_id: int) -> list[int]:
    """The runs a message's command started, oldest first: those created in its conversation
    while it was being answered (a conversation's turns are answered one at a time)."""
    async with core.sessions() as session:
        found = await session.scalars(
            select(WorkflowRun.id)
            .join(Message, Message.conversation_id == WorkflowRun.conversation_id)
            .where(
                Message.id == message_id,
                WorkflowRun.trigger == "command",
                WorkflowRun.created_at.between(Message.created_at, Message.handled_at),
            )
            .order_by(WorkflowRun.id)
        )
        return list(found)


def produced_files(workspace: Path) -> tuple[Attachment, ...]:
    """The files a run left in its folder, attached to its last message (the first
    ``MAX_ATTACHED`` by name; larger than platforms take are left out)."""
    if not workspace.is_dir():
        return ()
    paths = sorted(p for p in workspace.rglob("*") if p.is_file() and p.stat().st_size <= MAX_FILE)
    return tuple(
        read_attachment(workspace, str(path.relative_to(workspace)))
        for path in paths[:MAX_ATTACHED]
    )


def failure_text(run: RunState) -> str:
    where = f" at node '{run.failed_node}'" if run.failed_node else ""
    return (
        f"Run #{run.id} of {run.workflow} failed{where}: {run.error}\n"
        f"Fix the cause, then /run retry {run.id} to continue from there."
    )


def done_text(run: RunState) -> str:
    output = run.output if isinstance(run.output, str) else _format(run.output)
    return f"Run #{run.id} of {run.workflow} finished.\n{output}".rstrip()


def _format(value: Any) -> str:
    import json

    return "" if value is None else json.dumps(value, indent=2, ensure_ascii=False)


async def cancel(core: Core, run_id: int) -> str:
    async with core.sessions.begin() as session:
        row = await session.get(WorkflowRun, run_id, with_for_update=True)
        if row is None:
            raise WorkflowError(f"There is no run #{run_id}.")
        if row.status in FINAL_RUN:
            return f"Run #{run_id} already {row.status}."
        row.status = "cancelled"
        await session.execute(  # and the sub-workflows it waits for
            update(WorkflowRun)
            .where(WorkflowRun.parent_run_id == run_id, WorkflowRun.status.not_in(FINAL_RUN))
            .values(status="cancelled")
        )
    return f"Cancelled run #{run_id}. Nodes already running finish; nothing after them starts."


async def retry(core: Core, run_id: int) -> str:
    """Resume a failed run from the node that failed; finished nodes are kept."""
    async with core.sessions.begin() as session:
        row = await session.get(WorkflowRun, run_id, with_for_update=True)
        if row is None:
            raise WorkflowError(f"There is no run #{run_id}.")
        if row.status != "failed":
            raise WorkflowError(f"Run #{run_id} is {row.status}; only a failed run can be retried.")
        await session.execute(
            delete(WorkflowStep).where(
                WorkflowStep.run_id == run_id, WorkflowStep.status == "failed"
            )
        )
        failed_node = row.failed_node
        row.status, row.error, row.failed_node, row.finished_at = "running", None, None, None
        turn = row.steps + 1
    await core.queue.enqueue(RUN_WORKFLOW, run_id, job_id=run_job_id(run_id, turn))
    where = f" from node '{failed_node}'" if failed_node else ""
    return f"Retrying run #{run_id}{where}."


async def describe(core: Core, run_id: int, *, detail: bool = False) -> str:
    """The run as a person reads it: each node's status, timing, tokens and cost (and with
    ``detail``, what went in and came out)."""
    run = await store.PostgresRunStore(core.autocommit).load(run_id)
    async with core.sessions() as session:
        unfinished = (await usage.unfinished_by_run(session, [run.id])).get(run.id, 0)
    lines = [
        f"Run #{run.id} of {run.workflow} (version {run.version}): {run.status}",
        _usage_line(run) + usage.unfinished_note(unfinished, running=run.status == "running"),
    ]
    for node_id in run.spec.nodes:
        step = run.steps.get(node_id)
        lines.append("  " + (_step_line(node_id, step) if step else f"{node_id}: pending"))
        if detail and step is not None:
            lines += [f"      in:  {_short(step.input)}", f"      out: {_short(step.output)}"]
    if run.status == "failed":
        lines.append(failure_text(run))
    return "\n".join(lines)


def _step_line(node_id: str, step: Any) -> str:
    took = ""
    if step.started_at and step.finished_at:
        took = f", {(step.finished_at - step.started_at).total_seconds() * 1000:.0f} ms"
    tokens = step.prompt_tokens + step.completion_tokens
    usage = f", {tokens} tokens, {replies.cost(step.cost_usd)}" if tokens else ""
    error = f" — {step.error}" if step.error else ""
    return f"{node_id}: {step.status}{took}{usage}{error}"


def _usage_line(run: RunState) -> str:
    tokens = run.prompt_tokens + run.completion_tokens
    if not tokens:
        return "No model calls."
    return f"Tokens: {tokens:,}, cost: {replies.cost(run.cost_usd)}"


def _short(value: Any, limit: int = 300) -> str:
    return replies.clip(_format(value) if not isinstance(value, str) else value, limit)


async def recent(core: Core, viewer: Viewer, limit: int = 10) -> list[str]:
    """The latest runs ``viewer`` may see: all for the owner and admins, else their own and
    those started in the conversation they ask from."""
    async with core.sessions() as session:
        rows = (
            await session.execute(
                select(WorkflowRun.id, Workflow.name, WorkflowRun.status, WorkflowRun.created_at)
                .join(Workflow, Workflow.id == WorkflowRun.workflow_id)
                .where(_visible(viewer))
                .order_by(WorkflowRun.id.desc())
                .limit(limit)
            )
        ).all()
        unfinished = await usage.unfinished_by_run(session, [r.id for r in rows])
    return [
        f"#{r.id} {r.name}: {r.status} ({r.created_at:%Y-%m-%d %H:%M})"
        + usage.unfinished_note(unfinished.get(r.id, 0), running=r.status == "running")
        for r in rows
    ]


# A sub-workflow's run that ended while its parent still waits for it: the hand-back was lost.
_PARENT_WAITS = (
    select(WorkflowStep.id)
    .where(
        WorkflowStep.run_id == WorkflowRun.parent_run_id,
        WorkflowStep.node_id == WorkflowRun.parent_node,
        WorkflowStep.status == "waiting",
    )
    .exists()
)


async def sweep(core: Core) -> int:
    """Queue runs whose job was lost, and waiting runs whose timer is due. A run a worker is
    advancing right now (it holds the run's lock) is left alone."""
    stale = datetime.now(UTC) - timedelta(seconds=30)
    held = table("pg_locks", column("locktype"), column("classid"), column("objid"))
    advancing = (
        select(held.c.objid)
        .where(
            held.c.locktype == "advisory",
            held.c.classid == literal_column(str(locks.ADVANCING)),
            literal_column("objid::bigint") == store.lock_key(WorkflowRun.id),
        )
        .exists()
    )
    async with core.sessions() as session:
        ids = (
            await session.scalars(
                select(WorkflowRun.id).where(
                    (
                        WorkflowRun.status.in_(("queued", "running"))
                        & (WorkflowRun.created_at < stale)
                        & ~advancing
                    )
                    | (
                        (WorkflowRun.status == "waiting")
                        & (WorkflowRun.wait_until < datetime.now(UTC))
                    )
                    | (
                        WorkflowRun.status.in_(FINAL_RUN)
                        & (WorkflowRun.finished_at < stale)
                        & _PARENT_WAITS
                    )
                ),
            )
        ).all()
    queued = [await queue_run(core, run_id) for run_id in ids]
    return sum(queued)


async def check_theirs(core: Core, viewer: Viewer, run_id: int, doing: str) -> None:
    """Refuse ``viewer`` a run that is not theirs to see, in the same words whether it
    exists or not, and note the refusal in the audit log."""
    if viewer.staff:
        return
    async with core.sessions() as session:
        if await _sees(session, viewer, run_id):
            return
    await _refuse(core, viewer, run_id, doing)


async def _refuse(core: Core, viewer: Viewer, run_id: int, doing: str) -> NoReturn:
    await people.refuse(core, viewer.actor, f"run:{run_id}", f"{doing} of a run not theirs")
    raise WorkflowError(replies.not_your_run(run_id))


def _visible(viewer: Viewer) -> Any:
    return viewer.sees(WorkflowRun.started_by, WorkflowRun.conversation_id)


async def _sees(session: AsyncSession, viewer: Viewer, run_id: int) -> bool:
    found = await session.scalar(
        select(WorkflowRun.id).where(WorkflowRun.id == run_id, _visible(viewer))
    )
    return found is not None


async def decide(core: Core, run_id: int, *, approved: bool, viewer: Viewer, note: str = "") -> str:
    """/approve or /reject: settle the run's waiting approval and let it go on.

    When the approval names its approvers, only they decide; else whoever may see the run
    (its starter, its conversation, the owner and admins)."""
    async with core.sessions.begin() as session:
        step = await _waiting_step(
            session, "approval", WorkflowStep.run_id == run_id, skip_locked=False
        )
        roles, accounts = await people.who(session, viewer.user_id)
        allowed = set((step.output or {}).get("approvers") or ()) if step else set()
        named = bool(allowed & (accounts | {f"role:{role}" for role in roles}))
        theirs = named or await _sees(session, viewer, run_id)
        settled = _decidable(step, run_id, allowed, named) if theirs else None
        if settled is not None:
            by = sorted(accounts)[0] if accounts else "someone"
            await _settle(session, settled, {"approved": approved, "by": by, "note": note})
    if settled is None:
        await _refuse(core, viewer, run_id, "/approve" if approved else "/reject")
    await _resume(core, settled)
    verdict = "Approved" if approved else "Rejected"
    return f"{verdict} run #{run_id}; it goes on now."


def _decidable(
    step: WorkflowStep | None, run_id: int, allowed: set[str], named: bool
) -> WorkflowStep:
    if step is None:
        raise WorkflowError(f"Run #{run_id} is not waiting for an approval.")
    if allowed and not named:
        raise WorkflowError(f"Only {', '.join(sorted(allowed))} may decide on run #{run_id}.")
    return step


async def take_answer(core: Core, turn: Turn) -> Reply | None:
    """A message in a conversation where a run waits for an answer is that answer."""
    async with core.sessions.begin() as session:
        here = WorkflowStep.output["conversation_id"].as_integer() == turn.conversation_id
        step = await _waiting_step(session, "input", here, skip_locked=True)
        if step is None:
            return None
        _, accounts = await people.who(session, turn.user_id)
        allowed = set((step.output or {}).get("from") or ())
        if allowed and not allowed & accounts:
            return None  # not the person asked: the message goes to the persona as usual
        by = sorted(accounts)[0] if accounts else None
        await _settle(session, step, {"answer": turn.text, "by": by})
    await _resume(core, step)
    return Reply(f"Thanks, run #{step.run_id} goes on with your answer.")


async def _waiting_step(
    session: AsyncSession, kind: str, where: Any, *, skip_locked: bool
) -> WorkflowStep | None:
    """The oldest step of a waiting run that waits for a person (an approval, an answer)."""
    return await session.scalar(
        select(WorkflowStep)
        .join(WorkflowRun, WorkflowRun.id == WorkflowStep.run_id)
        .where(
            WorkflowRun.status == "waiting",
            WorkflowStep.status == "waiting",
            WorkflowStep.output["kind"].astext == kind,
            where,
        )
        .order_by(WorkflowStep.id)
        .limit(1)
        .with_for_update(skip_locked=skip_locked)
    )


async def _settle(
    session: AsyncSession, step: WorkflowStep, output: Any, *, error: str | None = None
) -> None:
    """The waiting step is done (failed, with ``error``), and its run goes on."""
    step.output, step.error = output, error
    step.status, step.finished_at = "failed" if error else "succeeded", datetime.now(UTC)
    await session.execute(
        update(WorkflowRun).where(WorkflowRun.id == step.run_id).values(status="running")
    )


async def _resume(core: Core, step: WorkflowStep) -> None:
    """After the commit: a job that continues the run past the settled step."""
    await core.queue.enqueue(
        RUN_WORKFLOW, step.run_id, job_id=f"{run_job_id(step.run_id)}:step{step.id}"
    )


# --- sub-workflows -------------------------------------------------------------------------


async def start_child(core: Core, parent: RunState, node_id: str, child: Child) -> NodeResult:
    """A `workflow` node's child: a run of its own, linked to the node, which the node waits
    for (its run parks, releasing the worker, until the child ends). The node run again
    (after a crash, or by /run retry) finds the child it started: it waits for it, takes its
    output, or resumes it from its failed node."""
    async with core.sessions() as session:
        found = await session.scalar(
            select(WorkflowRun).where(
                WorkflowRun.parent_run_id == parent.id, WorkflowRun.parent_node == node_id
            )
        )
        started_by = await session.scalar(
            select(WorkflowRun.started_by).where(WorkflowRun.id == parent.id)
        )
    if found is None:
        return await _new_child(core, parent, node_id, child, started_by)
    if found.status == "succeeded":
        return _child_result(found)
    if found.status == "cancelled":
        raise NodeFailed(child_failed(child.current.name, "was cancelled", None, None))
    if found.status == "failed":
        await retry(core, found.id)
    return _waiting_for(found.id)


async def _new_child(
    core: Core, parent: RunState, node_id: str, child: Child, started_by: int | None
) -> NodeResult:
    child_id = await store.create_run(
        core.autocommit,
        child.current,
        inputs=child.inputs,
        trigger="workflow",
        ref=parent.ref,
        conversation_id=parent.conversation_id,
        user_id=started_by,
        parent=(parent.id, node_id),
        depth=child.depth,
    )
    if child_id is None:
        name = child.current.name
        raise NodeFailed(f"the workflow '{name}' changed as its run started", retryable=True)
    await queue_run(core, child_id)
    return _waiting_for(child_id)


def _waiting_for(child_id: int) -> NodeResult:
    return NodeResult(output={"kind": "workflow", "run_id": child_id}, waiting_for="workflow")


def _child_result(child: WorkflowRun) -> NodeResult:
    return NodeResult(
        output=child.output,
        prompt_tokens=child.prompt_tokens,
        completion_tokens=child.completion_tokens,
        cost_usd=child.cost_usd,
    )


async def _collect(core: Core, run: RunState) -> None:
    """A run that has just parked takes the result of any child that ended before it did."""
    for step in run.steps.values():
        output = step.output if step.status == "waiting" else None
        if isinstance(output, dict) and output.get("kind") == "workflow":
            await _hand_back(core, int(output["run_id"]))


async def _hand_back(core: Core, child_id: int) -> None:
    """A child run has ended: the parent parked on the node that waits for it takes its
    output (or fails with its error) and goes on. A parent not parked yet looks for itself
    as it parks (_collect), so between the two the result is never missed."""
    async with core.sessions.begin() as session:
        found = (
            await session.execute(
                select(WorkflowRun, Workflow.name)
                .join(Workflow, Workflow.id == WorkflowRun.workflow_id)
                .where(WorkflowRun.id == child_id, WorkflowRun.status.in_(FINAL_RUN))
            )
        ).one_or_none()
        if found is None or found.WorkflowRun.parent_run_id is None:
            return
        child, name = found.WorkflowRun, found.name
        at = (WorkflowStep.run_id == child.parent_run_id) & (
            WorkflowStep.node_id == child.parent_node
        )
        step = await _waiting_step(session, "workflow", at, skip_locked=False)
        if step is None:
            return  # not parked yet, or taken before
        if child.status != "succeeded":
            error = child_failed(name, child.status, child.failed_node, child.error)
            await _settle(session, step, step.output, error=error)
        else:
            await _settle(session, step, child.output)
            await _add_usage(session, step, child)
    await _resume(core, step)


async def _add_usage(session: AsyncSession, step: WorkflowStep, child: WorkflowRun) -> None:
    """The child's tokens and cost: its parent node's, and so its parent run's."""
    step.prompt_tokens, step.completion_tokens = child.prompt_tokens, child.completion_tokens
    step.cost_usd = child.cost_usd
    cost: Any = WorkflowRun.cost_usd
    if child.cost_usd is not None:
        cost = func.coalesce(WorkflowRun.cost_usd, 0.0) + child.cost_usd
    await session.execute(
        update(WorkflowRun)
        .where(WorkflowRun.id == step.run_id)
        .values(
            prompt_tokens=WorkflowRun.prompt_tokens + child.prompt_tokens,
            completion_tokens=WorkflowRun.completion_tokens + child.completion_tokens,
            cost_usd=cost,
        )
    )
