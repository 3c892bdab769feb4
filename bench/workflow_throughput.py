"""Single-node workflow runs per second through a real worker, against raw arq no-op jobs.

Ours: a workflow of one ``template`` node, started N times with ``workflows.runs.start``
from the shell trigger (no conversation, so nothing is posted), by ``--concurrency``
starters, while an arq worker built by ``build_worker`` runs in this process, as in
`switchboard up`. Each run is a ``run_workflow`` job: load the run, write the step before
and after the node, write the run's end. The clock runs from the first start until every
run is ``succeeded`` in ``workflow_runs`` (polled every 20 ms). The process's CPU time per
run (starts, worker and polling together) is reported too.

The peer: a bare arq Worker with one no-op function on the same Redis, with the same
poll_delay, max_jobs and queue_read_limit; N jobs enqueued the same way, timed until all
have run. Target: ours ÷ arq ≥ 0.5.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from arq import Worker, func
from sqlalchemy import func as sql
from sqlalchemy import select

from bench._common import closed_loop, emit, quiet_logs, say, settings, temp_home
from bot.app import Runtime, in_process_worker, open_runtime, running_worker
from bot.queue import deserialize, redis_settings, serialize
from bot.storage.models import WorkflowRun
from workflows import runs, store

WORKFLOW = "bench-one"
SOURCE = f"name: {WORKFLOW}\nnodes:\n  only: {{type: template, text: ok}}\n"
TIMEOUT = 120.0
POLL = 0.02


async def statuses(runtime: Runtime, first: int) -> dict[str, int]:
    async with runtime.core.sessions() as session:
        rows = await session.execute(
            select(WorkflowRun.status, sql.count())
            .where(WorkflowRun.id >= first)
            .group_by(WorkflowRun.status)
        )
        return {status: count for status, count in rows}


async def runs_through_worker(
    runtime: Runtime, n: int, concurrency: int
) -> tuple[float, float, float]:
    """Seconds from the first start until all n runs succeeded, seconds the starts took, and
    this process's CPU seconds meanwhile."""
    ids: list[int] = []

    async def start(i: int) -> float:
        run_id, _ = await runs.start(runtime.core, WORKFLOW, {}, trigger="shell")
        ids.append(run_id)
        return 0.0

    loop, cpu = asyncio.get_running_loop(), time.process_time()
    started = loop.time()
    await closed_loop(n, concurrency, start)
    starts = loop.time() - started
    first = min(ids)
    while (found := await statuses(runtime, first)).get("succeeded", 0) < n:
        if found.get("failed") or loop.time() - started > TIMEOUT:
            raise RuntimeError(f"runs did not all succeed: {found}")
        await asyncio.sleep(POLL)
    return loop.time() - started, starts, time.process_time() - cpu


async def ours(runtime: Runtime, args: argparse.Namespace) -> dict[str, Any]:
    async with runtime.core.sessions.begin() as session:
        await store.save(session, SOURCE, origin="bench")
    async with in_process_worker(runtime) as worker:
        say(f"ours: warming up with {args.warmup} runs")
        await runs_through_worker(runtime, args.warmup, args.concurrency)
        say(f"ours: {args.n} single-node runs, {args.concurrency} starters")
        elapsed, starts, cpu = await runs_through_worker(runtime, args.n, args.concurrency)
    return {
        "runs_per_s": round(args.n / elapsed, 1),
        "starts_per_s": round(args.n / starts, 1),
        "cpu_ms_per_run": round(cpu * 1000 / args.n, 2),
        "jobs_failed": worker.current.jobs_failed,
        "queue_read_limit": worker.current.queue_read_limit,
    }


