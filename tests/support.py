"""Small helpers the tests share: send like an adapter, drain the queue with a real worker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from sqlalchemy import func, select

from adapters.http import HttpServer
from adapters.local import LocalStream
from adapters.web import WebAdapter
from bot.app import Runtime
from bot.channels import Dispatch
from bot.config import Settings
from bot.conversation import Received, message_file, receive, transcript
from bot.core import Core
from bot.messages import Attachment, Author, ConversationRef, IncomingMessage, OutgoingMessage
from bot.router import Command
from bot.storage.models import Message, Outbox
from bot.turns import Reply, Turn
from worker.settings import build_worker, health_check_key
from workflows import store
from workflows.engine import run_folder
from workflows.runs import workspace_root

REF = ConversationRef(channel="terminal", chat="alice")


ROOT = Path(__file__).resolve().parents[1]


async def in_browser(runtime: Runtime, name: str, text: str) -> str:
    """The reply ``name`` gets in their own web chat (a member: the web channel is open)."""
    ref = ConversationRef(channel="web", chat=name)
    return (await reply_to(runtime, text, ref=ref, author=f"web:{name}")).text


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a `switchboard` process needs to share the test's servers and LLM,
    running this tree's code whatever its working directory (not an installed copy)."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
        "SWITCHBOARD_HOME": str(settings.home),
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "SWITCHBOARD_QUEUE_NAME": settings.queue_name,
        "SWITCHBOARD_MODEL": settings.model,
        "SWITCHBOARD_LLM_API_BASE": settings.llm_api_base or "",
        "SWITCHBOARD_POLL_DELAY": "0.01",
        **extra,
    }


def incoming(
    text: str,
    *,
    external_id: str | None = None,
    ref: ConversationRef = REF,
    attachments: tuple[Attachment, ...] = (),
    author: str = "alice",
) -> IncomingMessage:
    return IncomingMessage(
        ref=ref,
        external_id=external_id or uuid.uuid4().hex,
        author=Author(author, author.title()),
        text=text,
        attachments=attachments,
    )


async def say(runtime: Runtime, text: str, **kwargs: object) -> Received:
    return await receive(runtime.core, incoming(text, **kwargs))  # type: ignore[arg-type]


async def drain(runtime: Runtime, timeout: float = 60.0) -> int:
    """Run a real arq worker until no job is due or running; returns jobs completed.

    Not arq's burst mode: that waits for jobs deferred to the future too (a timer set for
    tomorrow), where a test wants everything due now done and nothing more.
    """
    queue = runtime.core.settings.queue_name
    worker = build_worker(runtime.core, runtime.endpoints.redis_url, handle_signals=False)
    task = asyncio.create_task(worker.async_run())
    deadline = time.monotonic() + timeout
    try:
        idle = 0
        while idle < 3:
            assert time.monotonic() < deadline, "the queue did not drain in time"
            await asyncio.sleep(0.03)
            if not await runtime.redis.exists(health_check_key(queue)):
                continue  # still starting up: its start-up sweep may queue more
            due = await runtime.redis.zcount(queue, "-inf", _now_ms())
            idle = idle + 1 if due == 0 and worker.job_counter == 0 else 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.close()
    return worker.jobs_complete


def _now_ms() -> int:
    return int(time.time() * 1000)


async def delivered(runtime: Runtime, ref: ConversationRef = REF) -> list[OutgoingMessage]:
    """Every reply the channel's stream received, oldest first."""
    entries = await LocalStream(runtime.redis, ref.channel).history(ref.chat)
    return [entry.out for entry in entries if entry.out is not None]


async def reply_to(runtime: Runtime, text: str, **kwargs: object) -> OutgoingMessage:
    """The one reply to ``text`` (said at ``ref=``, by ``author=``, as ``incoming`` takes)."""
    received = await say(runtime, text, **kwargs)
    await drain(runtime)
    ref = kwargs.get("ref", REF)
    assert isinstance(ref, ConversationRef)
    found = [out for out in await delivered(runtime, ref) if out.in_reply_to == received.message_id]
    assert len(found) == 1, f"expected one reply to {text!r}, got {found}"
    return found[0]


