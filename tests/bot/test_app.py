"""The composition root's processes: the in-process worker comes back by itself when its
Redis went away and returned, and tells /healthz whether a worker is polling; the terminal
chat saves the files replies carry."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psutil
import pytest

from bot.app import (
    ChatOutcome,
    LocalChat,
    Runtime,
    in_process_worker,
    open_runtime,
    worker_alive,
    worker_check,
)
from bot.config import Settings
from bot.errors import ServiceUnavailable
from bot.services import EmbeddedServices
from tests.support import (
    BINARY_FILES,
    FILES_WORKFLOW,
    delivered,
    files_command,
    left_in_run_folder,
    save_workflow,
    say,
    wait_until,
)


async def test_the_in_process_worker_comes_back_after_its_valkey_restarts(
    runtime: Runtime, settings: Settings, tmp_path: Path
) -> None:
    services = EmbeddedServices(tmp_path)
    found = await asyncio.to_thread(services.acquire, postgres=False, valkey=True)
    own = settings.model_copy(update={"redis_url": found.redis_url})
    try:
        async with open_runtime(own, prepare=False) as ours, in_process_worker(ours) as loop:

            async def answered(message_id: int) -> bool:
                return any(out.in_reply_to == message_id for out in await delivered(ours))

            before = await say(ours, "before")
            await wait_until(lambda: answered(before.message_id), 30, "the first reply")
            valkey = psutil.Process(int((tmp_path / "valkey" / "valkey.pid").read_text()))
            valkey.kill()
            valkey.wait(10)
            assert await asyncio.to_thread(services.heal) == ["valkey"]

            after = await say(ours, "after")
            await wait_until(lambda: answered(after.message_id), 60, "a reply after the restart")
            assert loop.restarts >= 1
            await wait_until(lambda: worker_alive(ours), 30, "the new worker's heartbeat")
    finally:
        await asyncio.to_thread(services.release)


async def test_the_worker_check_says_whether_a_worker_polls_the_queue(runtime: Runtime) -> None:
    check = worker_check(runtime)
    with pytest.raises(ServiceUnavailable, match="no worker has polled the queue"):
        await check()

    async with in_process_worker(runtime):
        await wait_until(lambda: worker_alive(runtime), 30, "the worker's first poll")
        assert await check() == "a worker polled the queue in the last 6 s"


def _saved(folder: Path, outcome: ChatOutcome) -> dict[str, bytes]:
    """The files the chat says it saved, each once, in ``folder``, with their content."""
    assert outcome.ok, outcome.text
    paths = [Path(path) for path in outcome.saved]
    assert {path.parent for path in paths} == {folder} and len(set(paths)) == len(paths)
    return {path.name: path.read_bytes() for path in paths}


async def test_the_terminal_saves_binary_files_of_a_reply_byte_for_byte(
    runtime: Runtime, tmp_path: Path
) -> None:
    runtime.core.commands.add(files_command("draw"))
    async with in_process_worker(runtime):
        outcome = await LocalChat(runtime, tmp_path).say("/draw")

    assert outcome.text == "Made 2 files."
    assert _saved(tmp_path, outcome) == BINARY_FILES


async def test_the_terminal_saves_binary_files_a_run_replies_with(
    runtime: Runtime, tmp_path: Path
) -> None:
    await save_workflow(runtime, FILES_WORKFLOW)
    with left_in_run_folder(runtime, 1):  # the first run of a fresh database
        async with in_process_worker(runtime):
            outcome = await LocalChat(runtime, tmp_path).say("/blobs", follow_runs=True)

    assert outcome.text.startswith("Started run #1 of blobs."), outcome.text
    assert outcome.text.endswith("\nYour files.")
    assert _saved(tmp_path, outcome) == BINARY_FILES