class Counted:
    """No-op jobs run so far; ``reached(target)`` wakes when that many have run."""

    def __init__(self) -> None:
        self.done, self.target, self.event = 0, 0, asyncio.Event()

    async def noop(self, ctx: dict[str, Any]) -> None:
        self.done += 1
        if self.done >= self.target:
            self.event.set()

    async def reached(self, target: int) -> None:
        self.target = target
        if self.done < target:
            self.event.clear()
            await asyncio.wait_for(self.event.wait(), TIMEOUT)


def noop_worker(runtime: Runtime, queue: str, read_limit: int, counted: Counted) -> Worker:
    config = runtime.core.settings
    return Worker(
        functions=[func(counted.noop, name="noop", keep_result=0)],
        queue_name=queue,
        redis_settings=redis_settings(runtime.endpoints.redis_url),
        job_serializer=serialize,
        job_deserializer=deserialize,
        poll_delay=config.poll_delay,
        max_jobs=config.max_jobs,
        queue_read_limit=read_limit,
        keep_result=0,
        handle_signals=False,
        log_results=False,
    )


async def noop_jobs(
    runtime: Runtime, queue: str, n: int, concurrency: int, counted: Counted
) -> tuple[float, float]:
    """Seconds until n more no-op jobs have run, and this process's CPU seconds meanwhile."""

    async def enqueue(i: int) -> float:
        await runtime.redis.enqueue_job("noop", _queue_name=queue)
        return 0.0

    target, started, cpu = counted.done + n, time.perf_counter(), time.process_time()
    await closed_loop(n, concurrency, enqueue)
    await counted.reached(target)
    return time.perf_counter() - started, time.process_time() - cpu


async def arq_noop(runtime: Runtime, args: argparse.Namespace, read_limit: int) -> dict[str, Any]:
    queue, counted = f"{runtime.core.settings.queue_name}:noop", Counted()
    async with running_worker(noop_worker(runtime, queue, read_limit, counted)):
        await noop_jobs(runtime, queue, args.warmup, args.concurrency, counted)
        say(f"arq: {args.n} no-op jobs, {args.concurrency} enqueuers")
        elapsed, cpu = await noop_jobs(runtime, queue, args.n, args.concurrency, counted)
    return {
        "arq_noop_per_s": round(args.n / elapsed, 1),
        "arq_cpu_ms_per_job": round(cpu * 1000 / args.n, 2),
    }


async def main(args: argparse.Namespace) -> None:
    quiet_logs()
    with temp_home() as home:
        say(f"starting embedded services in {home}")
        async with open_runtime(settings(home)) as runtime:
            found = await ours(runtime, args)
            peer = await arq_noop(runtime, args, found["queue_read_limit"])
            config = runtime.core.settings
    arq_per_s = peer["arq_noop_per_s"]
    ratio = round(found["runs_per_s"] / arq_per_s, 3)
    if found["jobs_failed"]:
        say(f"WARNING: {found['jobs_failed']} worker jobs failed (see the log above)")
    say(
        f"ours {found['runs_per_s']} runs/s ({found['cpu_ms_per_run']} ms CPU per run), arq no-op "
        f"{arq_per_s} jobs/s ({peer['arq_cpu_ms_per_job']} ms CPU per job): ratio {ratio} "
        f"(target >= 0.5: {'met' if ratio >= 0.5 else 'MISSED'})"
    )
    emit(
        "workflow_throughput",
        runs_per_s=found["runs_per_s"],
        arq_noop_per_s=arq_per_s,
        ratio=ratio,
        n=args.n,
        starts_per_s=found["starts_per_s"],
        cpu_ms_per_run=found["cpu_ms_per_run"],
        arq_cpu_ms_per_job=peer["arq_cpu_ms_per_job"],
        jobs_failed=found["jobs_failed"],
        concurrency=args.concurrency,
        poll_delay=config.poll_delay,
        max_jobs=config.max_jobs,
        queue_read_limit=found["queue_read_limit"],
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description="Workflow runs per second vs raw arq.")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=10, help="starters / enqueuers")
    parser.add_argument("--warmup", type=int, default=20)
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
