"""Templates run within bounds: bombs are refused with a sentence naming the bound, in
seconds, away from the event loop; ordinary templates render as before."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from typing import Any

import pytest

from bot import replies
from bot.app import open_runtime
from bot.config import Settings, TemplateBounds
from bot.errors import BadTemplate, LimitExceeded
from bot.sandbox import Sandbox
from bot.sandbox_child import frame
from tests.support import loop_gaps

LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x"
DOUBLING = (
    "{% set ns = namespace(x='a') %}{% for i in range(60) %}{% set ns.x = ns.x ~ ns.x %}"
    "{% endfor %}{{ ns.x|length }}"
)
BOUNDS = TemplateBounds()


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(BOUNDS) as opened:
        yield opened


async def refusal(work: Awaitable[Any]) -> str:
    """The sentence a bound gave, which must come within seconds."""
    started = time.monotonic()
    with pytest.raises(LimitExceeded) as caught:
        await work
    assert time.monotonic() - started < 15
    return caught.value.text


def children(sandbox: Sandbox) -> list[int]:
    return [child.process.pid for child in [*sandbox._idle, *sandbox._busy]]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is as good as gone
        return stat.read().split(") ")[1][0] != "Z"


async def gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_nested_loops_stop_at_the_deadline_while_the_loop_keeps_serving(
    sandbox: Sandbox,
) -> None:
    async with loop_gaps() as gaps:
        text = await refusal(sandbox.render(LOOPS, {}))
    assert (
        text
        == replies.template_too_slow(2)
        == (
            "That template ran for more than 2 s and was stopped. "
            "Make it do less work: fewer or smaller loops."
        )
    )
    assert len(gaps) > 50 and max(gaps) < 1.0  # the loop ran on while the child looped


async def test_ranges_repetition_powers_and_doubling_are_refused_by_name(
    sandbox: Sandbox,
) -> None:
    too_big = replies.template_too_big(1_000_000)
    assert too_big.startswith("That template would make more than 1,000,000 characters")

    assert await refusal(sandbox.render("{{ range(10**9)|length }}", {})) == (
        "range() may count at most 100,000 items in a template; that one asked for 1,000,000,000."
    )
    assert await refusal(sandbox.render("{{ ('a' * 10**8)|length }}", {})) == too_big
    assert await refusal(sandbox.evaluate("[1] * 10**7", {})) == too_big
    assert await refusal(sandbox.render(DOUBLING, {})) == too_big
    assert await refusal(sandbox.render("{{ 7 ** 1000000 }}", {})) == (
        replies.template_number_too_big(4_300)
    )
    assert await refusal(sandbox.render("{{ 'ab'|center(10**7) }}", {})) == too_big


async def test_output_is_counted_while_it_is_made(sandbox: Sandbox) -> None:
    big = "x" * 400_000

    assert await refusal(sandbox.render("{{ big }}{{ big }}{{ big }}", {"big": big})) == (
        replies.template_too_big(1_000_000)
    )
    assert len(await sandbox.render("{{ big }}{{ big }}", {"big": big})) == 800_000


async def test_a_memory_bomb_is_refused_and_its_child_replaced(sandbox: Sandbox) -> None:
    text = await refusal(sandbox.render("{{ 'ab'|center(10**9)|length }}", {}))

    assert text == replies.template_too_much_memory(256)
    assert text.startswith("That template needed more than 256 MB of memory and was stopped.")
    assert await sandbox.render("{{ [1, 2]|sum }}", {}) == "3"


async def test_a_child_killed_mid_render_is_replaced(sandbox: Sandbox) -> None:
    assert await sandbox.render("{% for i in range(3) %}{{ i }}{% endfor %}", {}) == "012"
    [first] = children(sandbox)
    rendering = asyncio.create_task(sandbox.render(LOOPS, {}))
    while not sandbox._busy:
        await asyncio.sleep(0.01)
    os.kill(first, signal.SIGKILL)

    assert await refusal(rendering) == replies.template_crashed(-signal.SIGKILL)
    assert await sandbox.render("{% for i in range(3) %}{{ i }}{% endfor %}", {}) == "012"
    assert children(sandbox) != [first] and not alive(first)


async def test_ordinary_templates_give_what_they_gave_before(sandbox: Sandbox) -> None:
    now = datetime(2026, 3, 4, 5, 6, tzinfo=UTC)
    variables = {"who": "ada", "items": [1, 2, 3], "fetch": {"body": {"n": 2}}, "now": now}

    assert await sandbox.render("hello {{ who|upper }}", variables) == "hello ADA"
    assert await sandbox.evaluate("items", variables) == [1, 2, 3]
    assert await sandbox.evaluate("fetch.body.n > 1 and who == 'ada'", variables) is True
    assert await sandbox.evaluate("now", variables) is now  # in-process: the value itself
    assert await sandbox.evaluate("items|sum", variables) == 6  # in a child
    assert await sandbox.render("{{ now.strftime('%A') }}", variables) == "Wednesday"
    assert await sandbox.evaluate("{'a': items}", variables) == {"a": [1, 2, 3]}
    assert children(sandbox)  # the last ones needed a child


async def test_mistakes_are_explained_not_raised_raw(sandbox: Sandbox) -> None:
    cases = {
        "{{ missing }}": "'missing' is undefined",
        "{% for i in range(3) %}": "Unexpected end of template",
        "{{ 1 / 0 }}": "division by zero",
        "{{ (" * 400 + "1" + ") }}" * 400: "it nests too deeply",
        "{{ ''.__class__ }}": "access to attribute '__class__' of 'str' object is unsafe",
    }
    for template, reason in cases.items():
        with pytest.raises(BadTemplate) as caught:
            await sandbox.render(template, {})
        assert reason in caught.value.text, template


async def test_closing_stops_every_child() -> None:
    async with Sandbox(BOUNDS, processes=2) as sandbox:
        await asyncio.gather(
            sandbox.render("{{ [1]|sum }}", {}), sandbox.render("{{ [2]|sum }}", {})
        )
        pids = children(sandbox)
        busy = asyncio.create_task(sandbox.render(LOOPS, {}))
        await asyncio.sleep(0.2)
    assert len(pids) == 2
    assert all([await gone(pid) for pid in pids])
    with pytest.raises(LimitExceeded):
        await busy


async def test_leaving_the_runtime_stops_the_cores_children(settings: Settings) -> None:
    async with open_runtime(settings, config=False) as runtime:
        assert await runtime.core.sandbox.render("{{ [1, 2]|sum }}", {}) == "3"
        pids = children(runtime.core.sandbox)

    assert len(pids) == 1 and await gone(pids[0])


PARENT = """
import asyncio, sys
from bot.config import Settings, TemplateBounds
from bot.sandbox import Sandbox

