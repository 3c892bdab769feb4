"""End-to-end reply latency, and raw arq's enqueue→start latency as the floor beneath it.

A message goes receive() → handle_message job → fake LLM (0 ms) → outbox → deliver job →
the web channel's Redis stream, through a real arq worker in this process (as in
`switchboard up`). Latency runs from just before receive() to the moment a reader blocked
on XREAD sees the reply. Messages arrive at a steady rate (20/s, at most 10 in flight), so
arrivals do not line up with the worker's polls. The floor: a bare arq Worker with one
no-op function, the same poll_delay, Redis and arrival pattern. Our path takes two jobs
(handle, then deliver), so it pays the poll twice. Target: p50 ≤ 100 ms.

A last closed-loop run (10 in flight, back to back) gives the throughput one process
reaches; latency there is 10 / throughput, whatever the path costs. Throughput moves with
whatever else runs on the machine; the CPU time spent per reply by every process involved
(this one, which is Switchboard's ingress and worker, the Postgres server and its backends,
Valkey) hardly does, so ``cpu_ms_per_reply`` (over that run) is the figure to compare. The
fake model runs in a process of its own; its CPU time is shown apart and not counted.

The web channel shows a reply while it is written, so the model's answer streams; with
``--no-stream`` it comes whole, as on channels that cannot show it before it is done.
``--profile FILE`` writes a cProfile of this process over the closed-loop run;
``--count-sql`` counts the SQL statements and Redis commands per reply.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from arq import Worker, func
from arq.connections import ArqRedis
from sqlalchemy import event, text

from adapters.local import parse_entry, stream_key
from bench._common import (
    CPUClock,
    Timed,
    closed_loop,
    emit,
    fake_llm_process,
    latency_figures,
    paced,
    quiet_logs,
    say,
    service_pids,
    settings,
    spent,
    temp_home,
)
from bot.app import Runtime, in_process_worker, open_runtime, running_worker
from bot.config import Settings
from bot.conversation import receive
from bot.messages import Author, ConversationRef, IncomingMessage
from bot.queue import deserialize, redis_settings, serialize

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


@contextlib.asynccontextmanager
async def conversing(runtime: Runtime, chats: list[str]) -> AsyncIterator[Timed]:
    """``one(i)``: send message i to a chat, return the time until its reply is on the stream."""
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
        yield one
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


STAGES = text(
    """
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY m.handled_at - m.created_at),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY l.latency_ms),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY o.sent_at - o.created_at)
      FROM messages m
      JOIN conversations c ON c.id = m.conversation_id
      JOIN llm_calls l ON l.message_id = m.id
      JOIN messages r ON r.reply_to_id = m.id
      JOIN outbox o ON o.message_id = r.id
     WHERE c.chat LIKE :prefix
    """
)


async def stages(runtime: Runtime, prefix: str) -> dict[str, Any]:
    """Where the time went, from the rows' own timestamps (medians, ms)."""
    async with runtime.core.sessions() as session:
        handled, llm, delivered = (await session.execute(STAGES, {"prefix": f"{prefix}%"})).one()
    return {
        "received_to_handled_p50_ms": round(handled.total_seconds() * 1000, 2),
        "llm_call_p50_ms": round(llm, 2),
        "handled_to_sent_p50_ms": round(delivered.total_seconds() * 1000, 2),
    }


async def saturation(
    runtime: Runtime, chats: list[str], args: argparse.Namespace, clock: CPUClock
) -> dict[str, Any]:
    """Replies per second with ``concurrency`` senders back to back, and the CPU they took."""
    async with conversing(runtime, chats) as one, counting(runtime, args) as counts:
        say(f"saturation: {args.n} messages, {args.concurrency} in flight back to back")
        with profiling(args.profile):
            before, started = clock.read(), asyncio.get_running_loop().time()
            await closed_loop(args.n, args.concurrency, one)
            elapsed, after = asyncio.get_running_loop().time() - started, clock.read()
    return {
        "saturated_replies_per_s": round(int(args.n) / elapsed, 1),
        **cpu_figures(spent(before, after), args.n),
        **{f"{name}_per_reply": round(found / args.n, 2) for name, found in counts.items()},
    }


