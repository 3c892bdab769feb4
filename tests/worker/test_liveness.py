"""A dead worker's started jobs go back to the queue; a look never scans the keyspace."""

from __future__ import annotations

import time

from arq.constants import in_progress_key_prefix

from bot.app import Runtime
from worker.liveness import GRACE, PREFIX, Liveness, reclaim_orphans


async def test_only_a_started_job_no_live_worker_runs_is_released(runtime: Runtime) -> None:
    redis, queue = runtime.redis, runtime.core.settings.queue_name
    alive = Liveness(redis, queue)
    await alive.start()
    try:
        alive.job_started("msg:1")
        await alive._beat()
        for job_id in ("msg:1", "msg:2", "msg:3"):
            await redis.zadd(queue, {job_id: 1})
        await redis.set(in_progress_key_prefix + "msg:1", b"1")  # ours, running
        await redis.set(in_progress_key_prefix + "msg:2", b"1")  # a dead worker's
        # msg:3 is queued, not started. A dead worker's jobs set lingers too.
        await redis.sadd("switchboard:workers", "gone")
        await redis.sadd(f"{PREFIX}gone:jobs", "msg:2")
        # Unrelated keys (a week of delivered replies) are not looked at.
        await redis.mset({f"switchboard:sent:reply:{n}:0": "1-0" for n in range(2000)})

        await redis.config_resetstat()
        assert await reclaim_orphans(redis, queue) == 0  # seen once: not yet
        await redis.hset(f"{PREFIX}unclaimed:{queue}", "msg:2", str(time.time() - GRACE - 1))
        assert await reclaim_orphans(redis, queue) == 1
        assert "cmdstat_scan" not in await redis.info("commandstats")

        assert not await redis.exists(in_progress_key_prefix + "msg:2")
        assert await redis.exists(in_progress_key_prefix + "msg:1")
        assert not await redis.exists(f"{PREFIX}gone:jobs")
        assert [m.decode() for m in await redis.smembers("switchboard:workers")] == [
            alive.worker_id
        ]
    finally:
        await alive.stop()
