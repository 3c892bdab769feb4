"""End-to-end reply latency, and raw arq's enqueue→start latency as the floor beneath it.

A message goes receive() → handle_message job → fake LLM (0 ms) → outbox → deliver job →
the web channel's Redis stream, through a real arq worker in this process (as in
`switchboard up`). Latency runs from just before receive() to the moment a reader blocked
on XREAD sees the reply. The floor: a bare arq Worker with one no-op function, the same
poll_delay, Redis and concurrency. Our path takes two jobs, so it pays the poll twice.
Target: p50 ≤ 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from arq import Worker, func
from arq.connections import ArqRedis

from adapters.local import parse_entry, stream_key
from bench._common import emit, latency_figures, quiet_logs, say, settings, temp_home
from bot.app import Runtime, open_runtime
from bot.config import Settings
from bot.conversation import receive
from bot.messages import Author, ConversationRef, IncomingMessage
from bot.queue import deserialize, redis_settings, serialize
from tests.fakes.llm_server import FakeLLM
from worker.settings import build_worker

REPLY_TIMEOUT = 30.0


class Arrivals:
    """When each awaited thing arrived (loop time), whichever side gets there first."""

    def __init__(self) -> None:
        self._futures: dict[Any, asyncio.Future[float]] = {}

    def _future(self, key: Any) -> asyncio.Future[float]:
        if key not in self._futures:
            self._futures[key] = asyncio.get_running_loop().create_future()
        return self._futures[key]

    def arrived(self, key: Any) -> None:
        self._future(key).set_result(asyncio.get_running_loop().time())

    async def wait(self, key: Any) -> float:
        return await asyncio.wait_for(self._future(key), REPLY_TIMEOUT)


async def closed_loop(
    n: int, concurrency: int, one: Callable[[int], Awaitable[float]]
) -> list[float]:
    """``concurrency`` senders, each waiting for its answer before sending again."""
    pending = iter(range(n))
    latencies: list[float] = []

    async def sender() -> None:
        for i in pending:
            latencies.append(await one(i))

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return latencies


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    """Run an arq worker in this loop; on exit let its jobs finish, then stop it.

    arq's ``close()`` cancels jobs still running and then re-raises their CancelledError.
    """
    task = asyncio.create_task(worker.async_run())
    try:
        yield worker
    finally:
        worker.allow_pick_jobs = False
        while not all(t.done() for t in worker.tasks.values()):
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.close()


# --- our path -------------------------------------------------------------------------------


async def read_replies(redis: ArqRedis, chats: list[str], arrivals: Arrivals) -> None:
    after = {stream_key("web", chat): "0-0" for chat in chats}
    while True:
        for key, entries in await redis.xread(after, block=1000):  # type: ignore[arg-type]
            for entry_id, fields in entries:
                after[key.decode()] = entry_id.decode()
                entry = parse_entry(entry_id, fields)
                if entry.out is not None:
                    arrivals.arrived(entry.out.in_reply_to)


async def replies(runtime: Runtime, n: int, concurrency: int, chats: list[str]) -> list[float]:
    loop, arrivals = asyncio.get_running_loop(), Arrivals()

    async def one(i: int) -> float:
        chat = chats[i % len(chats)]
        incoming = IncomingMessage(
            ref=ConversationRef(channel="web", chat=chat),
            external_id=uuid.uuid4().hex,
            author=Author(chat, chat),
            text=f"question {i}: what is on my calendar today?",
        )
        started = loop.time()
        received = await receive(runtime.core, incoming)
        return await arrivals.wait(received.message_id) - started

    reader = asyncio.create_task(read_replies(runtime.redis, chats, arrivals))
    try:
        return await closed_loop(n, concurrency, one)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


# --- the floor ------------------------------------------------------------------------------


def noop_worker(redis_url: str, queue: str, poll_delay: float) -> tuple[Worker, Arrivals]:
    arrivals = Arrivals()

    async def noop(ctx: dict[str, Any]) -> None:
        arrivals.arrived(ctx["job_id"])

    worker = Worker(
        functions=[func(noop, name="noop", keep_result=0)],
        queue_name=queue,
        redis_settings=redis_settings(redis_url),
        job_serializer=serialize,
        job_deserializer=deserialize,
        poll_delay=poll_delay,
        keep_result=0,
        handle_signals=False,
        log_results=False,
    )
    return worker, arrivals


async def arq_floor(runtime: Runtime, n: int, concurrency: int) -> list[float]:
    loop, queue = asyncio.get_running_loop(), f"{runtime.core.settings.queue_name}:floor"
    poll_delay = runtime.core.settings.poll_delay
    worker, arrivals = noop_worker(runtime.endpoints.redis_url, queue, poll_delay)
    async with running(worker):

        async def one(i: int) -> float:
            job_id = uuid.uuid4().hex
            started = loop.time()
            await runtime.redis.enqueue_job("noop", _job_id=job_id, _queue_name=queue)
            return await arrivals.wait(job_id) - started

        await closed_loop(concurrency, concurrency, one)  # the worker's first poll
        return await closed_loop(n, concurrency, one)


# --- the run --------------------------------------------------------------------------------


async def ours(runtime: Runtime, args: argparse.Namespace) -> tuple[list[float], int]:
    """Reply latencies through the product's worker, and how many of its jobs failed."""
    run = uuid.uuid4().hex[:6]
    chats = [f"{run}-{k}" for k in range(args.conversations)]
    worker = build_worker(runtime.core, runtime.endpoints.redis_url, handle_signals=False)
    async with running(worker):
        say(f"warming up with {args.warmup} messages (the first one imports litellm)")
        await replies(runtime, args.warmup, 1, [f"warm-{run}"])
        say(f"{args.n} messages, {args.concurrency} in flight, {len(chats)} chats")
        latencies = await replies(runtime, args.n, args.concurrency, chats)
    return latencies, worker.jobs_failed


async def measure(args: argparse.Namespace) -> tuple[list[float], list[float], int]:
    async with FakeLLM() as llm:
        with temp_home() as home:
            say(f"starting embedded services in {home}; fake LLM at {llm.url}")
            config = settings(
                home, model="openai/fake-model", llm_api_base=llm.url, poll_delay=args.poll_delay
            )
            async with open_runtime(config) as runtime:
                latencies, failed = await ours(runtime, args)
                say(f"arq floor: {args.n} no-op jobs, {args.concurrency} in flight")
                floor = await arq_floor(runtime, args.n, args.concurrency)
    return latencies, floor, failed


async def main(args: argparse.Namespace) -> None:
    quiet_logs()
    latencies, floor, failed = await measure(args)
    if failed:
        say(f"WARNING: {failed} worker jobs failed (see the log above)")
    figures, base = latency_figures(latencies), latency_figures(floor)
    ratio = round(figures["p50_ms"] / base["p50_ms"], 2)
    say(
        f"reply: p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms "
        f"(target p50 <= 100 ms: {'met' if figures['p50_ms'] <= 100 else 'MISSED'})"
    )
    say(f"arq floor: p50 {base['p50_ms']} ms, p99 {base['p99_ms']} ms; ratio p50 {ratio}")
    emit(
        "reply",
        **figures,
        arq_floor_p50_ms=base["p50_ms"],
        arq_floor_p99_ms=base["p99_ms"],
        ratio_p50=ratio,
        jobs_failed=failed,
        n=args.n,
        concurrency=args.concurrency,
        poll_delay=args.poll_delay,
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description="End-to-end reply latency vs raw arq.")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--poll-delay", type=float, default=Settings.model_fields["poll_delay"].default
    )
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
