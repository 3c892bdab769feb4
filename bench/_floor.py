"""The floor beneath a reply: an arq worker whose job makes one chat completion with the
openai SDK and writes one row to Postgres, nothing else. ``bench.fanout`` runs it in a
process of its own (so its CPU time is counted apart) against the same Valkey, Postgres and
fake model as Switchboard:

    python -m bench._floor --redis URL --database URL --llm URL --queue NAME --max-jobs N

It says ``floor worker ready`` on stdout once it polls the queue.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any

import asyncpg
from arq import Worker, func
from openai import AsyncOpenAI

from bot.queue import deserialize, redis_settings, serialize

READY = "floor worker ready"
TABLE = "bench_floor"
MODEL = "fake-model"


async def answer(ctx: dict[str, Any], job: int, system: str, text: str) -> None:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
    reply = await ctx["openai"].chat.completions.create(model=MODEL, messages=messages)
    async with ctx["pool"].acquire() as conn:
        await conn.execute(
            f"INSERT INTO {TABLE} (job, answer) VALUES ($1, $2)",
            job,
            reply.choices[0].message.content,
        )


def plain_url(url: str) -> str:
    """asyncpg's own URL from SQLAlchemy's ``postgresql+asyncpg://``."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def prepare(database_url: str) -> None:
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, job int, answer text)"
        )
    finally:
        await conn.close()


def build(args: argparse.Namespace) -> Worker:
    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx["openai"] = AsyncOpenAI(base_url=args.llm, api_key="fake", max_retries=0)
        # Switchboard's own pool: 20 connections, 10 more when busy.
        ctx["pool"] = await asyncpg.create_pool(plain_url(args.database), max_size=30)
        print(READY, flush=True)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        await ctx["pool"].close()
        await ctx["openai"].close()

    return Worker(
        functions=[func(answer, name="answer", keep_result=0)],
        queue_name=args.queue,
        redis_settings=redis_settings(args.redis),
        job_serializer=serialize,
        job_deserializer=deserialize,
        poll_delay=args.poll_delay,
        max_jobs=args.max_jobs,
        keep_result=0,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        handle_signals=False,
        log_results=False,
    )


async def serve(args: argparse.Namespace) -> None:
    """Until SIGTERM (then the worker closes: its pool and client too)."""
    await prepare(args.database)
    worker = build(args)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    running = asyncio.create_task(worker.async_run())
    waiting = asyncio.create_task(stopping.wait())
    await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
    for task in (running, waiting):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await worker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--redis", "--database", "--llm", "--queue"):
        parser.add_argument(name, required=True)
    parser.add_argument("--max-jobs", type=int, required=True)
    parser.add_argument("--poll-delay", type=float, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
