"""Workflows in Postgres: every saved change a new version, and runs kept step by step."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import functools
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Integer,
    String,
    Text,
    bindparam,
    cast,
    column,
    func,
    literal,
    literal_column,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from bot import locks
from bot.messages import ConversationRef
from bot.names import closest
from bot.storage.models import Workflow, WorkflowRun, WorkflowStep, WorkflowVersion
from workflows.errors import WorkflowError
from workflows.spec import WorkflowSpec
from workflows.state import RunState, StepState
from workflows.validate import parse, read, read_file


@dataclass(frozen=True)
class Saved:
    name: str
    version: int
    changed: bool


async def save(session: AsyncSession, source: str, *, origin: str) -> Saved:
    """Validate ``source`` and store it as the workflow's next version (unless unchanged)."""
    spec, document = read(source, source=origin)
    workflow = await session.scalar(select(Workflow).where(Workflow.name == spec.name))
    if workflow is None:
        workflow = Workflow(name=spec.name, version=0)
        session.add(workflow)
    else:
        current = await _version(session, workflow.id, workflow.version)
        if current is not None and current.spec == document:
            return Saved(spec.name, workflow.version, changed=False)
    await _claim_command(session, spec, workflow)
    workflow.version += 1
    workflow.command, workflow.updated_at = spec.command, datetime.now(UTC)
    await session.flush()
    session.add(
        WorkflowVersion(
            workflow_id=workflow.id,
            version=workflow.version,
            source=source,
            spec=document,
            origin=origin,
        )
    )
    return Saved(spec.name, workflow.version, changed=True)


async def _claim_command(session: AsyncSession, spec: WorkflowSpec, workflow: Workflow) -> None:
    if spec.command is None:
        return
    owner = await session.scalar(select(Workflow.name).where(Workflow.command == spec.command))
    if owner is not None and owner != spec.name:
        raise WorkflowError(f"the command {spec.command} already starts the workflow '{owner}'")


async def _version(session: AsyncSession, workflow_id: int, version: int) -> WorkflowVersion | None:
    return await session.scalar(
        select(WorkflowVersion).where(
            WorkflowVersion.workflow_id == workflow_id, WorkflowVersion.version == version
        )
    )


async def sync(session: AsyncSession, config_dir: Path) -> tuple[list[str], list[str]]:
    """Load workflow files from ``config_dir/workflows``; returns (saved, problems)."""
    folder = config_dir / "workflows"
    saved, problems = [], []
    for path in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
        try:
            result = await save(session, read_file(path), origin=str(path))
        except WorkflowError as exc:
            problems.append(exc.text)
            continue
        saved.append(result.name)
    return saved, problems


async def unknown(session: AsyncSession, name: str) -> WorkflowError:
    """The refusal for a name no workflow has, naming the closest one."""
    known = list((await session.scalars(select(Workflow.name).order_by(Workflow.name))).all())
    close = closest(name, known)
    hint = f" Did you mean {close}?" if close else ""
    listing = ", ".join(known) or "none yet (see /templates)"
    return WorkflowError(f"There is no workflow called '{name}'.{hint} Workflows: {listing}.")


async def find(session: AsyncSession, name: str) -> tuple[Workflow, WorkflowVersion]:
    """The workflow called ``name`` (or started by ``/name``) and its current version."""
    workflow = await session.scalar(
        select(Workflow).where((Workflow.name == name) | (Workflow.command == f"/{name}"))
    )
    if workflow is None:
        raise await unknown(session, name)
    version = await _version(session, workflow.id, workflow.version)
    assert version is not None
    return workflow, version


@dataclass(frozen=True)
class Totals:
    name: str
    command: str | None
    version: int
    runs: int
    tokens: int
    cost_usd: float | None


async def totals(session: AsyncSession) -> list[Totals]:
    """Every workflow with its runs, tokens and cost summed over all its runs."""
    rows = await session.execute(
        select(
            Workflow.name,
            Workflow.command,
            Workflow.version,
            func.count(WorkflowRun.id),
            func.coalesce(func.sum(WorkflowRun.prompt_tokens + WorkflowRun.completion_tokens), 0),
            func.sum(WorkflowRun.cost_usd),
        )
        .outerjoin(WorkflowRun, WorkflowRun.workflow_id == Workflow.id)
        .group_by(Workflow.id)
        .order_by(Workflow.name)
    )
    return [Totals(*row) for row in rows]


async def rotate_webhook_secret(session: AsyncSession, name: str) -> str:
    """A new webhook secret for ``name`` (the old one stops working); shown only now."""
    from workflows.webhook import new_secret

    workflow, _ = await find(session, name)
    secret, hashed = new_secret()
    workflow.webhook_secret_hash = hashed
    return secret


