"""Ack latency of the inbound path: ``receive()`` (persist + enqueue) under concurrent load.

5,000 messages from 500 authors in 500 conversations, 50 in flight at a time. The first
message of each conversation also creates its account and conversation row; the rest take
the common path. No worker runs: the jobs just queue. Targets: p99 ≤ 20 ms, ≥ 500 msgs/s.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Iterator

from bench._common import emit, latency_figures, quiet_logs, say, settings, temp_home
from bot.app import open_runtime
from bot.conversation import receive
from bot.core import Core
from bot.messages import Author, ConversationRef, IncomingMessage


def messages(prefix: str, n: int, conversations: int) -> Iterator[IncomingMessage]:
    for i in range(n):
        who = f"{prefix}-{i % conversations}"
        yield IncomingMessage(
            ref=ConversationRef(channel="web", chat=who),
            external_id=uuid.uuid4().hex,
            author=Author(who, f"User {who}"),
            text=f"message {i}: what is the weather like today?",
        )


async def blast(core: Core, batch: Iterator[IncomingMessage], concurrency: int) -> list[float]:
    """Send everything with ``concurrency`` callers; returns each call's latency in seconds."""
    latencies: list[float] = []

    async def caller() -> None:
        for incoming in batch:  # one shared iterator: each message is taken once
            started = time.perf_counter()
            await receive(core, incoming)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies


async def main(n: int, concurrency: int, conversations: int, warmup: int) -> None:
    quiet_logs()
    run = uuid.uuid4().hex[:6]
    with temp_home() as home:
        say(f"starting embedded services in {home}")
        async with open_runtime(settings(home)) as runtime:
            say(f"warming up with {warmup} messages")
            await blast(runtime.core, messages(f"warm{run}", warmup, 50), concurrency)
            say(f"sending {n} messages, {concurrency} at a time, over {conversations} conversations")
            started = time.perf_counter()
            latencies = await blast(runtime.core, messages(run, n, conversations), concurrency)
            elapsed = time.perf_counter() - started
            queued = await runtime.redis.zcard(runtime.core.settings.queue_name)
    figures = latency_figures(latencies)
    rate = round(n / elapsed, 1)
    say(f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, {rate} msgs/s, {queued} jobs queued")
    say(f"targets: p99 <= 20 ms ({'met' if figures['p99_ms'] <= 20 else 'MISSED'}), "
        f">= 500 msgs/s ({'met' if rate >= 500 else 'MISSED'})")
    emit("ingress", **figures, msgs_per_s=rate, n=n, concurrency=concurrency,
         conversations=conversations)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--conversations", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.concurrency, args.conversations, args.warmup))


if __name__ == "__main__":
    cli()
