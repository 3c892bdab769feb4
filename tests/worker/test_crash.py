"""A worker killed with SIGKILL while replies or workflow runs are pending: after a restart
every inbound message has exactly one reply and every run finishes — none lost, none twice."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from sqlalchemy import func, select

from bot.app import Runtime
from bot.config import Settings
from bot.conversation import message_status
from bot.messages import ConversationRef
from bot.people import SHELL
from bot.storage.models import LLMCall, Message, Outbox, WorkflowRun, WorkflowStep
from tests.fakes.llm_server import FakeLLM
from tests.support import cli_env, delivered, drain, say, serve
from tests.workflows.test_compose import PARENT, TWO_STEPS
from workflows import runs, store

MESSAGES = 24
JOB_TIMEOUT = 300  # a dead worker's jobs must come back by its heartbeat, not this


def _worker(settings: Settings, **extra: str) -> subprocess.Popen[bytes]:
    env = cli_env(
        settings,
        SWITCHBOARD_JOB_TIMEOUT=str(JOB_TIMEOUT),
        SWITCHBOARD_MAX_JOBS="4",
        SWITCHBOARD_LOG_LEVEL="WARNING",
        **extra,
    )
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "worker"], env=env, cwd=Path(__file__).parents[2]
    )


async def _kill_when(settings: Settings, ready: Check, **extra: str) -> None:
    """Start a worker and SIGKILL it as soon as ``ready`` says so."""
    worker = _worker(settings, **extra)
    try:
        await _wait_for(ready, 60)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()


async def _run_until(settings: Settings, *done: Check, **extra: str) -> None:
    """Start a worker, and stop it (SIGTERM) once each of ``done`` says so in turn."""
    worker = _worker(settings, **extra)
    try:
        for check in done:
            await _wait_for(check, 60)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)


Check = Callable[[], Awaitable[bool]]


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

    await _kill_when(settings, some_delivered)
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

    await _run_until(settings, all_sent)

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


CRASHY = """
name: crashy
inputs:
  n: {type: integer}
  base: {type: string}
nodes:
  notify: {type: http, method: POST, url: "{{ base }}/hook", json: {n: "{{ n }}"}}
  think:  {type: llm, needs: [notify], prompt: "think about {{ n }}"}
  post:   {type: reply, needs: [think], text: "run {{ n }}: {{ think }}"}
