"""The queue takes any due time: past (however long ago), now, or future; its connections
outlive a restart of the server."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

from bot.app import Runtime
from bot.queue import PRIORITY_LEAD, connect, due_time
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