def cpu_figures(seconds: dict[str, float], replies: int, prefix: str = "") -> dict[str, Any]:
    """CPU ms per reply: all of Switchboard, Postgres and Valkey, then each apart."""
    per_reply = {name: round(s * 1000 / replies, 2) for name, s in seconds.items()}
    ours = sum(v for k, v in per_reply.items() if k != "fake_llm")
    return {
        f"{prefix}cpu_ms_per_reply": round(ours, 2),
        f"{prefix}cpu_ms_per_reply_by_process": per_reply,
    }


@contextlib.contextmanager
def profiling(path: str | None) -> Iterator[None]:
    if path is None:
        yield
        return
    # CPU time, not wall time: a send that wakes the server on the other core, or a pause
    # while other work has the CPU, would otherwise look like cost of ours.
    profile = cProfile.Profile(time.process_time)
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        profile.dump_stats(path)
        say(f"profile written to {path}")


@contextlib.asynccontextmanager
async def counting(runtime: Runtime, args: argparse.Namespace) -> AsyncIterator[dict[str, int]]:
    """With ``--count-sql``: SQL statements this process sent, and commands Valkey ran."""
    counts: dict[str, int] = {}
    if not args.count_sql:
        yield counts
        return
    statements: collections.Counter[str] = collections.Counter()

    def count(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        statements[" ".join(statement.split())[:160]] += 1

    def checkout(*args: Any) -> None:
        statements["(connection checked out of the pool)"] += 1

    engine = runtime.core.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    event.listen(engine.pool, "checkout", checkout)
    await runtime.redis.config_resetstat()
    transactions = await _transactions(runtime)
    try:
        yield counts
    finally:
        event.remove(engine, "before_cursor_execute", count)
        event.remove(engine.pool, "checkout", checkout)
        commands = await runtime.redis.info("commandstats")
        checkouts = statements.pop("(connection checked out of the pool)", 0)
        counts["sql_statements"] = sum(statements.values())
        counts["pool_checkouts"] = checkouts
        # Each statement outside a transaction is one too: what the server sees.
        counts["pg_transactions"] = await _transactions(runtime) - transactions
        counts["redis_commands"] = sum(int(v["calls"]) for v in commands.values())
        for statement, found in statements.most_common():
            say(f"  sql {found / args.n:6.2f}/reply  {statement}")
        for name, value in sorted(commands.items(), key=lambda kv: -int(kv[1]["calls"])):
            say(f"  redis {int(value['calls']) / args.n:6.2f}/reply  {name}")


async def _transactions(runtime: Runtime) -> int:
    async with runtime.core.autocommit.connect() as conn:
        found = await conn.scalar(
            text(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database"
                " WHERE datname = current_database()"
            )
        )
    return int(found)


async def ours(runtime: Runtime, args: argparse.Namespace, clock: CPUClock) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    async with in_process_worker(runtime) as worker:
        async with conversing(runtime, [f"warm-{run}"]) as one:
            say(f"warming up with {args.warmup} messages (the first one imports litellm)")
            await closed_loop(args.warmup, 1, one)
        async with conversing(runtime, [f"{run}-{k}" for k in range(args.conversations)]) as one:
            say(f"{args.n} messages at {args.rate:g}/s (at most {args.concurrency} in flight)")
            before = clock.read()
            latencies = await paced(args.n, args.rate, args.concurrency, one)
            paced_cpu = cpu_figures(spent(before, clock.read()), args.n, "paced_")
        figures = await stages(runtime, f"{run}-")
        sat_chats = [f"sat-{run}-{k}" for k in range(args.conversations)]
        figures |= await saturation(runtime, sat_chats, args, clock)
    figures["paced_cpu_ms_per_reply"] = paced_cpu["paced_cpu_ms_per_reply"]
    return {"latencies": latencies, "jobs_failed": worker.current.jobs_failed, **figures}


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


async def arq_floor(
    runtime: Runtime, args: argparse.Namespace, clock: CPUClock
) -> tuple[list[float], float]:
    """Latencies of no-op jobs at the paced rate, then CPU ms per job back to back."""
    loop, queue = asyncio.get_running_loop(), f"{runtime.core.settings.queue_name}:floor"
    worker, arrivals = noop_worker(runtime.endpoints.redis_url, queue, args.poll_delay)

    async def one(i: int) -> float:
        job_id = uuid.uuid4().hex
        started = loop.time()
        await runtime.redis.enqueue_job("noop", _job_id=job_id, _queue_name=queue)
        return await arrivals.wait(job_id) - started

    async with running_worker(worker):
        await closed_loop(args.warmup, 1, one)
        latencies = await paced(args.n, args.rate, args.concurrency, one)
        before = clock.read()
        await closed_loop(args.n, args.concurrency, one)
        per_job = cpu_figures(spent(before, clock.read()), args.n)["cpu_ms_per_reply"]
    return latencies, per_job


# --- the run --------------------------------------------------------------------------------


async def measure(args: argparse.Namespace) -> tuple[dict[str, Any], list[float]]:
    with fake_llm_process() as (llm_url, llm_pid), temp_home() as home:
        say(f"starting embedded services in {home}; fake LLM at {llm_url}")
        config = settings(
            home,
            model="openai/fake-model",
            llm_api_base=llm_url,
            poll_delay=args.poll_delay,
            stream_replies=args.stream,
        )
        async with open_runtime(config) as runtime:
            clock = CPUClock(
                {**service_pids(home), "fake_llm": llm_pid, "switchboard": os.getpid()}
            )
            found = await ours(runtime, args, clock)
            say(f"arq floor: {args.n} no-op jobs at {args.rate:g}/s")
            floor, found["arq_floor_cpu_ms_per_job"] = await arq_floor(runtime, args, clock)
    return found, floor


async def main(args: argparse.Namespace) -> None:
    quiet_logs()
    found, floor = await measure(args)
    figures, base = latency_figures(found.pop("latencies")), latency_figures(floor)
    ratio = round(figures["p50_ms"] / base["p50_ms"], 2)
    if found["jobs_failed"]:
        say(f"WARNING: {found['jobs_failed']} worker jobs failed (see the log above)")
    say(
        f"reply: p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms "
        f"(target p50 <= 100 ms: {'met' if figures['p50_ms'] <= 100 else 'MISSED'})"
    )
    say(
        f"arq floor: p50 {base['p50_ms']} ms, p99 {base['p99_ms']} ms; ratio p50 {ratio}; "
        f"{found['arq_floor_cpu_ms_per_job']} ms CPU per no-op job (a reply takes two jobs)"
    )
    say(
        f"stages (p50): received→handled {found['received_to_handled_p50_ms']} ms "
        f"(LLM call {found['llm_call_p50_ms']} ms), handled→sent "
        f"{found['handled_to_sent_p50_ms']} ms; saturated "
        f"{found['saturated_replies_per_s']} replies/s"
    )
    say(
        f"CPU per reply (saturated): {found['cpu_ms_per_reply']} ms "
        f"{found['cpu_ms_per_reply_by_process']} (target <= 10 ms: "
        f"{'met' if found['cpu_ms_per_reply'] <= 10 else 'MISSED'}); "
        f"at {args.rate:g}/s: {found['paced_cpu_ms_per_reply']} ms"
    )
    emit(
        "reply",
        **figures,
        arq_floor_p50_ms=base["p50_ms"],
        arq_floor_p99_ms=base["p99_ms"],
        ratio_p50=ratio,
        **found,
        n=args.n,
        rate=args.rate,
        concurrency=args.concurrency,
        poll_delay=args.poll_delay,
        streamed=args.stream,
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description="End-to-end reply latency vs raw arq.")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--rate", type=float, default=20.0, help="messages per second")
    parser.add_argument("--concurrency", type=int, default=10, help="most in flight")
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=20)
    default_poll = Settings.model_fields["poll_delay"].default
    parser.add_argument("--poll-delay", type=float, default=default_poll)
    parser.add_argument(
        "--no-stream",
        dest="stream",
        action="store_false",
        help="replies whole, as on a channel that cannot show them while written",
    )
    parser.add_argument("--profile", metavar="FILE", help="cProfile the closed-loop run")
    parser.add_argument("--count-sql", action="store_true", help="SQL and Redis per reply")
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
