"""Scheduled runs: one tick a minute, whichever worker gets it (arq runs a cron job once).

Each scheduled time becomes at most one run (a unique key on the workflow and the time),
so overlapping ticks or several schedulers never fire twice. Times missed while nothing was
running are coalesced into one run if the newest is recent enough, and skipped otherwise
(the misfire policy). A small random delay spreads runs due at the same minute.
"""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert

from bot.core import Core
from bot.storage.models import Workflow, WorkflowRun, WorkflowVersion
from workflows.inputs import resolve
from workflows.runs import queue_run
from workflows.spec import Schedule
from workflows.store import spec_of

log = logging.getLogger(__name__)


def due_times(schedule: Schedule, after: datetime, until: datetime) -> list[datetime]:
    """The times ``schedule`` fires in (after, until], in UTC."""
    zone = ZoneInfo(schedule.timezone)
    times = croniter(schedule.cron, after.astimezone(zone))
    found = []
    while (moment := times.get_next(datetime)) <= until:
        found.append(moment.astimezone(UTC))
    return found


async def tick(core: Core, now: datetime | None = None) -> list[int]:
    """Start the runs that are due; returns their ids."""
    now = now or datetime.now(UTC)
    started = []
    for workflow, version in await _scheduled(core):
        run_id = await _fire(core, workflow, version, now)
        if run_id is not None:
            jitter = random.uniform(0, core.settings.schedule_jitter)
            await queue_run(core, run_id, defer_until=now + timedelta(seconds=jitter))
            started.append(run_id)
    return started


async def _scheduled(core: Core) -> list[tuple[Workflow, WorkflowVersion]]:
    async with core.sessions() as session:
        rows = await session.execute(
            select(Workflow, WorkflowVersion)
            .join(
                WorkflowVersion,
                (WorkflowVersion.workflow_id == Workflow.id)
                & (WorkflowVersion.version == Workflow.version),
            )
            .where(Workflow.enabled, WorkflowVersion.spec["schedule"].isnot(None))
        )
        return [(row.Workflow, row.WorkflowVersion) for row in rows]


async def _fire(
    core: Core, workflow: Workflow, version: WorkflowVersion, now: datetime
) -> int | None:
    spec = spec_of(version.source)
    assert spec.schedule is not None
    since = workflow.last_scheduled_at or version.created_at
    times = due_times(spec.schedule, since, now)
    if not times:
        return None
    newest = times[-1]
    async with core.sessions.begin() as session:
        await session.execute(
            update(Workflow).where(Workflow.id == workflow.id).values(last_scheduled_at=newest)
        )
        late = (now - newest).total_seconds()
        if late > core.settings.schedule_misfire_grace:
            log.warning(
                "%s: skipped %d scheduled run(s), the newest %s was %.0f s ago",
                workflow.name,
                len(times),
                newest.isoformat(),
                late,
            )
            return None
        return await session.scalar(
            insert(WorkflowRun)
            .values(
                workflow_id=workflow.id,
                version_id=version.id,
                status="queued",
                trigger="schedule",
                scheduled_for=newest,
                inputs=resolve(spec, {}),
            )
            .on_conflict_do_nothing(index_elements=["workflow_id", "scheduled_for"])
            .returning(WorkflowRun.id)
        )
