"""1,000 conversations at once, each waiting a second for its model: are all answered, and
what does it cost?

Half come from Slack: DMs from 500 people, each in their own DM channel, pushed by the fake
Slack over Socket Mode (the way most self-hosted installs connect: no public URL; the HTTP
door has its own benchmark, ``bench.slack_ack``). Half come from the web chat: 500 browsers,
each with its own cookie, posting to /api/messages and listening on /api/events. The fake
model (a process of its own) answers every request after ``--latency`` seconds. Switchboard
is `switchboard up` (Socket Mode, web chat, worker) in one process, or with ``--workers N``
an ingress-only `up` and N worker processes.

A Slack reply is delivered when its text (not the "Writing…" placeholder) reaches the fake's
Web API; a web reply when its browser's event stream shows it. The clock runs from the
first message sent to the last reply delivered. CPU ms per reply counts Switchboard's
processes, Postgres (with its backends) and Valkey over that time; peak RSS is Switchboard's
processes' (Postgres and Valkey apart).

The floor, in the same run, once Switchboard has stopped: the same number of arq jobs, each
making the same model request (the persona's system prompt and the message) with the openai
SDK and writing one row to Postgres, in a worker process of its own (``bench._floor``) with
the same poll delay and a slot for every job (it holds no connection while the model
answers), on the same Valkey, Postgres and fake model.
Target: every reply delivered, wall ≤ 5 s on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench import _floor
from bench._common import CPUClock, percentile, say, service_pids, spent, temp_home
from bench._stack import (
    Child,
    PeakRSS,
    SlackRecords,
    Ticker,
    child,
    fake_llm,
    fake_slack,
    held_services,
    root_of,
    run_and_emit,
    switchboard,
    switchboard_env,
    wait_for_replies,
)
from bench.hostile import Browser
from bot import services
from bot.config import Settings
from bot.queue import connect
from tests.fakes.slack_payloads import APP_TOKEN, BOT_TOKEN, dm

REPLY_TIMEOUT = 120.0
OPENING = 50  # browsers opened at a time
WARMUP = 5  # conversations of each kind answered before the clock starts
RSS_INTERVAL = 0.05  # seconds between memory samples


def question(i: int) -> str:
    return f"question {i}: what is on my calendar today?"


class SlackPeople:
    """People who DM the bot, each in a DM channel of their own."""

    def __init__(self, fake: Child, n: int) -> None:
        self.url = root_of(fake) + "/_socket/events"
        self.prefix = uuid.uuid4().hex[:6].upper()
        self.channels = [f"D{self.prefix}{i:05d}" for i in range(n)]

    async def send(self, session: aiohttp.ClientSession) -> None:
        events = [
            dm(question(i), user=f"U{self.prefix}{i:05d}", channel=channel)
            for i, channel in enumerate(self.channels)
        ]
        async with session.post(self.url, json={"events": events}) as answer:
            answer.raise_for_status()


class WebPeople:
    """Browsers of the web chat, each with its own cookie and event stream."""

    def __init__(self, browsers: list[Browser]) -> None:
        self.browsers = browsers
        self.sent: list[int] = []  # the message id each browser posted

    @classmethod
    async def open(cls, base: str, n: int) -> WebPeople:
        browsers: list[Browser] = []
        for start in range(0, n, OPENING):
            count = min(OPENING, n - start)
            browsers += await asyncio.gather(*(Browser.open(base) for _ in range(count)))
        return cls(browsers)

    async def send(self) -> None:
        posted = await asyncio.gather(*(b.post(question(i)) for i, b in enumerate(self.browsers)))
        self.sent = [body["message_id"] for _, body in posted]

    async def replies(self, timeout: float) -> list[float]:
        """When each reply arrived (time.monotonic()), for those that did by the deadline."""

        async def one(browser: Browser, message_id: int) -> float | None:
            with contextlib.suppress(TimeoutError):
                await browser.reply(message_id, timeout)
                return browser.arrived[message_id]
            return None

        pairs = zip(self.browsers, self.sent, strict=True)
        found = await asyncio.gather(*(one(b, m) for b, m in pairs))
        return [at for at in found if at is not None]

    async def close(self) -> None:
        await asyncio.gather(*(browser.close() for browser in self.browsers))


async def conversations(
    slack: Child, base: str, n_slack: int, n_web: int
) -> tuple[list[float], list[float], float]:
    """Both halves at once; the delivery times of each, and when the first was sent."""
    people, records = SlackPeople(slack, n_slack), SlackRecords(slack)
    web = await WebPeople.open(base, n_web)
    try:
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            await asyncio.gather(people.send(session), web.send())
            slack_replies, web_replies = await asyncio.gather(
                wait_for_replies(records, session, set(people.channels), REPLY_TIMEOUT),
                web.replies(REPLY_TIMEOUT),
            )
    finally:
        await web.close()
    return list(slack_replies.values()), web_replies, started


async def ours(
    args: argparse.Namespace, home: Path, endpoints: services.Endpoints, slack: Child, llm: Child
) -> dict[str, Any]:
    env = switchboard_env(
        home,
        llm,
        {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_APP_TOKEN": APP_TOKEN,
            "SWITCHBOARD_SLACK_API_URL": "http://" + slack.address,
            "SWITCHBOARD_MAX_JOBS": str(args.max_jobs),
            "SWITCHBOARD_DB_POOL_SIZE": str(args.db_pool),
            "SWITCHBOARD_STREAM_REPLIES": str(args.stream).lower(),
        },
    )
    async with switchboard(env, workers=args.workers, profile=args.profile) as up:
        say(f"warm-up: {WARMUP} Slack DMs and {WARMUP} web messages")
        await conversations(slack, up.url, WARMUP, WARMUP)
        clock = CPUClock({**service_pids(home), **up.processes})
        since, pg_limit = await database_now(endpoints.database_url)
        say(f"{args.slack} Slack DMs (Socket Mode) and {args.web} web messages at once")
        rss = PeakRSS(up.processes)
        with Ticker(RSS_INTERVAL, rss.sample, "rss-sampler"):
            before = clock.read()
            slack_at, web_at, started = await conversations(slack, up.url, args.slack, args.web)
            cpu = spent(before, clock.read())
    delivered = len(slack_at) + len(web_at)
    wall = max([*slack_at, *web_at], default=started) - started
    return {
        "delivered": delivered,
        "expected": args.slack + args.web,
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(rss.peak_total / 2**20, 1),
        "replies_per_s": round(delivered / wall, 1) if wall else 0.0,
        **cpu_figures(cpu, delivered),
        "slack": arrivals(slack_at, started),
        "web": arrivals(web_at, started),
        "peak_rss_mb_by_process": rss.megabytes(),
        "stages_p50_max_s": await stages(endpoints.database_url, since),
        "pg_max_connections": pg_limit,
    }


def arrivals(times: Sequence[float], started: float) -> dict[str, Any]:
    """How many replies came, and when (seconds from the first message sent)."""
    after = [at - started for at in times] or [0.0]
    return {
        "delivered": len(times),
        "p50_s": round(percentile(after, 50), 2),
        "p99_s": round(percentile(after, 99), 2),
        "last_s": round(max(after), 2),
    }


STAGES = """
    SELECT m.channel,
           extract(epoch FROM m.created_at - $1) AS stored,
           extract(epoch FROM l.created_at - m.created_at) AS to_model,
           l.latency_ms / 1000 AS model,
           extract(epoch FROM m.handled_at - l.created_at) - l.latency_ms / 1000 AS to_handled,
           extract(epoch FROM o.sent_at - m.handled_at) AS to_sent
      FROM messages m
      JOIN llm_calls l ON l.message_id = m.id
      JOIN messages r ON r.reply_to_id = m.id
      JOIN outbox o ON o.message_id = r.id
     WHERE m.direction = 'in' AND m.created_at >= $1 AND o.sent_at IS NOT NULL
