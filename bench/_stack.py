"""Switchboard among its fakes, each in a process of its own, as the whole-system benchmarks
run it: the embedded services held by the benchmark (so a floor measured before or after
Switchboard uses the same ones), the fake Slack and the fake model as child processes,
`switchboard up` (and, if asked, a separate `switchboard worker`) as more.

Every child prints its address on stdout when it is ready; its other output goes to this
process's stderr with the child's name in front, so progress stays readable and the last
line of stdout stays the benchmark's JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from adapters.slack import WRITING
from bench._common import emit, free_port, say, settings
from bot import services

ROOT = Path(__file__).resolve().parents[1]
READY_SECONDS = 90.0
STOP_SECONDS = 60.0
# Settings a benchmark's Switchboard never inherits from the shell that started it.
INHERITED_PREFIXES = ("SWITCHBOARD_", "SLACK_")


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    address: str  # what followed the marker on the line that said it was ready
    echo: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid


@contextlib.asynccontextmanager
async def child(
    name: str, argv: Iterable[str], marker: str | None, env: Mapping[str, str] | None = None
) -> AsyncIterator[Child]:
    """``python argv`` from the worktree root, ready once a stdout line holds ``marker``
    (at once without one); stopped with SIGTERM (then SIGKILL) on leaving."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        cwd=ROOT,
        env=dict(env) if env is not None else None,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        address = ""
        if marker is not None:
            address = await asyncio.wait_for(_address(name, process, marker), READY_SECONDS)
        started = Child(name, process, address)
        started.echo = asyncio.create_task(_echo(name, process))
        yield started
    finally:
        await _stop(process)


async def _address(name: str, process: asyncio.subprocess.Process, marker: str) -> str:
    assert process.stdout is not None
    while line := (await process.stdout.readline()).decode():
        if marker in line:
            return line.split(marker, 1)[1].strip()
        print(f"[{name}] {line.rstrip()}", file=sys.stderr, flush=True)
    raise RuntimeError(f"exited with {await process.wait()} before saying {marker!r}")


async def _echo(name: str, process: asyncio.subprocess.Process) -> None:
    """The rest of a child's stdout, so its pipe never fills."""
    assert process.stdout is not None
    while line := (await process.stdout.readline()).decode():
        print(f"[{name}] {line.rstrip()}", file=sys.stderr, flush=True)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), STOP_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()


def fake_slack() -> contextlib.AbstractAsyncContextManager[Child]:
    """The fake Slack; its ``address`` is the Web API base URL (``…/api/``)."""
    port = str(free_port())
    return child("fake-slack", ["-m", "tests.fakes.slack_server", "--port", port], "http://")


def fake_llm(latency: float) -> contextlib.AbstractAsyncContextManager[Child]:
    """The fake OpenAI-compatible model, answering after ``latency`` seconds."""
    argv = ["-m", "tests.fakes.llm_server", "--port", str(free_port()), "--latency", str(latency)]
    return child("fake-llm", argv, "http://")


def root_of(child: Child) -> str:
    """``http://host:port`` of a fake that printed a URL (the marker took the scheme)."""
    return "http://" + child.address.split("/", 1)[0]


# --- Switchboard ----------------------------------------------------------------------------


@contextlib.contextmanager
def held_services(home: Path) -> Iterator[services.Endpoints]:
    """The embedded Postgres and Valkey in ``home`` (or DATABASE_URL / REDIS_URL), held for
    the whole run: Switchboard's processes join them by their lease, and they stay up
    between its runs and the floor's."""
    endpoints, embedded = services.resolve(settings(home))
    try:
        yield endpoints
    finally:
        if embedded is not None:
            embedded.release()


def switchboard_env(home: Path, llm: Child, extra: Mapping[str, str]) -> dict[str, str]:
    kept = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED_PREFIXES)}
    return {
        **kept,
        "PYTHONPATH": str(ROOT),
        "SWITCHBOARD_HOME": str(home),
        "SWITCHBOARD_MODEL": "openai/fake-model",
        "SWITCHBOARD_LLM_API_BASE": "http://" + llm.address,
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
        **extra,
    }


@dataclass
class Switchboard:
    url: str  # the web chat's, also /slack/events and /healthz
    processes: dict[str, int] = field(default_factory=dict)  # name: pid


