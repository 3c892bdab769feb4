"""Composition root for workers: arq settings, the jobs, and the senders replies go through."""

from __future__ import annotations

from typing import Any

from arq import Worker, cron, func

from adapters.local import local_channels
from bot.core import Core
from bot.outbox import Sender
from bot.queue import deserialize, redis_settings, serialize
from worker import jobs
from worker.liveness import Liveness

HEALTH_CHECK_SECONDS = 5


def health_check_key(queue_name: str) -> str:
    return f"{queue_name}:health-check"


def build_senders(redis: Any) -> dict[str, Sender]:
    """One sender per configured channel; platform adapters join as their issues land."""
    return dict(local_channels(redis))


def build_worker(
    core: Core, redis_url: str, *, burst: bool = False, handle_signals: bool = True
) -> Worker:
    settings = core.settings

    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx["core"] = core
        ctx["senders"] = build_senders(ctx["redis"])
        ctx["liveness"] = Liveness(ctx["redis"], settings.queue_name)
        await ctx["liveness"].start()
        # Anything left over from a crash is picked up at once, not at the next sweep.
        await jobs.sweep(ctx)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        # Stopped before on_startup ran (a signal right at start): nothing to stop.
        if (liveness := ctx.get("liveness")) is not None:
            await liveness.stop()

    async def on_job_start(ctx: dict[str, Any]) -> None:
        ctx["liveness"].job_started(ctx["job_id"])

    async def after_job_end(ctx: dict[str, Any]) -> None:
        ctx["liveness"].job_ended(ctx["job_id"])

    return Worker(
        functions=[
            func(jobs.handle_message, keep_result=0, timeout=settings.job_timeout),
            func(jobs.deliver, keep_result=0, timeout=60),
            # A run persists every step; the job's time limit is the workflow's own limit.
            func(jobs.run_workflow, keep_result=0, timeout=3600),
        ],
        cron_jobs=[
            cron(jobs.sweep, second={0, 30}, keep_result=0, run_at_startup=False),
            # arq gives each minute's tick to one worker only.
            cron(jobs.schedule_tick, second=5, keep_result=0, run_at_startup=True),
        ],
        queue_name=settings.queue_name,
        redis_settings=redis_settings(redis_url),
        job_serializer=serialize,
        job_deserializer=deserialize,
        poll_delay=settings.poll_delay,
        max_jobs=settings.max_jobs,
        # Read no more than can start, so each poll sees priority jobs (deliveries) first.
        queue_read_limit=settings.max_jobs,
        job_timeout=settings.job_timeout,
        keep_result=0,
        health_check_interval=HEALTH_CHECK_SECONDS,
        health_check_key=health_check_key(settings.queue_name),
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        on_job_start=on_job_start,
        after_job_end=after_job_end,
        burst=burst,
        handle_signals=handle_signals,
        log_results=False,
    )
