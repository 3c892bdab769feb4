"""A worker killed with SIGKILL while replies are pending: after a restart every inbound
message has exactly one reply — none lost, none twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from bot.app import Runtime
from bot.config import Settings
from bot.storage.models import Message, Outbox
from tests.fakes.llm_server import FakeLLM
from tests.support import delivered, say

MESSAGES = 24
JOB_TIMEOUT = 300  # a dead worker's jobs must come back by its heartbeat, not this


def _worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SWITCHBOARD_HOME": str(settings.home),
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "SWITCHBOARD_QUEUE_NAME": settings.queue_name,
        "SWITCHBOARD_MODEL": settings.model,
        "SWITCHBOARD_LLM_API_BASE": settings.llm_api_base or "",
        "SWITCHBOARD_JOB_TIMEOUT": str(JOB_TIMEOUT),
        "SWITCHBOARD_POLL_DELAY": "0.01",
        "SWITCHBOARD_MAX_JOBS": "4",
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "worker"], env=env, cwd=Path(__file__).parents[2]
    )


async def _wait_for(check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_sigkilled_worker_loses_nothing_and_sends_nothing_twice(
    runtime: Runtime, settings: Settings, llm: FakeLLM
) -> None:
    llm.latency = 0.25
    sent = [await say(runtime, f"message {i}") for i in range(MESSAGES)]

    async def some_delivered() -> bool:
        n = len(await delivered(runtime))
        print("CHECK", time.time(), len(llm.requests), n)
        return n >= 4

    first = _worker(settings)
    try:
        await _wait_for(some_delivered, 60)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    from adapters.local import LocalStream

    ids = [e.entry_id for e in await LocalStream(runtime.redis, "terminal").history("alice")]
    print("ENTRIES", ids, time.time())
    assert len(await delivered(runtime)) < MESSAGES, "the worker finished before it was killed"

    async def all_sent() -> bool:
        async with runtime.core.sessions() as session:
            pending = await session.scalar(
                select(func.count()).select_from(Outbox).where(Outbox.status != "sent")
            )
            answered = await session.scalar(
                select(func.count()).select_from(Message).where(Message.direction == "out")
            )
        return pending == 0 and answered == MESSAGES

    second = _worker(settings)
    try:
        try:
            await _wait_for(all_sent, 40)
        except AssertionError:
            async with runtime.core.sessions() as session:
                print(
                    "IN",
                    (
                        await session.execute(
                            select(Message.id, Message.status).where(Message.direction == "in")
                        )
                    ).all(),
                )
                print(
                    "OUT",
                    (
                        await session.execute(
                            select(Outbox.id, Outbox.status, Outbox.attempts, Outbox.last_error)
                        )
                    ).all(),
                )
            keys = await runtime.redis.keys("*")
            print("KEYS", sorted(keys))
            for k in keys:
                if b"in-progress" in k or b"worker" in k:
                    print(k, await runtime.redis.type(k), await runtime.redis.ttl(k))
            print("QUEUE", await runtime.redis.zrange(settings.queue_name, 0, -1, withscores=True))
            raise
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)

    async with runtime.core.sessions() as session:
        replies = (
            await session.execute(
                select(Message.reply_to_id, func.count())
                .where(Message.direction == "out")
                .group_by(Message.reply_to_id)
            )
        ).all()
    assert sorted(r[0] for r in replies) == sorted(s.message_id for s in sent)
    assert {r[1] for r in replies} == {1}
    shown = [out.in_reply_to for out in await delivered(runtime)]
    assert sorted(shown) == sorted(s.message_id for s in sent)
