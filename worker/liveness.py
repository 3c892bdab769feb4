"""Hand a dead worker's jobs to the living within seconds, instead of after arq's timeout.

arq marks a started job with an in-progress key that lives for the longest job timeout
plus 10 s, and leaves the job in the queue until it finishes. A worker killed mid-job
leaves that key behind, and its jobs wait it out: minutes, for model calls.

Each worker keeps a short-lived heartbeat, and with each beat publishes the set of jobs it
runs (kept in memory between beats, so a job costs no Redis round trip of its own). On
every heartbeat a worker also looks at this queue's started jobs: one that no live worker
claims, seen unclaimed on two looks at least ``GRACE`` apart (longer than a beat, so a job
started just after one has been published by the next), belonged to a dead worker.
Clearing its in-progress key lets the next poll of any live worker start it again; the job
functions are idempotent, so a rerun is safe.

A look reads only this queue's jobs and the workers' set, never the whole keyspace: Redis
also holds a key per delivered reply for a week, and a scan of them all on every beat would
grow with traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from arq.constants import in_progress_key_prefix

log = logging.getLogger(__name__)

PREFIX = "switchboard:worker:"
WORKERS = "switchboard:workers"  # the ids of the workers that have beaten
HEARTBEAT_SECONDS = 6
GRACE = 5.0
STOP_SECONDS = 5.0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Liveness:
    def __init__(self, redis: Any, queue_name: str, interval: float = 2.0) -> None:
        self.redis = redis
        self.queue_name = queue_name
        self.worker_id = uuid.uuid4().hex
        self.interval = interval
        self.running: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def heartbeat_key(self) -> str:
        return f"{PREFIX}{self.worker_id}"

    @property
    def jobs_key(self) -> str:
        return f"{PREFIX}{self.worker_id}:jobs"

    async def start(self) -> None:
        await self._beat()
        self._task = asyncio.create_task(self._beat_forever(), name="switchboard-heartbeat")

    async def stop(self) -> None:
        """Stop beating; a beat under way is let finish (cancelled mid-pipeline, it would
        leave its Redis connection half-used), within STOP_SECONDS."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), STOP_SECONDS)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.redis.delete(self.heartbeat_key, self.jobs_key)
        await self.redis.srem(WORKERS, self.worker_id)

    def job_started(self, job_id: str) -> None:
        self.running.add(job_id)

    def job_ended(self, job_id: str) -> None:
        self.running.discard(job_id)

    async def _beat(self) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.heartbeat_key, "1", ex=HEARTBEAT_SECONDS)
            pipe.sadd(WORKERS, self.worker_id)
            pipe.delete(self.jobs_key)
            if self.running:
                pipe.sadd(self.jobs_key, *self.running)
                pipe.expire(self.jobs_key, HEARTBEAT_SECONDS * 10)
            await pipe.execute()

    async def _beat_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)
                return
            try:
                await self._beat()
                await reclaim_orphans(self.redis, self.queue_name)
            except Exception:  # a Redis blip must not end the heartbeat for good
                log.warning("worker heartbeat failed; retrying", exc_info=True)


async def reclaim_orphans(redis: Any, queue_name: str) -> int:
    """Release started jobs of ``queue_name`` that no live worker runs; returns how many."""
    claimed = await _claimed(redis)
    unclaimed_key = f"{PREFIX}unclaimed:{queue_name}"
    first_seen = {_text(k): float(v) for k, v in (await redis.hgetall(unclaimed_key)).items()}
    now, still_unclaimed, released = time.time(), {}, 0
    for job_id in await _started(redis, queue_name):
        if job_id in claimed:
            continue
        seen = first_seen.get(job_id, now)
        if now - seen >= GRACE:
            await redis.delete(in_progress_key_prefix + job_id)
            released += 1
        else:
            still_unclaimed[job_id] = seen
    await redis.delete(unclaimed_key)
    if still_unclaimed:
        await redis.hset(unclaimed_key, mapping=still_unclaimed)
    if released:
        log.warning("restarting %d jobs of a worker that stopped answering", released)
    return released


async def _started(redis: Any, queue_name: str) -> list[str]:
    """The jobs of the queue a worker has started (arq keeps a job queued until it ends)."""
    job_ids = [_text(j) for j in await redis.zrange(queue_name, 0, -1)]
    if not job_ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.exists(in_progress_key_prefix + job_id)
        started = await pipe.execute()
    return [job_id for job_id, found in zip(job_ids, started, strict=True) if found]


async def _claimed(redis: Any) -> set[str]:
    """Jobs live workers run; dead workers leave the set, their job sets removed."""
    claimed: set[str] = set()
    for worker_id in [_text(w) for w in await redis.smembers(WORKERS)]:
        jobs_key = f"{PREFIX}{worker_id}:jobs"
        if await redis.exists(f"{PREFIX}{worker_id}"):
            claimed.update(_text(j) for j in await redis.smembers(jobs_key))
        else:
            await redis.srem(WORKERS, worker_id)
            await redis.delete(jobs_key)
    return claimed
