"""What the benchmarks share: a throwaway Switchboard home, percentiles, the final JSON line.

Every benchmark starts the same embedded Postgres and Valkey the product uses, in a fresh
temporary home (or joins DATABASE_URL / REDIS_URL when they are set), and releases them at
the end. Its last line on stdout is one JSON object of figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

# Before anything imports litellm: never fetch its price map from the internet.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from bot.config import Settings
from bot.services import PID_FILES


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def latency_figures(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max in milliseconds."""
    return {
        "p50_ms": ms(percentile(seconds, 50)),
        "p99_ms": ms(percentile(seconds, 99)),
        "max_ms": ms(max(seconds)),
    }


Timed = Callable[[int], Awaitable[float]]  # does item i, returns its latency in seconds


async def closed_loop(n: int, concurrency: int, one: Timed) -> list[float]:
    """``concurrency`` callers, each starting its next item when the last one is done."""
    pending = iter(range(n))  # shared by the callers: each item is taken once
    latencies = [0.0] * n

    async def caller() -> None:
        for i in pending:
            latencies[i] = await one(i)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies


async def paced(n: int, rate: float, limit: int, one: Timed) -> list[float]:
    """Item i is due at i/rate s (at most ``limit`` open); its latency counts from then."""
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(limit)
    latencies = [0.0] * n

    async def call(i: int, due: float) -> None:
        try:
            late = loop.time() - due
            latencies[i] = late + await one(i)
        finally:
            slots.release()

    calls = []
    start = loop.time()
    for i in range(n):
        due = start + i / rate
        await asyncio.sleep(due - loop.time())
        await slots.acquire()
        calls.append(asyncio.create_task(call(i, due)))
    await asyncio.gather(*calls)
    return latencies


@contextlib.contextmanager
def temp_home() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-") as path:
        yield Path(path)


def settings(home: Path, **fields: Any) -> Settings:
    """Settings for a benchmark run: its own queue, external servers only when configured."""
    fields.setdefault("queue_name", f"switchboard:bench:{uuid.uuid4().hex[:8]}")
    return Settings(
        home=home,
        config_dir=home / "config",
        database_url=os.environ.get("DATABASE_URL"),
        redis_url=os.environ.get("REDIS_URL"),
        **fields,
    )


def quiet_logs() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def say(line: str) -> None:
    print(line, flush=True)


def emit(name: str, **figures: Any) -> None:
    """The benchmark's last line: one JSON object."""
    print(json.dumps({"name": name, **figures}), flush=True)


# --- CPU time -------------------------------------------------------------------------------


class CPUClock:
    """CPU seconds (user + system) spent so far by named process trees.

    Unlike throughput, CPU time barely moves when other work shares the machine, so it is
    the figure to compare across runs. Each tree is its root, the root's live descendants,
    and the descendants it has already reaped (Postgres's backends that came and went).
    A pid is counted in the first tree that holds it: name the servers before the process
    that may have started them.
    """

    def __init__(self, roots: Mapping[str, int]) -> None:
        self.roots = dict(roots)

    def read(self) -> dict[str, float]:
        counted: set[int] = set()
        return {name: _tree_seconds(pid, counted) for name, pid in self.roots.items()}


def _tree_seconds(root: int, counted: set[int]) -> float:
    try:
        process = psutil.Process(root)
        times = process.cpu_times()
        total: float = times.user + times.system + times.children_user + times.children_system
        below = process.children(recursive=True)
    except psutil.Error:  # gone: nothing more to count
        return 0.0
    counted.add(root)
    for child in below:
        if child.pid in counted:
            continue
        counted.add(child.pid)
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            total += times.user + times.system
    return total


def spent(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


def service_pids(home: Path) -> dict[str, int]:
    """The embedded servers' main processes in ``home`` (none for external URLs)."""
    found = {}
    for name, relative in PID_FILES.items():
        with contextlib.suppress(OSError, ValueError, IndexError):
            found[name] = int((home / relative).read_text().split()[0])
    return found


@contextlib.contextmanager
def fake_llm_process() -> Iterator[tuple[str, int]]:
    """The fake OpenAI-compatible server in a process of its own (its URL and pid), so its
    CPU time is not counted as Switchboard's."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.llm_server", "--port", str(free_port())],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        if not url:
            raise RuntimeError("the fake LLM server did not start")
        yield url, child.pid
    finally:
        child.terminate()
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
