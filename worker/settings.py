"""Composition root for workers: arq settings and the jobs (replies go out through the
core's channels, built from the settings like every process's)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, TypeVar

from arq import Retry, Worker, cron, func

from bot.core import Core
from bot.health import describe, outage
from bot.queue import deserialize, redis_settings, serialize
from worker import jobs
from worker.liveness import Liveness

log = logging.getLogger(__name__)

HEALTH_CHECK_SECONDS = 5
OUTAGE_RETRY_MAX_SECONDS = 16  # the longest pause before a job that met an outage runs again
T = TypeVar("T")
Job = Callable[..., Coroutine[Any, Any, T]]


def health_check_key(queue_name: str) -> str:
    return f"{queue_name}:health-check"


def build_worker(
    core: Core, redis_url: str, *, burst: bool = False, handle_signals: bool = True
) -> Worker:
    settings = core.settings

    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx["core"] = core
        # The model gateway loads in a thread while the worker starts, off the event loop.
        ctx["loading_llm"] = asyncio.ensure_future(core.load_llm())
        ctx["senders"] = core.channels
        ctx["liveness"] = Liveness(ctx["redis"], settings.queue_name)
        await ctx["liveness"].start()
        # Anything left over from a crash, or stored while the queue was down, is picked up
        # at once, not at the next sweep; work still queued or running is not queued twice.
        await jobs.sweep(ctx, grace=timedelta(0))

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
            func(through_outages(jobs.handle_message), keep_result=0, timeout=settings.job_timeout),
            func(through_outages(jobs.deliver), keep_result=0, timeout=60),
            # A run persists every step; the job's time limit is the workflow's own limit.
            func(through_outages(jobs.run_workflow), keep_result=0, timeout=3600),
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


def through_outages(job: Job[T]) -> Job[T]:
    """``job``, run again later when it fails because the database or the queue is down
    (after 2, 4, 8, 16 s: arq's tries), instead of failing for good; the jobs are idempotent.
    Work still undone after the last try is found by the sweep once the services are back."""

    @functools.wraps(job)
    async def run(ctx: dict[str, Any], *args: Any) -> T:
        try:
            return await job(ctx, *args)
        except Exception as exc:
            if (service := outage(exc)) is None:
                raise
            pause = min(2 ** ctx["job_try"], OUTAGE_RETRY_MAX_SECONDS)
            log.warning(
                "%s: the %s is down (%s); trying again in %d s",
                ctx["job_id"],
                service,
                describe(exc),
                pause,
            )
            raise Retry(defer=pause) from exc

    return run
