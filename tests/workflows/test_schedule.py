"""Scheduled runs: due times in the workflow's time zone, one run per time, misfires."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from bot.app import Runtime
from bot.storage.models import Workflow, WorkflowRun
from workflows import schedule, store
from workflows.spec import Schedule

EVERY_FIVE = """
name: tick
schedule: {cron: "*/5 * * * *", timezone: UTC}
inputs:
  note: {type: string, default: hello}
nodes:
  say: {type: template, text: "{{ note }}"}
"""


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_due_times_follow_the_time_zone() -> None:
    berlin = Schedule(cron="0 9 * * *", timezone="Europe/Berlin")
    times = schedule.due_times(berlin, at("2026-11-22T00:00"), at("2026-11-24T00:00"))

    assert times == [at("2026-11-22T08:00"), at("2026-11-23T08:00")]  # 09:00 CET


async def _prepare(runtime: Runtime, source: str, last: datetime) -> None:
    async with runtime.core.sessions.begin() as session:
        await store.save(session, source, origin="test")
        await session.execute(update(Workflow).values(last_scheduled_at=last))


async def _scheduled(runtime: Runtime) -> list[tuple[datetime | None, str, dict[str, str]]]:
    async with runtime.core.sessions() as session:
        rows = await session.execute(
            select(WorkflowRun.scheduled_for, WorkflowRun.trigger, WorkflowRun.inputs)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_missed_times_coalesce_into_one_run_and_never_fire_twice(runtime: Runtime) -> None:
    now = at("2026-11-22T10:12")
    await _prepare(runtime, EVERY_FIVE, now - timedelta(minutes=13))

    assert len(await schedule.tick(runtime.core, now)) == 1
    assert await schedule.tick(runtime.core, now) == []
    assert await _scheduled(runtime) == [(at("2026-11-22T10:10"), "schedule", {"note": "hello"})]

    # Even a second scheduler that still thinks 10:10 is due cannot start it again.
    async with runtime.core.sessions.begin() as session:
        await session.execute(update(Workflow).values(last_scheduled_at=now - timedelta(minutes=4)))
    assert await schedule.tick(runtime.core, now) == []


async def test_a_time_missed_too_long_ago_is_skipped(runtime: Runtime) -> None:
    daily = EVERY_FIVE.replace("*/5 * * * *", "0 9 * * *")
    now = at("2026-11-22T15:00")
    await _prepare(runtime, daily, now - timedelta(days=2))

    assert await schedule.tick(runtime.core, now) == []  # 09:00 was six hours ago
    assert await _scheduled(runtime) == []
    assert len(await schedule.tick(runtime.core, at("2026-11-23T09:00:30"))) == 1