async def count(runtime: Runtime, *where: object) -> int:
    async with runtime.core.sessions() as session:
        return int(
            await session.scalar(select(func.count()).select_from(Message).where(*where)) or 0
        )  # type: ignore[arg-type]


async def outbox_rows(runtime: Runtime) -> list[Outbox]:
    async with runtime.core.sessions() as session:
        return list((await session.scalars(select(Outbox).order_by(Outbox.id))).all())


@contextlib.asynccontextmanager
async def serve(*routes: web.RouteDef) -> AsyncIterator[str]:
    """A small HTTP server on loopback (an API a workflow calls); yields its base URL."""
    app = web.Application()
    app.router.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def loop_gaps() -> AsyncIterator[list[float]]:
    """The gaps between ticks of a task sleeping 10 ms at a time in this event loop, while
    the block runs: a long gap is a stalled loop."""
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            gaps.append(time.monotonic() - last)
            last = time.monotonic()

    ticker = asyncio.create_task(tick())
    try:
        yield gaps
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker


async def wait_until(
    check: Callable[[], Awaitable[object]], timeout: float, what: str, every: float = 0.05
) -> None:
    """Poll ``check`` until it returns something true; fail naming ``what`` after ``timeout``
    seconds of the monotonic clock (generous: a loaded machine is slow, never wrong)."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        await asyncio.sleep(every)


def free_port() -> int:
    """A loopback port nothing listens on (a server that is down, or one to start)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServedWeb:
    """The web chat on its own HTTP server, as `switchboard up` serves it."""

    adapter: WebAdapter
    server: HttpServer

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def listeners(self) -> int:
        return self.adapter.listeners

    async def stop(self) -> None:
        await self.adapter.stop()  # open event streams end first
        await self.server.stop()


@contextlib.asynccontextmanager
async def serving(
    runtime: Runtime,
    dispatch: Dispatch,
    *,
    routes: Sequence[web.RouteDef] = (),
    hosts: Sequence[str] = (),
    keepalive: float = 0.2,
) -> AsyncIterator[ServedWeb]:
    """The web chat (with file links) and ``routes`` on a free port, with a short keep-alive."""
    adapter = WebAdapter(
        runtime.redis,
        lambda ref: transcript(runtime.core, ref),
        files=lambda ref, message_id, index: message_file(runtime.core, ref, message_id, index),
        keepalive=keepalive,
    )
    server = HttpServer("127.0.0.1", 0, hosts)
    server.add([*adapter.routes(), *routes])
    await adapter.start(dispatch)
    await server.start()
    served = ServedWeb(adapter, server)
    try:
        yield served
    finally:
        await served.stop()


# Every byte value, NUL among them (Postgres JSONB cannot hold "\u0000": such a file can
# only go out by reference), and 2 MB of random bytes (seeded: the same each run).
EVERY_BYTE = bytes(range(256)) * 4 + b"\x00\x00PNG\x00"
BINARY_FILES = {"every-byte.bin": EVERY_BYTE, "random.bin": random.Random(2).randbytes(2 * 2**20)}
# A run replying with the binary files a tool left in its folder (see left_in_run_folder).
FILES_WORKFLOW = """
name: blobs
command: /blobs
nodes:
  send: {type: reply, text: Your files., files: [every-byte.bin, random.bin]}
"""


def files_command(name: str) -> Command:
    """A command replying with BINARY_FILES, as one rendering a chart or a deck would."""
    made = tuple(Attachment(filename, data=data) for filename, data in BINARY_FILES.items())

    async def make(core: Core, turn: Turn, args: list[str]) -> Reply:
        return Reply(f"Made {len(made)} files.", attachments=made)

    return Command(name, f"/{name}", "make files", make)


async def save_workflow(runtime: Runtime, source: str) -> None:
    async with runtime.core.sessions.begin() as session:
        await store.save(session, source, origin="test")


@contextlib.contextmanager
def left_in_run_folder(runtime: Runtime, run_id: int) -> Iterator[None]:
    """BINARY_FILES in a run's folder, as a tool would have left them there. The folder is
    emptied before and after: run ids start over with each test's database, but the folders
    stay for the whole session."""
    folder = run_folder(workspace_root(runtime.core), run_id)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name, data in BINARY_FILES.items():
        (folder / name).write_bytes(data)
    try:
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)