async def main():
    sandbox = Sandbox(TemplateBounds(timeout=600))
    task = asyncio.create_task(sandbox.render(sys.argv[1], {}))
    while not sandbox._busy:
        await asyncio.sleep(0.01)
    print([c.process.pid for c in sandbox._busy][0], flush=True)
    await task

asyncio.run(main())
"""


async def test_a_child_does_not_outlive_its_parent() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", PARENT, LOOPS], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    ) as parent:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert alive(child)

        parent.kill()

    assert await gone(child)


def test_the_kernel_stops_a_child_its_parent_cannot() -> None:
    """With nobody to kill it at the deadline, RLIMIT_CPU ends a looping child."""
    from bot.sandbox import _CHILD

    with subprocess.Popen(
        [sys.executable, "-c", _CHILD, "256", "1000", "1", str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as child:
        assert child.stdin is not None
        child.stdin.write(frame(pickle.dumps(("text", LOOPS, {}))))
        child.stdin.flush()
        started = time.monotonic()

        assert child.wait(timeout=30) == -signal.SIGXCPU
        assert time.monotonic() - started < 15


async def test_children_yield_the_processor_to_the_process_they_serve(sandbox: Sandbox) -> None:
    assert await sandbox.render("{% for i in range(2) %}{{ i }}{% endfor %}", {}) == "01"
    [child] = children(sandbox)
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, child) == min(ours + 10, 19)
