"""Ack latency of the inbound path: ``receive()`` (persist + enqueue) under concurrent load.

5,000 messages from 500 authors in 500 conversations. Every tenth message opens a new
conversation (so it also creates the account and the conversation row); the others go to a
random conversation already open. No worker runs: the jobs just queue.
Targets: p99 ≤ 20 ms, ≥ 500 msgs/s.

The closed loop keeps 50 calls in flight, so its latency is 50 / throughput (Little's law):
it cannot show a 20 ms p99 below 2,500 msgs/s. A second, paced run offers 500 msgs/s (at
most 50 in flight) and times each call from its scheduled start, waits included.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import uuid

from bench._common import (
    Timed,
    closed_loop,
    emit,
    latency_figures,
    ms,
    paced,
    percentile,
    quiet_logs,
    say,
    settings,
    temp_home,
)
from bot.app import open_runtime
from bot.conversation import receive
from bot.core import Core
from bot.messages import Author, ConversationRef, IncomingMessage


def messages(prefix: str, n: int, conversations: int) -> list[IncomingMessage]:
    """Message ``i`` opens conversation ``i // every`` when ``i % every == 0``."""
    rng = random.Random(n)
    every = max(1, n // conversations)
    batch = []
    for i in range(n):
        opened = min(i // every, conversations - 1)
        who = f"{prefix}-{opened if i % every == 0 else rng.randrange(opened + 1)}"
        batch.append(
            IncomingMessage(
                ref=ConversationRef(channel="web", chat=who),
                external_id=uuid.uuid4().hex,
                author=Author(who, f"User {who}"),
                text=f"message {i}: what is the weather like today?",
            )
        )
    return batch


def timed_receive(core: Core, batch: list[IncomingMessage]) -> Timed:
    loop = asyncio.get_running_loop()

    async def one(i: int) -> float:
        started = loop.time()
        await receive(core, batch[i])
        return loop.time() - started

    return one


async def measure(args: argparse.Namespace) -> dict[str, float]:
    n, concurrency, conversations = args.n, args.concurrency, args.conversations
    run = uuid.uuid4().hex[:6]
    with temp_home() as home:
        say(f"starting embedded services in {home}")
        async with open_runtime(settings(home)) as runtime:
            core, loop = runtime.core, asyncio.get_running_loop()
            say(f"warming up with {args.warmup} messages")
            warm = messages(f"w{run}", args.warmup, 50)
            await closed_loop(len(warm), concurrency, timed_receive(core, warm))
            say(f"closed loop: {n} messages, {concurrency} in flight, {conversations} chats")
            batch = messages(f"c{run}", n, conversations)
            start = loop.time()
            closed = await closed_loop(n, concurrency, timed_receive(core, batch))
            elapsed = loop.time() - start
            say(f"paced: {n} messages at {args.rate:g} msgs/s, at most {concurrency} in flight")
            batch = messages(f"p{run}", n, conversations)
            steady = await paced(n, args.rate, concurrency, timed_receive(core, batch))
    every = max(1, n // conversations)
    return {
        **latency_figures(closed),
        "msgs_per_s": round(n / elapsed, 1),
        "new_conversation_p50_ms": ms(percentile(closed[::every], 50)),
        "paced_p50_ms": ms(percentile(steady, 50)),
        "paced_p99_ms": ms(percentile(steady, 99)),
    }


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


async def main(args: argparse.Namespace) -> None:
    quiet_logs()
    figures = await measure(args)
    say(
        f"closed loop: p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, "
        f"{figures['msgs_per_s']} msgs/s (new conversations p50 "
        f"{figures['new_conversation_p50_ms']} ms)"
    )
    say(
        f"paced at {args.rate:g}/s: p50 {figures['paced_p50_ms']} ms, "
        f"p99 {figures['paced_p99_ms']} ms"
    )
    say(
        f"targets: >= 500 msgs/s {verdict(figures['msgs_per_s'] >= 500)}; p99 <= 20 ms: "
        f"closed loop {verdict(figures['p99_ms'] <= 20)}, "
        f"paced {verdict(figures['paced_p99_ms'] <= 20)}"
    )
    emit(
        "ingress",
        **figures,
        n=args.n,
        concurrency=args.concurrency,
        conversations=args.conversations,
        paced_rate=args.rate,
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description="Ack latency of receive() under load.")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--conversations", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--rate", type=float, default=500.0, help="offered load of the paced run")
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
