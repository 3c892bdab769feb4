"""A worker killed with SIGKILL while replies are pending: after a restart every inbound
message has exactly one reply — none lost, none twice."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from bot.app import Runtime
from bot.config import Settings
from bot.messages import ConversationRef
from bot.storage.models import Message, Outbox
from tests.fakes.llm_server import FakeLLM
from tests.support import cli_env, delivered, say

MESSAGES = 24
JOB_TIMEOUT = 300  # a dead worker's jobs must come back by its heartbeat, not this


def _worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = cli_env(
        settings,
        SWITCHBOARD_JOB_TIMEOUT=str(JOB_TIMEOUT),
        SWITCHBOARD_MAX_JOBS="4",
        SWITCHBOARD_LOG_LEVEL="WARNING",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "worker"], env=env, cwd=Path(__file__).parents[2]
    )


async def _wait_for(check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


CHATS = [ConversationRef(channel="terminal", chat=name) for name in ("ann", "bo", "cy", "di")]


async def _shown(runtime: Runtime) -> list[int | None]:
    """Every reply the chats' streams received (in_reply_to), duplicates included."""
    return [out.in_reply_to for ref in CHATS for out in await delivered(runtime, ref)]


async def test_sigkilled_worker_loses_nothing_and_sends_nothing_twice(
    runtime: Runtime, settings: Settings, llm: FakeLLM
) -> None:
    llm.latency = 0.25
    sent = [await say(runtime, f"message {i}", ref=CHATS[i % 4]) for i in range(MESSAGES)]

    async def some_delivered() -> bool:
        return len(await _shown(runtime)) >= 4

    first = _worker(settings)
    try:
        await _wait_for(some_delivered, 60)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert len(await _shown(runtime)) < MESSAGES, "the worker finished before it was killed"

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
        await _wait_for(all_sent, 60)
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
    assert sorted(await _shown(runtime)) == sorted(s.message_id for s in sent)