async def history(session: AsyncSession, name: str) -> Sequence[WorkflowVersion]:
    workflow, _ = await find(session, name)
    return (
        await session.scalars(
            select(WorkflowVersion)
            .where(WorkflowVersion.workflow_id == workflow.id)
            .order_by(WorkflowVersion.version)
        )
    ).all()


async def diff(session: AsyncSession, name: str, old: int, new: int) -> str:
    versions = {v.version: v for v in await history(session, name)}
    missing = [str(n) for n in (old, new) if n not in versions]
    if missing:
        raise WorkflowError(
            f"{name} has no version {', '.join(missing)} (it has 1 to {max(versions)})"
        )
    lines = difflib.unified_diff(
        versions[old].source.splitlines(keepends=True),
        versions[new].source.splitlines(keepends=True),
        fromfile=f"{name} v{old}",
        tofile=f"{name} v{new}",
    )
    return "".join(lines) or f"{name} v{old} and v{new} are the same.\n"


# --- runs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Current:
    """A workflow's current version, as a run needs it."""

    workflow_id: int
    version_id: int
    name: str
    enabled: bool
    source: str


# Workflows as last read, by the name they were asked for: starting a run is a hot path
# (schedules, webhooks, bursts of commands). A run is created only if the workflow is still
# enabled and at that version, with that text (see create_run), so a stale entry costs a
# re-read, never a run of an old version.
_KNOWN: dict[str, Current] = {}


async def current(engine: AsyncEngine, name: str, *, fresh: bool = False) -> Current | None:
    """The workflow called ``name`` (or started by ``/name``): as last read unless ``fresh``,
    else in one query (pass an autocommit engine: Core.autocommit)."""
    if not fresh and (known := _KNOWN.get(name)) is not None:
        return known
    async with engine.connect() as conn:
        row = (await conn.execute(_CURRENT, {"name": name, "command": f"/{name}"})).first()
    found = Current(*row) if row is not None else None
    if found is not None and found.enabled:
        if len(_KNOWN) > 1024:
            _KNOWN.clear()
        _KNOWN[name] = found
    else:
        _KNOWN.pop(name, None)
    return found


_CURRENT = (
    select(
        Workflow.id,
        WorkflowVersion.id,
        Workflow.name,
        Workflow.enabled,
        WorkflowVersion.source,
    )
    .join(
        WorkflowVersion,
        (WorkflowVersion.workflow_id == Workflow.id)
        & (WorkflowVersion.version == Workflow.version),
    )
    .where((Workflow.name == bindparam("name")) | (Workflow.command == bindparam("command")))
)


async def create_run(
    engine: AsyncEngine,
    workflow: Current,
    *,
    inputs: dict[str, Any],
    trigger: str,
    ref: ConversationRef | None,
    conversation_id: int | None,
    user_id: int | None,
    idempotency_key: str | None = None,
    parent: tuple[int, str] | None = None,
    depth: int = 0,
) -> int | None:
    """A queued run of ``workflow`` (with ``parent``, the run and node it is a sub-workflow
    of); None when the workflow has changed (a new version, or turned off) since it was read,
    or when ``idempotency_key`` started a run already."""
    parent_run_id, parent_node = parent or (None, None)
    values = {
        "workflow_id": workflow.workflow_id,
        "version_id": workflow.version_id,
        "source": workflow.source,
        "trigger": trigger,
        "inputs": inputs,
        "ref": ref.to_dict() if ref else None,
        "conversation_id": conversation_id,
        "started_by": user_id,
        "idempotency_key": idempotency_key,
        "parent_run_id": parent_run_id,
        "parent_node": parent_node,
        "depth": depth,
    }
    async with engine.connect() as conn:
        run_id = await conn.scalar(_CREATE_RUN, values)
    return None if run_id is None else int(run_id)


async def keyed_run(engine: AsyncEngine, workflow_id: int, key: str) -> int | None:
    """The run a webhook delivery key started (a delivery that came again, perhaps at the
    same moment as the first)."""
    async with engine.connect() as conn:
        return await conn.scalar(_KEYED_RUN, {"workflow_id": workflow_id, "key": key})


