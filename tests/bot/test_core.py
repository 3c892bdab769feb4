"""The core's lazily built parts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A fresh interpreter (litellm is imported already in the test process): record on which
# thread litellm is imported when the gateway loads, while the event loop keeps ticking.
LOAD = """
import asyncio, importlib.abc, sys, threading
seen = []

class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "litellm":
            seen.append(threading.current_thread().name)
        return None

sys.meta_path.insert(0, Spy())
from bot.config import Settings
from bot.core import Core

async def main():
    core = Core(settings=Settings(), engine=None, sessions=None, queue=None)
    ticks = 0
    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1
    ticker = asyncio.create_task(tick())
    await asyncio.gather(core.load_llm(), core.load_llm())
    ticker.cancel()
    print((seen, ticks > 0, "litellm" in sys.modules))

asyncio.run(main())
"""


def test_the_model_gateway_loads_off_the_event_loop_once() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LOAD],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    threads, ticked, loaded = eval(done.stdout)
    assert len(threads) == 1 and threads[0] != "MainThread"
    assert ticked and loaded
