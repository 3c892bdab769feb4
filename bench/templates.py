"""What rendering a template within bounds costs, per render (p50, microseconds).

Ours: ``bot.sandbox.Sandbox`` as workflows and ``/t`` use it. An ordinary template
(``{{ draft }}``, ``{{ fetch.body.entries|length }}``) is proven cheap and renders in this
process from a cached compilation (``fast``); one with a loop or a call goes to a child
process and back (``child``: a pickle out, a JSON reply in). The peer is what Switchboard
did before: Jinja's sandbox compiling the template on every render, in-process and
unbounded (``before``), and the same with the compilation cached (``cached``).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bench._common import emit, percentile, say
from bot.config import TemplateBounds
from bot.sandbox import Sandbox

VARIABLES: dict[str, Any] = {
    "draft": "Owls are quiet hunters. " * 20,
    "fetch": {"body": {"entries": list(range(50)), "title": "Owls"}},
    "topic": "owls",
}
ORDINARY = "Critique this draft about {{ topic }}:\n{{ draft }}\n({{ fetch.body.entries|length }})"
LOOPING = "{% for i in fetch.body.entries %}{{ i }},{% endfor %} about {{ topic|upper }}"


async def p50_us(render: Callable[[], Awaitable[Any]], repeats: int) -> float:
    for _ in range(min(50, repeats)):
        await render()  # warm caches and children
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        await render()
        samples.append(time.perf_counter() - started)
    return round(percentile(samples, 50) * 1e6, 1)


async def main(args: argparse.Namespace) -> None:
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    compiled = env.from_string(ORDINARY)

    async def before() -> str:
        return env.from_string(ORDINARY).render(**VARIABLES)

    async def cached() -> str:
        return compiled.render(**VARIABLES)

    async with Sandbox(TemplateBounds()) as sandbox:
        assert await sandbox.render(ORDINARY, VARIABLES) == await before()
        figures = {
            "before_p50_us": await p50_us(before, args.repeats),
            "cached_p50_us": await p50_us(cached, args.repeats),
            "fast_p50_us": await p50_us(lambda: sandbox.render(ORDINARY, VARIABLES), args.repeats),
            "child_p50_us": await p50_us(lambda: sandbox.render(LOOPING, VARIABLES), args.repeats),
        }
    say(
        f"ordinary template: {figures['fast_p50_us']} µs in-process (before: "
        f"{figures['before_p50_us']} µs compiling each time); "
        f"through a child: {figures['child_p50_us']} µs"
    )
    emit("templates", **figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2000)
    asyncio.run(main(parser.parse_args()))