"""
RUNS = 8


async def test_a_workflow_run_resumes_after_its_worker_is_killed(
    runtime: Runtime, settings: Settings, llm: FakeLLM
) -> None:
    """Runs are killed mid-way: each resumes after its last finished node. A POST that had
    finished is not sent again; every request of one node carries one Idempotency-Key; each
    run replies exactly once."""
    keys: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        keys.append(request.headers["Idempotency-Key"])
        return web.json_response({"ok": True})

    llm.latency = 0.4
    async with runtime.core.sessions.begin() as session:
        await store.save(session, CRASHY, origin="test")
    async with serve(web.post("/hook", hook)) as base:
        ids = [
            (
                await runs.start(
                    runtime.core,
                    "crashy",
                    {"n": i, "base": base},
                    trigger="shell",
                    ref=CHATS[i % 4],
                )
            )[0]
            for i in range(RUNS)
        ]

        async def some_thinking() -> bool:
            """Two runs are on their model call, and one of those calls has begun."""
            async with runtime.core.sessions() as session:
                calling = await session.scalar(
                    select(func.count()).select_from(LLMCall).where(LLMCall.status == "started")
                )
            return bool(calling) and len(await _steps(runtime, "think", "running")) >= 2

        env = {"SWITCHBOARD_WORKFLOW_HTTP_ALLOW": '["127.0.0.0/8"]'}
        await _kill_when(settings, some_thinking, **env)
        notified = await _steps(runtime, "notify", "succeeded")
        interrupted = await _steps(runtime, "think", "running")
        posts_before = list(keys)

        async def all_done() -> bool:
            async with runtime.core.sessions() as session:
                done = await session.scalar(
                    select(func.count())
                    .select_from(WorkflowRun)
                    .where(WorkflowRun.status == "succeeded")
                )
            return done == RUNS

        await _run_until(settings, all_done, lambda: _replies_shown(runtime, RUNS), **env)

    assert interrupted, "no run was cut off mid-way"
    key_of = {run_id: f"switchboard-run-{run_id}-" for run_id in ids}
    for run_id in notified:  # finished before the kill: never sent again
        assert sum(k.startswith(key_of[run_id]) for k in keys) == 1
    for run_id in ids:  # at least once, and always under one key
        sent = {k for k in keys if k.startswith(key_of[run_id])}
        assert len(sent) == 1, (run_id, keys)
    assert len(keys) >= len(posts_before) and set(posts_before) <= set(keys)
    async with runtime.core.sessions() as session:
        attempts = dict(
            (
                await session.execute(
                    select(WorkflowStep.run_id, WorkflowStep.attempts).where(
                        WorkflowStep.node_id == "think"
                    )
                )
            ).all()
        )
    assert all(attempts[run_id] == 2 for run_id in interrupted)
    # The model calls the kill cut off were recorded as they started, and are counted so.
    async with runtime.core.sessions() as session:
        cut_off = set(
            await session.scalars(select(LLMCall.run_id).where(LLMCall.status == "started"))
        )
    assert cut_off and cut_off <= interrupted
    listed = await runs.recent(runtime.core, SHELL, RUNS)
    for run_id in ids:
        said = "; 1 call cut off" in await runs.describe(runtime.core, run_id)
        (line,) = [line for line in listed if line.startswith(f"#{run_id} ")]
        assert said == line.endswith("; 1 call cut off") == (run_id in cut_off), line
    shown = [out.text for ref in CHATS for out in await delivered(runtime, ref)]
    assert sorted(shown) == sorted(f"run {i}: echo: think about {i}" for i in range(RUNS))


async def _steps(runtime: Runtime, node_id: str, status: str) -> set[int]:
    async with runtime.core.sessions() as session:
        rows = await session.scalars(
            select(WorkflowStep.run_id).where(
                WorkflowStep.node_id == node_id, WorkflowStep.status == status
            )
        )
        return set(rows)


async def _replies_shown(runtime: Runtime, expected: int) -> bool:
    shown = [len(await delivered(runtime, ref)) for ref in CHATS]
    return sum(shown) >= expected


async def test_a_message_that_kills_its_worker_is_set_aside_not_tried_forever(
    runtime: Runtime, settings: Settings, llm: FakeLLM
) -> None:
    """Each try kills the worker mid-answer (SIGKILL while the model is asked): after the
    allowed tries the message is set aside with one reply, and the model is not asked again."""
    llm.hang = True
    received = await say(runtime, "the message that kills workers", ref=CHATS[0])
    limit = {"SWITCHBOARD_MAX_MESSAGE_ATTEMPTS": "2"}
    for attempt in (1, 2):

        async def asked(times: int = attempt) -> bool:
            return len(llm.requests) >= times

        await _kill_when(settings, asked, **limit)

    async def settled() -> bool:
        return await message_status(runtime.core, received.message_id) != "received"

    await _run_until(settings, settled, lambda: _replies_shown(runtime, 1), **limit)

    assert len(llm.requests) == 2
    async with runtime.core.sessions() as session:
        row = await session.get(Message, received.message_id)
    assert row is not None and (row.status, row.attempts) == ("failed", 2)
    (out,) = await delivered(runtime, CHATS[0])
    assert out.in_reply_to == received.message_id
    assert "set your message aside after 2 attempts" in out.text
    assert "stopped mid-way" in out.text and "/retry" in out.text

    # The two calls cut off by the kills were recorded as they started.
    async with runtime.core.sessions() as session:
        calls = (await session.scalars(select(LLMCall.status))).all()
    assert calls == ["started", "started"]
    usage = await say(runtime, "/usage", ref=CHATS[0])
    await drain(runtime)
    (shown,) = [o for o in await delivered(runtime, CHATS[0]) if o.in_reply_to == usage.message_id]
    assert "openai/fake-model: 0 calls, 2 calls cut off" in shown.text


async def test_a_sub_workflow_resumes_after_its_last_finished_node(
    runtime: Runtime, settings: Settings, llm: FakeLLM
) -> None:
    """The worker dies while a child run is on its second node: the child, a run of its own,
    resumes there (its first node's answer is kept, not asked again) and the parent ends."""
    llm.latency = 0.5
    async with runtime.core.sessions.begin() as session:
        await store.save(session, TWO_STEPS, origin="test")
        await store.save(session, PARENT, origin="test")
    parent_id, _ = await runs.start(runtime.core, "parent", {}, trigger="shell", ref=CHATS[0])

    async def on_second() -> bool:
        asking = [r["messages"][-1]["content"] for r in llm.requests]
        return any(text.startswith("two after") for text in asking)

    await _kill_when(settings, on_second)

    async def parent_done() -> bool:
        return (await runs.describe(runtime.core, parent_id)).split("\n")[0].endswith("succeeded")

    await _run_until(settings, parent_done, lambda: _replies_shown(runtime, 1))

    asked = [r["messages"][-1]["content"] for r in llm.requests]
    assert asked.count("one") == 1  # the child's first node was not run again
    assert asked.count("two after echo: one") == 2  # cut off once, then answered
    async with runtime.core.sessions() as session:
        child = await session.scalar(
            select(WorkflowRun).where(WorkflowRun.parent_run_id == parent_id)
        )
        assert child is not None and child.status == "succeeded"
        attempts = dict(
            (
                await session.execute(
                    select(WorkflowStep.node_id, WorkflowStep.attempts).where(
                        WorkflowStep.run_id == child.id
                    )
                )
            ).all()
        )
    assert attempts == {"first": 1, "second": 2}
    (shown,) = await delivered(runtime, CHATS[0])
    assert shown.text == "got echo: two after echo: one"