"""
STAGE_NAMES = ("stored", "to_model", "model", "to_handled", "to_sent")


async def stages(database_url: str, since: datetime) -> dict[str, Any]:
    """Where a reply's time went, per channel, from the rows' own timestamps (seconds,
    p50 and max): stored (after the first message was), waiting until the model call began
    (queue, job slot, the conversation's lock), the model, until the reply was committed,
    and until it was sent."""
    conn = await asyncpg.connect(_floor.plain_url(database_url))
    try:
        rows = await conn.fetch(STAGES, since)
    finally:
        await conn.close()
    found: dict[str, Any] = {}
    for channel in sorted({row["channel"] for row in rows}):
        mine = [row for row in rows if row["channel"] == channel]
        found[channel] = {
            name: [
                round(percentile([float(row[name]) for row in mine], 50), 3),
                round(max(float(row[name]) for row in mine), 3),
            ]
            for name in STAGE_NAMES
        }
    return found


async def database_now(database_url: str) -> tuple[datetime, int]:
    """The server's clock (rows are stamped by it) and its connection limit."""
    conn = await asyncpg.connect(_floor.plain_url(database_url))
    try:
        now = await conn.fetchval("SELECT now()")
        limit = await conn.fetchval("SHOW max_connections")
    finally:
        await conn.close()
    return now, int(limit)


def cpu_figures(seconds: dict[str, float], replies: int, prefix: str = "") -> dict[str, Any]:
    per = {name: round(s * 1000 / max(replies, 1), 2) for name, s in seconds.items()}
    return {
        f"{prefix}cpu_ms_per_reply": round(sum(per.values()), 2),
        f"{prefix}cpu_ms_per_reply_by_process": per,
    }


async def system_prompt(database_url: str, persona: str) -> str:
    conn = await asyncpg.connect(_floor.plain_url(database_url))
    try:
        found = await conn.fetchval("SELECT system_prompt FROM personas WHERE name = $1", persona)
    finally:
        await conn.close()
    return str(found or "")


async def floor(
    args: argparse.Namespace, home: Path, endpoints: services.Endpoints, llm: Child
) -> dict[str, Any]:
    n = args.slack + args.web
    persona = Settings.model_fields["default_persona"].default
    system = await system_prompt(endpoints.database_url, persona)
    queue = f"switchboard:bench:floor:{uuid.uuid4().hex[:8]}"
    argv = ["-m", "bench._floor", "--redis", endpoints.redis_url]
    argv += ["--database", endpoints.database_url, "--llm", "http://" + llm.address]
    # As many slots as jobs: a job holds no connection while its model answers.
    argv += ["--queue", queue, "--max-jobs", str(n)]
    argv += ["--poll-delay", str(Settings.model_fields["poll_delay"].default)]
    async with child("floor", argv, _floor.READY) as worker:
        clock = CPUClock({**service_pids(home), "floor": worker.pid})
        redis = await connect(endpoints.redis_url)
        conn = await asyncpg.connect(_floor.plain_url(endpoints.database_url))
        try:

            async def jobs(first: int, count: int) -> int:
                for i in range(first, first + count):
                    await redis.enqueue_job("answer", i, system, question(i), _queue_name=queue)
                return await _rows(conn, first + count, REPLY_TIMEOUT) - first

            await jobs(0, WARMUP)  # the SDK builds its clients and types at first use
            before, started = clock.read(), time.monotonic()
            done = await jobs(WARMUP, n)
            wall, cpu = time.monotonic() - started, spent(before, clock.read())
        finally:
            await conn.close()
            await redis.aclose()
    return {
        "floor_jobs_done": done,
        "floor_wall_s": round(wall, 2),
        **cpu_figures(cpu, done, "floor_"),
    }


async def _rows(conn: asyncpg.Connection, n: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    found = 0
    while time.monotonic() < deadline:
        found = int(await conn.fetchval(f"SELECT count(*) FROM {_floor.TABLE}"))
        if found >= n:
            break
        await asyncio.sleep(0.05)
    return found


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    with temp_home() as home, held_services(home) as endpoints:
        async with fake_slack() as slack, fake_llm(args.latency) as llm:
            found = await ours(args, home, endpoints, slack, llm)
            say(f"floor: {args.slack + args.web} arq jobs (openai SDK + one row)")
            found |= await floor(args, home, endpoints, llm)
    return found


def report(figures: dict[str, Any]) -> None:
    met = figures["delivered"] == figures["expected"] and figures["wall_s"] <= 5
    slack, web = figures["slack"], figures["web"]
    say(
        f"delivered {figures['delivered']}/{figures['expected']} in {figures['wall_s']} s "
        f"(target: all, <= 5 s: {'met' if met else 'MISSED'}), {figures['replies_per_s']} "
        f"replies/s, peak RSS {figures['peak_rss_mb']} MB"
    )
    for name, half in (("Slack", slack), ("web", web)):
        say(
            f"  {name}: {half['delivered']} delivered, p50 {half['p50_s']} s, "
            f"p99 {half['p99_s']} s, last {half['last_s']} s"
        )
    for channel, found in figures["stages_p50_max_s"].items():
        say(f"  stages of {channel} (p50, max s): {found}")
    say(
        f"CPU per reply: {figures['cpu_ms_per_reply']} ms "
        f"{figures['cpu_ms_per_reply_by_process']}; floor {figures['floor_cpu_ms_per_reply']} ms "
        f"{figures['floor_cpu_ms_per_reply_by_process']} (ratio {figures['ratio_cpu']}), "
        f"floor wall {figures['floor_wall_s']} s"
    )


async def measure_with_floor(args: argparse.Namespace) -> dict[str, Any]:
    figures = await measure(args)
    floor_cpu = max(figures["floor_cpu_ms_per_reply"], 0.01)
    figures["ratio_cpu"] = round(figures["cpu_ms_per_reply"] / floor_cpu, 1)
    return figures


def cli() -> None:
    parser = argparse.ArgumentParser(description="1,000 conversations, a 1 s model, all answered?")
    parser.add_argument("--slack", type=int, default=500, help="Slack DMs")
    parser.add_argument("--web", type=int, default=500, help="web chat messages")
    parser.add_argument("--latency", type=float, default=1.0, help="seconds the model takes")
    parser.add_argument(
        "--workers", type=int, default=0, help="0: up's own; N: up --no-worker + N workers"
    )
    # A model wait is I/O: 1,000 waiting turns would want 1,000 job slots. But each turn
    # holds a pooled connection for its conversation's advisory lock (bot/locks.py) while
    # the model answers, and needs another for its statements: slots beyond the pool's
    # size + overflow (10) / 2 stall every turn until the pool's 30 s timeout. The pool
    # itself is capped by Postgres's max_connections (100 here).
    parser.add_argument("--max-jobs", type=int, default=45, help="SWITCHBOARD_MAX_JOBS")
    parser.add_argument("--db-pool", type=int, default=80, help="SWITCHBOARD_DB_POOL_SIZE")
    parser.add_argument(
        "--no-stream", dest="stream", action="store_false", help="SWITCHBOARD_STREAM_REPLIES"
    )
    parser.add_argument("--profile", metavar="FILE", help="run `up` under cProfile into FILE")
    args = parser.parse_args()
    settings = {
        "latency_s": args.latency,
        "workers": args.workers,
        "max_jobs": args.max_jobs,
        "db_pool": args.db_pool,
        "stream_replies": args.stream,
    }
    asyncio.run(run_and_emit("fanout", measure_with_floor(args), report, **settings))


if __name__ == "__main__":
    cli()