_RUN_VALUES = {
    "workflow_id": BigInteger,
    "version_id": BigInteger,
    "trigger": String,
    "inputs": JSONB,
    "ref": JSONB,
    "conversation_id": BigInteger,
    "started_by": BigInteger,
    "idempotency_key": String,
    "parent_run_id": BigInteger,
    "parent_node": String,
    "depth": Integer,
}
_CREATE_RUN = (
    insert(WorkflowRun)
    .from_select(
        ["status", *_RUN_VALUES],
        select(
            literal("queued", String),
            *(bindparam(name, type_=kind) for name, kind in _RUN_VALUES.items()),
        )
        .select_from(Workflow)
        .join(WorkflowVersion, WorkflowVersion.workflow_id == Workflow.id)
        .where(
            Workflow.id == bindparam("workflow_id"),
            Workflow.enabled,
            WorkflowVersion.version == Workflow.version,
            WorkflowVersion.id == bindparam("version_id"),
            WorkflowVersion.source == bindparam("source"),  # ids restart when a database does
        ),
    )
    .on_conflict_do_nothing(index_elements=["workflow_id", "idempotency_key"])
    .returning(WorkflowRun.id)
)
_KEYED_RUN = select(WorkflowRun.id).where(
    WorkflowRun.workflow_id == bindparam("workflow_id"),
    WorkflowRun.idempotency_key == bindparam("key"),
)


