"""Slack's 3-second ack under a burst: 500 signed slash commands at once to /slack/events.

`switchboard up` runs in its own process with Slack in HTTP mode (signing secret, Web API at
a fake Slack in a process of its own), the fake model in another, and its worker in the same
process (``--workers N``: `up --no-worker` plus N `switchboard worker` processes). This process
is the client, as Slack would be: it signs 500 `/help` commands from 500 people, each in a
DM channel of their own (Slack paces posts per channel, about one a second, so one channel
would measure the pacing), opens a connection per request (as a reverse proxy does by
default) and sends them all at once. Each ack's latency runs from its send to its answer;
every ack must be a 200 with an empty body (Switchboard answers with a sentence instead when
it could not store the command within 2 s). ``all_replies_s`` runs from the burst's start to
the moment the last reply reached the fake's ``chat.postMessage``.

With all 500 in flight at once, latency is queueing: the last ack waits for the 499 before
it (Little's law: p99 ≈ 500 ÷ acks per second). A second, paced run offers the same 500 at
``--rate`` per second and shows the ack of a command that does not arrive behind a queue.
CPU ms per command counts every process of Switchboard, Postgres and Valkey over the burst
(ack, handle, reply). Target: p99 ≤ 100 ms on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench._common import (
    CPUClock,
    latency_figures,
    paced,
    say,
    service_pids,
    spent,
    temp_home,
)
from bench._stack import (
    Child,
    SlackRecords,
    fake_llm,
    fake_slack,
    held_services,
    root_of,
    run_and_emit,
    switchboard,
    switchboard_env,
    wait_for_replies,
)
from tests.fakes.slack_payloads import (
    BOT_TOKEN,
    SIGNING_SECRET,
    TEAM_ID,
    SignedRequest,
    signed_command,
    slash_command,
)

COMMAND = "/help"
REPLY_TIMEOUT = 300.0
WARMUP_RATE = 10.0  # commands/s: the first ones load what a process loads once


@dataclass(frozen=True)
class Ack:
    seconds: float
    status: int  # 0: no answer (the connection failed)
    body: str

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.body == ""


class Commands:
    """Signed slash commands from distinct people, each in a DM channel of its own."""

    def __init__(self, fake: Child) -> None:
        self.fake_root = root_of(fake)
        self.prefix = uuid.uuid4().hex[:6].upper()

    def channel(self, i: int) -> str:
        return f"D{self.prefix}{i:05d}"

    def signed(self, i: int) -> SignedRequest:
        form = slash_command(
            COMMAND,
            response_url=f"{self.fake_root}/commands/{TEAM_ID}/{i}/{uuid.uuid4().hex[:24]}",
            user_id=f"U{self.prefix}{i:05d}",
            user_name=f"person{i}",
            channel_id=self.channel(i),
            channel_name="directmessage",
        )
        return signed_command(SIGNING_SECRET, form)


async def send(session: aiohttp.ClientSession, url: str, request: SignedRequest) -> Ack:
    started = time.perf_counter()
    try:
        async with session.post(url, data=request.body, headers=request.headers) as answer:
            body = await answer.text()
        return Ack(time.perf_counter() - started, answer.status, body)
    except aiohttp.ClientError as exc:
        return Ack(time.perf_counter() - started, 0, f"{type(exc).__name__}: {exc}")


def connector(fresh: bool) -> aiohttp.TCPConnector:
    # No cap on open connections: aiohttp's default of 100 would queue the burst here.
    return aiohttp.TCPConnector(limit=0, force_close=fresh)


@dataclass
class Round:
    acks: list[Ack]
    started: float  # time.monotonic()
    acked_in: float  # seconds until the last ack
    replies: dict[str, float]  # channel: when its reply reached the fake
    cpu: dict[str, float]  # CPU seconds by process, from the start to the last reply
    client_cpu: float  # CPU seconds this process (the client) spent sending and reading acks

    def figures(self, prefix: str = "") -> dict[str, Any]:
        n = len(self.acks)
        last = max(self.replies.values(), default=self.started)
        found = {
            **latency_figures([a.seconds for a in self.acks]),
            "acked_ok": sum(a.ok for a in self.acks),
            "acks_per_s": round(n / self.acked_in, 1),
            "replies": len(self.replies),
            "all_replies_s": round(last - self.started, 2),
            "not_ok": refused(self.acks),
            "cpu_ms_per_command": round(sum(self.cpu.values()) * 1000 / n, 2),
            "cpu_ms_per_command_by_process": {
                name: round(seconds * 1000 / n, 2) for name, seconds in self.cpu.items()
            },
            "client_cpu_ms_per_command": round(self.client_cpu * 1000 / n, 2),
        }
        return {f"{prefix}{k}": v for k, v in found.items()}


SendAll = Callable[[aiohttp.ClientSession, str, list[SignedRequest]], Awaitable[list[Ack]]]


async def burst(session: aiohttp.ClientSession, url: str, signed: list[SignedRequest]) -> list[Ack]:
    return list(await asyncio.gather(*(send(session, url, s) for s in signed)))


def steady(rate: float) -> SendAll:
    async def send_all(
        session: aiohttp.ClientSession, url: str, signed: list[SignedRequest]
    ) -> list[Ack]:
        acks: list[Ack] = [Ack(0.0, 0, "")] * len(signed)

        async def one(i: int) -> float:
            acks[i] = await send(session, url, signed[i])
            return acks[i].seconds

        # Latency counts from each command's due time, so a late start shows.
        late = await paced(len(signed), rate, len(signed), one)
        return [Ack(s, a.status, a.body) for s, a in zip(late, acks, strict=True)]

    return send_all


@dataclass
class Target:
    url: str  # Switchboard's /slack/events
    slack: Child
    clock: CPUClock
    fresh: bool  # a connection per request


async def round_of(send_all: SendAll, target: Target, commands: Commands, n: int) -> Round:
    signed = [commands.signed(i) for i in range(n)]  # signed before the clock starts
    records = SlackRecords(target.slack)
    async with (
        aiohttp.ClientSession() as watching,
        aiohttp.ClientSession(connector=connector(target.fresh)) as session,
    ):
        await records.update(watching)  # earlier rounds' replies, to the same people too
        since = len(records.calls)
        before, started, clock = target.clock.read(), time.monotonic(), time.perf_counter()
        client = time.process_time()
        acks = await send_all(session, target.url, signed)
        acked_in, client = time.perf_counter() - clock, time.process_time() - client
        channels = {commands.channel(i) for i in range(n)}
        replies = await wait_for_replies(records, watching, channels, REPLY_TIMEOUT, since)
        cpu = spent(before, target.clock.read())
    return Round(acks, started, acked_in, replies, cpu, client)


def refused(acks: Sequence[Ack]) -> dict[str, int]:
    """What the acks that were not an empty 200 said, counted."""
    counts: dict[str, int] = {}
    for ack in acks:
        if not ack.ok:
            key = f"{ack.status} {ack.body[:80]}"
            counts[key] = counts.get(key, 0) + 1
    return counts


async def measure(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    async with fake_slack() as slack, fake_llm(0.0) as llm:
        env = switchboard_env(
            home,
            llm,
            {
                "SLACK_BOT_TOKEN": BOT_TOKEN,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SWITCHBOARD_SLACK_API_URL": "http://" + slack.address,
                "SWITCHBOARD_MAX_JOBS": str(args.max_jobs),
            },
        )
        async with switchboard(env, workers=args.workers, profile=args.profile) as up:
            clock = CPUClock({**service_pids(home), **up.processes})
            target = Target(f"{up.url}/slack/events", slack, clock, args.fresh)
            say(f"warm-up: {args.warmup} commands at {WARMUP_RATE:g}/s")
            await round_of(steady(WARMUP_RATE), target, Commands(slack), args.warmup)
            people = Commands(slack)
            say(f"paced: {args.n} commands from new people at {args.rate:g}/s")
            calm = await round_of(steady(args.rate), target, people, args.n)
            say(f"burst: {args.n} commands at once from the same people, now known")
            known = await round_of(burst, target, people, args.n)
            say(f"burst: {args.n} commands at once from new people")
            strangers = await round_of(burst, target, Commands(slack), args.n)
    return {
        **known.figures(),
        "requests": args.n,
        **strangers.figures("strangers_"),
        **calm.figures("paced_"),
    }


def report(figures: dict[str, Any], args: argparse.Namespace) -> None:
    for name, prefix in (("burst, known people", ""), ("burst, new people", "strangers_")):
        found = {k.removeprefix(prefix): v for k, v in figures.items() if k.startswith(prefix)}
        say(
            f"{name}: ack p50 {found['p50_ms']} ms, p99 {found['p99_ms']} ms (target p99 <= "
            f"100 ms: {'met' if found['p99_ms'] <= 100 else 'MISSED'}), {found['acked_ok']}/"
            f"{args.n} empty 200s, {found['acks_per_s']} acks/s; {found['replies']} replies, "
            f"the last after {found['all_replies_s']} s; {found['cpu_ms_per_command']} CPU ms "
            f"per command {found['cpu_ms_per_command_by_process']}"
        )
    say(
        f"paced at {args.rate:g}/s, new people: ack p50 {figures['paced_p50_ms']} ms, "
        f"p99 {figures['paced_p99_ms']} ms, {figures['paced_acked_ok']}/{args.n} empty 200s"
    )


async def measure_in_home(args: argparse.Namespace) -> dict[str, Any]:
    with temp_home() as home, held_services(home):
        return await measure(args, home)


def cli() -> None:
    parser = argparse.ArgumentParser(description="Slack slash-command acks under a burst.")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--rate", type=float, default=20.0, help="commands/s of the paced run")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--max-jobs", type=int, default=20, help="SWITCHBOARD_MAX_JOBS")
    parser.add_argument(
        "--workers", type=int, default=0, help="0: up's own; N: up --no-worker + N workers"
    )
    parser.add_argument(
        "--keep-alive",
        dest="fresh",
        action="store_false",
        help="reuse connections (default: one per request, as a reverse proxy opens them)",
    )
    parser.add_argument("--profile", metavar="FILE", help="run `up` under cProfile into FILE")
    args = parser.parse_args()
    settings = {
        "rate": args.rate,
        "workers": args.workers,
        "max_jobs": args.max_jobs,
        "fresh_connections": args.fresh,
    }
    asyncio.run(
        run_and_emit("slack_ack", measure_in_home(args), lambda f: report(f, args), **settings)
    )


if __name__ == "__main__":
    cli()