@contextlib.asynccontextmanager
async def switchboard(
    env: Mapping[str, str], *, workers: int = 0, profile: str | None = None
) -> AsyncIterator[Switchboard]:
    """`switchboard up` with its worker in the same process, or (``workers`` > 0) an
    ingress-only `up --no-worker` and that many `switchboard worker` processes; yielded once
    /healthz says every part is up. With ``profile``, `up` runs under ``bench._profiled``,
    which writes its CPU-time statistics to that file when `up` stops."""
    start = ["-m", "bench._profiled", profile, "bot"] if profile else ["-m", "bot"]
    argv = [*start, "up", *(["--no-worker"] if workers else [])]
    # Any free port, chosen by the server itself: `up --port 0` means 8765 today (`port or
    # settings.web_port`), the setting does not.
    env = {**env, "SWITCHBOARD_WEB_PORT": "0"}
    async with contextlib.AsyncExitStack() as stack:
        up = await stack.enter_async_context(child("up", argv, "Web chat:", env))
        found = Switchboard(up.address, {"switchboard": up.pid})
        for n in range(1, workers + 1):
            worker = await stack.enter_async_context(
                child(f"worker-{n}", ["-m", "bot", "worker"], None, env)
            )
            found.processes[f"worker-{n}"] = worker.pid
        await healthy(found.url)
        yield found


async def healthy(base: str) -> None:
    deadline = time.monotonic() + READY_SECONDS
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{base}/healthz") as answer:
                    if answer.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"Switchboard at {base} did not become healthy")


# --- what the fake Slack saw ----------------------------------------------------------------


class SlackRecords:
    """The fake Slack's Web API calls and Socket Mode acks, read from its ``/_records`` page
    by page (each one once). Times are ``time.monotonic()`` of the fake: the same clock here."""

    def __init__(self, fake: Child) -> None:
        self.url = root_of(fake) + "/_records"
        self.calls: list[dict[str, Any]] = []
        self.acks: list[dict[str, Any]] = []

    async def update(self, session: aiohttp.ClientSession) -> None:
        since = {"calls": len(self.calls), "acks": len(self.acks)}
        async with session.get(self.url, params=since) as answer:
            found = await answer.json()
        self.calls += found["calls"]
        self.acks += found["acks"]


REPLY_METHODS = frozenset({"chat.postMessage", "chat.update"})
POLL_SECONDS = 0.05


async def wait_for_replies(
    records: SlackRecords,
    session: aiohttp.ClientSession,
    channels: set[str],
    timeout: float,
    since: int = 0,
) -> dict[str, float]:
    """When each of ``channels`` first got its reply at the fake (among the calls from the
    ``since``-th on): a post or an edit other than the "Writing…" placeholder. At the
    deadline, what came by then."""
    found: dict[str, float] = {}
    seen = since
    deadline = time.monotonic() + timeout
    while len(found) < len(channels) and time.monotonic() < deadline:
        await records.update(session)
        for call in records.calls[seen:]:
            if call["channel"] in channels and _is_reply(call):
                found.setdefault(call["channel"], call["at"])
        seen = len(records.calls)
        await asyncio.sleep(POLL_SECONDS)
    return found


def _is_reply(call: Mapping[str, Any]) -> bool:
    return bool(call["ok"]) and call["method"] in REPLY_METHODS and call["text"] != WRITING


# --- memory ---------------------------------------------------------------------------------


class Ticker:
    """Calls ``tick`` every ``interval`` seconds from a thread of its own while entered, so
    the benchmark's busy event loop cannot delay or skip it."""

    def __init__(self, interval: float, tick: Callable[[], None], name: str) -> None:
        self.interval = interval
        self.tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()


class PeakRSS:
    """The highest total resident memory of some process trees, one ``sample`` at a time
    (taken by a ``Ticker``)."""

    def __init__(self, roots: Mapping[str, int]) -> None:
        self.roots = dict(roots)
        self.peak: dict[str, int] = dict.fromkeys(self.roots, 0)
        self.peak_total = 0

    def sample(self) -> None:
        now = {name: _tree_rss(pid) for name, pid in self.roots.items()}
        for name, rss in now.items():
            self.peak[name] = max(self.peak[name], rss)
        self.peak_total = max(self.peak_total, sum(now.values()))

    def megabytes(self) -> dict[str, float]:
        return {name: round(rss / 2**20, 1) for name, rss in self.peak.items()}


def _tree_rss(root: int) -> int:
    try:
        process = psutil.Process(root)
        tree = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for member in tree:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} cores"


async def run_and_emit(
    name: str,
    measuring: Awaitable[dict[str, Any]],
    report: Callable[[dict[str, Any]], None],
    **settings: Any,
) -> None:
    """The machine's load around the measurement (other work shares these cores), the
    human-readable report, then the last line: figures, settings and load as JSON."""
    before = load()
    say(before)
    figures = await measuring
    after = load()
    say(after)
    report(figures)
    emit(name, **figures, **settings, load_before=before, load_after=after)
