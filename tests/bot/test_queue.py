"""The queue takes any due time: past (however long ago), now, or future; its connections
outlive a restart of the server."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
from arq.jobs import Job
from arq.utils import to_unix_ms

from bot.app import Runtime
from bot.queue import PRIORITY_LEAD, connect, deserialize, due_time
from bot.services import EmbeddedServices

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def test_a_time_long_past_is_due_now() -> None:
    assert due_time(NOW - timedelta(days=400), priority=False, now=NOW) == NOW
    assert due_time(NOW - timedelta(days=400), priority=True, now=NOW) == NOW - PRIORITY_LEAD


def test_future_times_and_no_time_are_kept() -> None:
    later = NOW + timedelta(days=3)
    assert due_time(later, priority=False, now=NOW) == later
    assert due_time(later, priority=True, now=NOW) == later
    assert due_time(None, priority=False, now=NOW) is None
    assert due_time(None, priority=True, now=NOW) == NOW - PRIORITY_LEAD


async def test_a_job_due_years_ago_is_queued_and_due(runtime: Runtime) -> None:
    queue = runtime.core.queue
    assert await queue.enqueue(
        "deliver", 1, job_id="past", defer_until=datetime(2001, 1, 1, tzinfo=UTC)
    )
    assert await queue.enqueue(
        "deliver", 2, job_id="future", defer_until=datetime.now(UTC) + timedelta(days=30)
    )

    name = runtime.core.settings.queue_name
    due = await runtime.redis.zrangebyscore(name, "-inf", int(time.time() * 1000))
    assert [j.decode() for j in due] == ["past"]
    assert await runtime.redis.pttl("arq:job:past") > 0


async def test_a_job_is_queued_as_arq_reads_it(runtime: Runtime) -> None:
    queue, name = runtime.core.queue, runtime.core.settings.queue_name
    due = datetime.now(UTC) + timedelta(hours=2)
    assert await queue.enqueue("deliver", 7, "x", job_id="read-me", defer_until=due)

    job = Job("read-me", runtime.redis, _queue_name=name, _deserializer=deserialize)
    info = await job.info()
    assert info is not None
    assert (info.function, info.args, info.kwargs, info.job_try) == ("deliver", [7, "x"], {}, None)
    assert info.score == to_unix_ms(due)
    # Kept a day past its due time, as arq keeps it.
    lives = await runtime.redis.pttl("arq:job:read-me") / 3_600_000
    assert 25.9 < lives <= 26


async def test_a_job_id_queued_or_done_is_not_queued_again(runtime: Runtime) -> None:
    queue, name = runtime.core.queue, runtime.core.settings.queue_name
    assert await queue.enqueue("deliver", 1, job_id="once")
    assert not await queue.enqueue("deliver", 2, job_id="once")
    await runtime.redis.set("arq:result:kept", b"{}")
    assert not await queue.enqueue("deliver", 3, job_id="kept")

    assert [j.decode() for j in await runtime.redis.zrange(name, 0, -1)] == ["once"]
    info = await Job("once", runtime.redis, _queue_name=name, _deserializer=deserialize).info()
    assert info is not None and info.args == [1]


async def test_queueing_a_job_is_one_round_trip(runtime: Runtime) -> None:
    await runtime.core.queue.enqueue("deliver", 0, job_id="warm")  # loads the script
    await runtime.redis.config_resetstat()
    await runtime.core.queue.enqueue("deliver", 1, job_id="counted", priority=True)

    stats = await runtime.redis.info("commandstats")
    ran = {name: int(found["calls"]) for name, found in stats.items()}
    ran.pop("cmdstat_config|resetstat")
    # One call of the script, which runs what arq needs (no WATCH, MULTI, EXEC round trips).
    assert ran == {
        "cmdstat_evalsha": 1,
        "cmdstat_exists": 1,
        "cmdstat_psetex": 1,
        "cmdstat_zadd": 1,
    }


async def test_the_pool_carries_on_when_its_valkey_restarted(tmp_path: Path) -> None:
    """Connections a restarted server dropped are opened again by the command that finds
    them, so nothing fails once the server is back."""
    services = EmbeddedServices(tmp_path)
    found = await asyncio.to_thread(services.acquire, postgres=False, valkey=True)
    pool = await connect(found.redis_url)
    try:
        await pool.set("before", "1")
        valkey = psutil.Process(int((tmp_path / "valkey" / "valkey.pid").read_text()))
        valkey.kill()
        valkey.wait(10)
        assert await asyncio.to_thread(services.heal) == ["valkey"]

        assert await pool.get("before") == b"1"
    finally:
        await pool.aclose()
        await asyncio.to_thread(services.release)