class PostgresRunStore:
    """Runs and their steps as rows: the durable half of the engine.

    Each write is one statement on an autocommit connection (no BEGIN/COMMIT round trips),
    and at most ``writers`` run at once so a wide fan-out stays within the connection pool.
    Inside ``claim`` every read and write goes through the one connection holding the run.
    """

    def __init__(self, engine: AsyncEngine, *, writers: int = 8) -> None:
        self.engine = engine  # an autocommit engine (Core.autocommit)
        self.writers = asyncio.Semaphore(writers)
        self._held: AsyncConnection | None = None
        self._released = False  # the held run's lock, let go by its last write
        self._one_at_a_time = asyncio.Lock()  # statements on the held connection

    @contextlib.asynccontextmanager
    async def claim(self, run_id: int) -> AsyncIterator[RunState | None]:
        """The run, held by this worker while the block runs; None when another worker holds
        it. The hold is a Postgres advisory lock on a connection of its own, taken by the
        statement that reads the run (no round trip of its own) and gone with the
        connection if the worker dies."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(_CLAIM, {"run_id": run_id, **_ADVANCING})).one_or_none()
            if row is None:
                raise WorkflowError(f"There is no run #{run_id}.")
            if not row.mine:
                yield None
                return
            self._held, self._released = conn, False
            try:
                yield _state(row, spec_of(row.source), [_step(s) for s in row.step_rows])
            finally:
                self._held = None
                if not self._released:
                    await conn.execute(_RELEASE, {"run_id": run_id, **_ADVANCING})

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        if self._held is not None:
            async with self._one_at_a_time:
                yield self._held
        else:
            async with self.writers, self.engine.connect() as conn:
                yield conn

    async def load(self, run_id: int) -> RunState:
        async with self._connection() as conn:
            row = (await conn.execute(_LOAD, {"run_id": run_id})).one_or_none()
        if row is None:
            raise WorkflowError(f"There is no run #{run_id}.")
        return _state(row, spec_of(row.source), [_step(s) for s in row.step_rows])

    async def save_run(self, run: RunState, steps: Sequence[StepState] = ()) -> None:
        values = {name: getattr(run, name) for name in _RUN_FIELDS}
        params = {"run_id": run.id, **values, "steps": run.step_count, "rows": _rows(steps)}
        # A run that ends or parks is let go by the same statement that says so.
        letting_go = self._held is not None and run.status != "running"
        async with self._connection() as conn:
            if letting_go:
                kept = (await conn.execute(_SAVE_RUN_RELEASE, {**params, **_ADVANCING})).first()
                self._released = kept is not None
            else:
                kept = await conn.scalar(_SAVE_RUN, params)
        if kept is None:
            run.status = "cancelled"  # cancelled while this wave ran: the cancel wins

    async def save_steps(self, run: RunState, steps: Sequence[StepState]) -> None:
        async with self._connection() as conn:
            await conn.execute(_SAVE_STEPS, {"run_id": run.id, "rows": _rows(steps)})


def _rows(steps: Sequence[StepState]) -> str:
    """Steps as one JSON array for ``jsonb_to_recordset``: any number of steps is the same
    statement (prepared once), and a step listed twice is written once, as it is last."""
    latest = {step.node_id: step for step in steps}
    return json.dumps(
        [
            {"node_id": step.node_id, **{name: getattr(step, name) for name in _STEP_FIELDS}}
            for step in latest.values()
        ],
        default=_iso,
    )


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")


_RUN_FIELDS = (
    "status",
    "output",
    "error",
    "failed_node",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "wait_until",
    "started_at",
    "finished_at",
)
_STEP_FIELDS = (
    "status",
    "input",
    "output",
    "error",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "wait_until",
    "started_at",
    "finished_at",
)


# The run, its version and its steps in one round trip (steps as a JSON array of rows).
_STEP_ROWS = (
    select(func.coalesce(func.json_agg(literal_column("workflow_steps")), text("'[]'::json")))
    .select_from(WorkflowStep)
    .where(WorkflowStep.run_id == WorkflowRun.id)
    .scalar_subquery()
)
_LOAD = (
    select(
        WorkflowRun.__table__,
        WorkflowVersion.version,
        WorkflowVersion.source,
        Workflow.name,
        type_coerce(_STEP_ROWS, JSON).label("step_rows"),
    )
    .join(WorkflowVersion, WorkflowVersion.id == WorkflowRun.version_id)
    .join(Workflow, Workflow.id == WorkflowRun.workflow_id)
    .where(WorkflowRun.id == bindparam("run_id"))
)
# A run's advisory lock: pg_advisory_lock(ADVANCING, run key), the key being the run id
# folded into the int4 the two-key form takes (pg_locks shows it as objid).
_ADVANCING = {"purpose": locks.ADVANCING}


def lock_key(run_id: Any) -> Any:
    return cast(run_id % 2147483648, Integer)


_CLAIM = _LOAD.add_columns(
    func.pg_try_advisory_lock(bindparam("purpose"), lock_key(WorkflowRun.id)).label("mine")
)
_RELEASE = select(
    func.pg_advisory_unlock(bindparam("purpose"), lock_key(bindparam("run_id", type_=BigInteger)))
)
_TIMES = ("wait_until", "started_at", "finished_at")


def _step(row: dict[str, Any]) -> StepState:
    values = {name: row[name] for name in _STEP_FIELDS}
    for name in _TIMES:
        if values[name] is not None:
            values[name] = datetime.fromisoformat(values[name])
    return StepState(row["node_id"], **values)


# Steps given as a JSON array of rows, inserted or updated in one statement.
_STEP_COLUMNS = [WorkflowStep.__table__.c[name] for name in ("node_id", *_STEP_FIELDS)]
_GIVEN = (
    func.jsonb_to_recordset(cast(bindparam("rows", type_=Text), JSONB))
    .table_valued(*(column(c.name, c.type) for c in _STEP_COLUMNS))
    .render_derived(name="given", with_types=True)
)
_INSERT_STEPS = insert(WorkflowStep).from_select(
    ["run_id", *(c.name for c in _STEP_COLUMNS)],
    select(bindparam("run_id", type_=BigInteger), *(_GIVEN.c[c.name] for c in _STEP_COLUMNS)),
)
_SAVE_STEPS = _INSERT_STEPS.on_conflict_do_update(
    index_elements=["run_id", "node_id"],
    set_={name: _INSERT_STEPS.excluded[name] for name in _STEP_FIELDS},
)
_SAVE_RUN = (
    update(WorkflowRun)
    .where(
        WorkflowRun.id == bindparam("run_id"),
        (WorkflowRun.status != "cancelled") | (bindparam("status") == "cancelled"),
    )
    .values({name: bindparam(name) for name in (*_RUN_FIELDS, "steps")})
    .returning(WorkflowRun.id)
    .add_cte(_SAVE_STEPS.cte("written_steps"))
)
_SAVE_RUN_RELEASE = _SAVE_RUN.returning(
    func.pg_advisory_unlock(bindparam("purpose"), lock_key(WorkflowRun.id))
)


@functools.lru_cache(maxsize=256)  # parsing a document costs more than reading it
def spec_of(source: str) -> WorkflowSpec:
    """A stored version's document. Parsed from its text, not the JSONB copy: JSONB does not
    keep key order, and the order of inputs matters (free text fills the first open one)."""
    return WorkflowSpec.model_validate(parse(source))


def _state(run: Any, spec: WorkflowSpec, steps: list[StepState]) -> RunState:
    """A run from its row (joined with its version's number and its workflow's name)."""
    return RunState(
        id=run.id,
        workflow=run.name,
        version=run.version,
        spec=spec,
        status=run.status,
        inputs=dict(run.inputs),
        mocks=dict(run.mocks or {}),
        ref=ConversationRef.from_dict(run.ref) if run.ref else None,
        conversation_id=run.conversation_id,
        output=run.output,
        error=run.error,
        failed_node=run.failed_node,
        prompt_tokens=run.prompt_tokens,
        completion_tokens=run.completion_tokens,
        cost_usd=run.cost_usd,
        step_count=run.steps,
        depth=run.depth,
        parent_run_id=run.parent_run_id,
        parent_node=run.parent_node,
        wait_until=run.wait_until,
        started_at=run.started_at,
        finished_at=run.finished_at,
        steps={step.node_id: step for step in steps},
    )
