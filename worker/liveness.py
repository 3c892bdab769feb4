"""Hand a dead worker's jobs to the living at once, instead of after arq's timeout.

arq marks a started job with an in-progress key that lives for the longest job timeout
plus 10 s; a worker killed mid-job leaves that key behind and its jobs wait it out (minutes
for model calls). Each worker here keeps a short-lived heartbeat and a set of the jobs it
runs. Whoever finds a set whose heartbeat has expired clears those jobs' in-progress keys;
the jobs are still in arq's queue, so the next poll of any live worker starts them again. Every heartbeat also looks for such
orphans, so a crashed worker's jobs restart within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from arq.constants import in_progress_key_prefix

log = logging.getLogger(__name__)

PREFIX = "switchboard:worker:"
HEARTBEAT_SECONDS = 6


class Liveness:
    def __init__(self, redis: Any, interval: float = HEARTBEAT_SECONDS / 3) -> None:
        self.redis = redis
        self.worker_id = uuid.uuid4().hex
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.redis.delete(self.heartbeat_key, self.jobs_key)

    async def job_started(self, job_id: str) -> None:
        await self.redis.sadd(self.jobs_key, job_id)

    async def job_ended(self, job_id: str) -> None:
        await self.redis.srem(self.jobs_key, job_id)

    async def _beat(self) -> None:
        await self.redis.set(self.heartbeat_key, "1", ex=HEARTBEAT_SECONDS)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._beat()
                await reclaim_orphans(self.redis)
            except Exception:  # a Redis blip must not end the heartbeat for good
                log.warning("worker heartbeat failed; retrying", exc_info=True)


async def reclaim_orphans(redis: Any) -> int:
    """Release the jobs of workers whose heartbeat has expired; returns how many."""
    released = 0
    async for key in redis.scan_iter(match=f"{PREFIX}*:jobs"):
        name = key.decode() if isinstance(key, bytes) else key
        if await redis.exists(name.removesuffix(":jobs")):
            continue
        job_ids = [j.decode() if isinstance(j, bytes) else j for j in await redis.smembers(name)]
        if job_ids:
            await redis.delete(*(in_progress_key_prefix + job_id for job_id in job_ids))
        await redis.delete(name)
        released += len(job_ids)
        log.warning("released %d jobs of a worker that stopped answering", len(job_ids))
    return released
