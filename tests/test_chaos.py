"""Chaos: `switchboard up` and a `switchboard worker` on their own embedded servers, with
messages and workflow runs in flight, while the embedded Postgres, then the embedded
Valkey, then the worker are killed with SIGKILL. With no manual step, every message is
answered exactly once, every run finishes once, and /healthz is red while a server is down
and green again after.

The servers live in a home of this test's own: killing them must not touch the servers
the rest of the suite shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import asyncpg
import psutil
import pytest

from bot.app import Runtime, open_runtime
from bot.config import Settings
from bot.health import outage
from bot.messages import ConversationRef
from tests.fakes.llm_server import FakeLLM
from tests.support import ROOT, wait_until
from workflows import runs

CHAOS = """
name: chaos
inputs:
  n: {type: integer}
nodes:
  first:  {type: llm, prompt: "first thought on {{ n }}"}
  second: {type: llm, needs: [first], prompt: "second thought on {{ n }}"}
  third:  {type: llm, needs: [second], prompt: "third thought on {{ n }}"}
  post:   {type: reply, needs: [third], text: "run {{ n }} done"}
"""
CHATS = 3
RUNS_PER_PHASE = 3
SEND_EVERY = 0.25  # seconds between new messages: several are always in flight


@dataclass
class Switchboard:
    """The processes under test and what they were started with."""

    home: Path
    env: dict[str, str]
    logs: Path
    up: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    url: str = ""
    files: list[BinaryIO] = field(default_factory=list)

    def start(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        self.files.append((self.logs / log).open("wb"))
        return subprocess.Popen(
            [sys.executable, "-m", "bot", *args],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE if args[0] == "up" else subprocess.DEVNULL,
            stderr=self.files[-1],
        )

    def stop(self) -> None:
        for process in (self.worker, self.up):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(30)
            if process is not None and process.stdout is not None:
                process.stdout.close()
        for file in self.files:
            file.close()

    def output(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-6000:]}"
            for path in sorted(self.logs.iterdir())
        )


@pytest.fixture
def chaos_home() -> Iterator[Path]:
    # Not pytest's tmp_path: as root, the embedded Postgres's own user must reach it.
    with tempfile.TemporaryDirectory(prefix="switchboard-chaos-") as path:
        yield Path(path)


@pytest.fixture
async def switchboard(chaos_home: Path, llm: FakeLLM, tmp_path: Path) -> AsyncIterator[Switchboard]:
    (chaos_home / "config" / "workflows").mkdir(parents=True)
    (chaos_home / "config" / "workflows" / "chaos.yaml").write_text(CHAOS)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        PYTHONPATH=str(ROOT),
        SWITCHBOARD_HOME=str(chaos_home),
        SWITCHBOARD_MODEL="openai/fake-model",
        SWITCHBOARD_LLM_API_BASE=llm.url,
        SWITCHBOARD_POLL_DELAY="0.01",
        SWITCHBOARD_LOG_LEVEL="WARNING",
    )
    board = Switchboard(chaos_home, env, tmp_path)
    try:
        yield board
    finally:
        board.stop()
        _stop_servers(chaos_home)


async def test_killed_servers_and_worker_lose_nothing_and_double_nothing(
    switchboard: Switchboard, llm: FakeLLM
) -> None:
    started = time.monotonic()
    llm.latency = 0.3  # turns and run nodes take a while: some are always under way
    board = switchboard
    board.up = board.start("up", "--port", "0", log="up.log")
    board.url = await _web_url(board)
    board.worker = board.start("worker", log="worker.log")
    healthz = Healthz(board.url)
    await wait_until(healthz.green, 60, "a green /healthz after start")

    async with _runtime(board.home) as runtime, Sender(board.url) as sender:
        try:
            await _start_runs(runtime, 0)
            await wait_until(sender.some_sent, 30, "the first messages")
            pg_healed = await _kill_and_heal(
                board.home / "postgres" / "postmaster.pid", "database", healthz
            )
            await _start_runs(runtime, 1)
            await asyncio.sleep(1)
            valkey_healed = await _kill_and_heal(
                board.home / "valkey" / "valkey.pid", "queue", healthz
            )
            await _start_runs(runtime, 2)
            await asyncio.sleep(1)
            assert board.worker is not None
            board.worker.kill()
            board.worker.wait(30)
            await asyncio.sleep(1)
            sender.stop()
            await sender.finished(60)
            await wait_until(lambda: _all_done(board.home, sender), 90, "every answer and run")
            assert await healthz.green()
        except BaseException:
            raise

    await _check_exactly_once(board.home, sender)
    assert board.up is not None
    board.up.send_signal(signal.SIGINT)
    assert board.up.wait(30) == 0
    took = time.monotonic() - started
    print(
        f"\nchaos: healthy again {pg_healed:.1f} s after kill -9 of Postgres, "
        f"{valkey_healed:.1f} s of Valkey; "
        f"{len(sender.sent)} messages ({sender.refused} refusals retried), "
        f"{3 * RUNS_PER_PHASE} runs; {took:.0f} s in all"
    )


# --- the kills --------------------------------------------------------------------------------


@dataclass
class Healthz:
    url: str
    seen_down: set[str] = field(default_factory=set)

    async def report(self) -> tuple[int, dict[str, Any]]:
        timeout = aiohttp.ClientTimeout(total=5)
        async with (
            aiohttp.ClientSession(timeout=timeout) as client,
            client.get(f"{self.url}/healthz") as response,
        ):
            return response.status, await response.json()

    async def green(self) -> bool:
        status, body = await self.report()
        return status == 200 and body["ok"] is True

    async def red_naming(self, part: str) -> bool:
        status, body = await self.report()
        self.seen_down.update(body["down"])
        return status == 503 and part in body["down"]


async def _kill_and_heal(pid_file: Path, part: str, healthz: Healthz) -> float:
    """kill -9 the server in ``pid_file``; returns the seconds until /healthz is green.

    Until /healthz has said the part is down, this holds the lock under which leaseholders
    restart a server: a restart quicker than one probe must not hide the outage from it."""
    with _services_lock(pid_file.parents[1]):
        psutil.Process(int(pid_file.read_text().split()[0])).kill()
        killed = time.monotonic()
        await wait_until(lambda: healthz.red_naming(part), 15, f"/healthz naming {part} down")
    await wait_until(healthz.green, 60, f"/healthz green after {part} came back")
    return time.monotonic() - killed


@contextlib.contextmanager
def _services_lock(home: Path) -> Iterator[None]:
    with (home / "run" / "lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stop_servers(home: Path) -> None:
    """Whatever the processes under test left running, killed (the test's own servers)."""
    for pid_file in (home / "valkey" / "valkey.pid", home / "postgres" / "postmaster.pid"):
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            psutil.Process(int(pid_file.read_text().split()[0])).kill()


# --- the traffic ------------------------------------------------------------------------------


class Sender:
    """Web chat messages at a steady pace from several browsers, each posted until accepted,
    always under its own id, as the page retries."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent: set[str] = set()  # ids of the messages accepted
        self.refused = 0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._clients: list[aiohttp.ClientSession] = []

    async def __aenter__(self) -> Sender:
        for _ in range(CHATS):
            client = aiohttp.ClientSession(
                cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Origin": self.url}
            )
            await client.get(f"{self.url}/")  # the page gives this browser its chat
            self._clients.append(client)
        self._task = asyncio.create_task(self._send_all())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for client in self._clients:
            await client.close()

    def stop(self) -> None:
        self._stopping.set()

    async def finished(self, timeout: float) -> None:
        assert self._task is not None
        await asyncio.wait_for(asyncio.shield(self._task), timeout)

    async def some_sent(self) -> bool:
        return len(self.sent) >= 5

    async def _send_all(self) -> None:
        posting: set[asyncio.Task[None]] = set()
        n = 0
        while not self._stopping.is_set():
            posting.add(asyncio.create_task(self._post(n, self._clients[n % CHATS])))
            n += 1
            await asyncio.sleep(SEND_EVERY)
        await asyncio.gather(*posting)

    async def _post(self, n: int, client: aiohttp.ClientSession) -> None:
        body = {"text": f"message {n}", "id": f"chaos-{n}"}
        while True:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with client.post(
                    f"{self.url}/api/messages", json=body, timeout=aiohttp.ClientTimeout(total=10)
                ) as response:
                    if response.status == 200:
                        self.sent.add(body["id"])
                        return
            self.refused += 1
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def _runtime(home: Path) -> AsyncIterator[Runtime]:
    """This test's own view of the servers under test, to start runs and read results."""
    port = (home / "valkey" / "port").read_text().strip()
    password = (home / "valkey" / "password").read_text().strip()
    settings = Settings(
        home=home,
        database_url=f"postgresql://postgres@/switchboard?host={home / 'postgres'}",
        redis_url=f"redis://:{password}@127.0.0.1:{port}/0",
    )
    async with open_runtime(settings, prepare=False) as runtime:
        yield runtime


async def _start_runs(runtime: Runtime, phase: int) -> None:
    for k in range(RUNS_PER_PHASE):
        n = phase * RUNS_PER_PHASE + k
        ref = ConversationRef(channel="web", chat=f"runs-{n % 2}")
        for attempt in range(20):  # as any caller does: a statement that met the outage again
            try:
                await runs.start(
                    runtime.core,
                    "chaos",
                    {"n": n},
                    trigger="shell",
                    ref=ref,
                    idempotency_key=str(n),
                )
                break
            except Exception as exc:
                assert outage(exc) is not None and attempt < 19, repr(exc)
                await asyncio.sleep(0.5)


# --- the verdict ------------------------------------------------------------------------------


async def _query(home: Path, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(f"postgresql://postgres@/switchboard?host={home / 'postgres'}")
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def _all_done(home: Path, sender: Sender) -> bool:
    with contextlib.suppress(OSError, asyncpg.PostgresError):
        [row] = await _query(
            home,
            """
            SELECT (SELECT count(*) FROM messages WHERE direction = 'in'
                      AND external_id LIKE '%:chaos-%' AND status <> 'received') AS answered,
                   (SELECT count(*) FROM workflow_runs WHERE status = 'succeeded') AS runs,
                   (SELECT count(*) FROM outbox WHERE status <> 'sent') AS unsent
            """,
        )
        return bool(
            row["answered"] == len(sender.sent)
            and row["runs"] == 3 * RUNS_PER_PHASE
            and row["unsent"] == 0
        )
    return False


async def _check_exactly_once(home: Path, sender: Sender) -> None:
    inbound = await _query(
        home,
        """
        SELECT m.external_id, m.status,
               (SELECT count(*) FROM messages r WHERE r.reply_to_id = m.id) AS replies,
               (SELECT min(r.text) FROM messages r WHERE r.reply_to_id = m.id) AS reply
        FROM messages m WHERE m.direction = 'in'
        """,
    )
    # The web chat stores a page's message id qualified with its chat: "CHAT:chaos-7".
    assert sorted(row["external_id"].split(":", 1)[1] for row in inbound) == sorted(sender.sent)
    assert [r["external_id"] for r in inbound if r["replies"] != 1] == []
    wrong = [(r["external_id"], r["reply"]) for r in inbound if not _echoes(r["reply"])]
    assert wrong == [], "answers that are not the model's"

    posts = await _query(
        home, "SELECT text, count(*) AS n FROM messages WHERE text LIKE 'run % done' GROUP BY text"
    )
    assert sorted(row["text"] for row in posts) == sorted(
        f"run {n} done" for n in range(3 * RUNS_PER_PHASE)
    )
    assert {row["n"] for row in posts} == {1}
    statuses = await _query(home, "SELECT status, count(*) AS n FROM workflow_runs GROUP BY 1")
    assert {row["status"]: row["n"] for row in statuses} == {"succeeded": 3 * RUNS_PER_PHASE}


def _echoes(reply: str | None) -> bool:
    return reply is not None and re.fullmatch(r"echo: message \d+", reply) is not None


async def _web_url(board: Switchboard) -> str:
    """The web chat's address from `up`'s banner (it was started on a free port)."""
    assert board.up is not None and board.up.stdout is not None
    stdout = board.up.stdout
    deadline = time.monotonic() + 90
    seen = ""
    while "Press Ctrl+C" not in seen:
        assert time.monotonic() < deadline and board.up.poll() is None, board.output() + seen
        line = await asyncio.to_thread(stdout.readline)
        seen += line.decode()
    found = re.search(r"Web chat:\s+(http://\S+)", seen)
    assert found is not None, seen
    return found.group(1)
