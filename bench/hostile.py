"""Ordinary people's reply latency while hostile input arrives, and whether `/healthz` keeps
answering throughout.

`switchboard up` runs as its own process (web chat, in-process worker, embedded Postgres and
Valkey in a fresh home) against the fake OpenAI-compatible server. 50 web conversations send
200 ordinary messages at a steady rate (10/s); each latency runs from the message's due time
to the moment its reply arrives on that browser's event stream. The same 200 run twice: once
on a quiet system, once while 20 hostile inputs arrive from 20 other conversations: template
CPU and memory bombs (`/t try`), JSON bombs through a workflow webhook, a YAML alias bomb
through the CLI (`switchboard workflows validate`), and oversized uploads. A probe asks
`/healthz` every 100 ms throughout; the longest gap between two answers is reported.

Each hostile input must get a specific refusal (its expected words are listed beside it).
Targets: ratio (hostile p99 ÷ quiet p99) ≤ 2, max_health_gap_ms ≤ 1000.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import itertools
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench._common import emit, free_port, ms, percentile, say, temp_home
from bench._stack import Ticker, healthy
from tests.fakes.llm_server import FakeLLM

ROOT = Path(__file__).resolve().parents[1]
REPLY_TIMEOUT = 60.0
PROBE_TIMEOUT = aiohttp.ClientTimeout(total=5)

CPU_BOMB = (
    '/t try "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x" hi'
)
MEMORY_BOMB = "/t try \"{{ ('a' * 10**8)|length }}\" hi"
DOUBLING_BOMB = (
    "/t try \"{% set ns = namespace(x='a') %}{% for i in range(60) %}"
    '{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x|length }}" hi'
)
HUGE_RANGE = '/t try "{{ range(10**9)|list|length }}" hi'


def _alias_bomb(levels: int = 9) -> str:
    """The "billion laughs": each level lists the one before nine times (9**9 leaves)."""
    names = [chr(ord("a") + i) for i in range(levels)]
    lines = [f"{names[0]}: &{names[0]} [{', '.join(['lol'] * 9)}]"]
    lines += [f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in itertools.pairwise(names)]
    return "\n".join(lines) + "\nname: bomb\nnodes: {x: {type: template, text: hi}}\n"


YAML_BOMB = _alias_bomb()
HOOK = """
name: hook
inputs:
  data: {type: object, default: {}}
nodes:
  out: {type: template, text: "{{ data | length }}"}
"""


@dataclass
class Browser:
    """One web conversation: its cookie jar, its event stream and the replies it saw."""

    base: str
    session: aiohttp.ClientSession
    arrived: dict[int, float] = field(default_factory=dict)
    texts: dict[int, str] = field(default_factory=dict)
    waiting: dict[int, asyncio.Event] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, base: str) -> Browser:
        session = aiohttp.ClientSession(
            headers={"Origin": base}, cookie_jar=aiohttp.CookieJar(unsafe=True)
        )
        async with session.get(f"{base}/") as page:
            await page.read()
        browser = cls(base, session)
        browser.task = asyncio.create_task(browser._listen())
        return browser

    async def _listen(self) -> None:
        async with self.session.get(f"{self.base}/api/events", timeout=None) as events:
            kind = ""
            async for raw in events.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "reply":
                    self._reply(json.loads(line[6:]))

    def _reply(self, data: dict[str, Any]) -> None:
        answered = data.get("in_reply_to")
        if answered is None:
            return
        self.arrived.setdefault(answered, time.monotonic())
        self.texts.setdefault(answered, data.get("text", ""))
        self.waiting.setdefault(answered, asyncio.Event()).set()

    async def post(self, text: str) -> tuple[int, dict[str, Any]]:
        body = {"text": text, "id": uuid.uuid4().hex}
        token = self._csrf()
        headers = {"X-CSRF-Token": token} if token else {}
        async with self.session.post(
            f"{self.base}/api/messages", json=body, headers=headers
        ) as sent:
            return sent.status, await sent.json(content_type=None)

    def _csrf(self) -> str:
        for cookie in self.session.cookie_jar:
            if "csrf" in cookie.key.lower():
                return cookie.value
        return ""

    async def reply(self, message_id: int, timeout: float = REPLY_TIMEOUT) -> str:
        event = self.waiting.setdefault(message_id, asyncio.Event())
        await asyncio.wait_for(event.wait(), timeout)
        return self.texts[message_id]

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await self.task
        await self.session.close()


class Probe:
    """Asks /healthz each time it is ticked (every 100 ms, by a ``Ticker``: a thread of its
    own, so the benchmark's own event loop, busy with 70 browsers, cannot delay it); keeps
    the time between two answers."""

    def __init__(self, base: str) -> None:
        self.address = base.removeprefix("http://")
        self.gaps: list[tuple[float, float]] = []  # (when, seconds since the answer before)
        self.statuses: dict[int, int] = {}
        self.last = time.monotonic()

    def ask(self) -> None:
        with contextlib.suppress(OSError, http.client.HTTPException):
            connection = http.client.HTTPConnection(self.address, timeout=5)
            try:
                connection.request("GET", "/healthz")
                status = connection.getresponse().status
            finally:
                connection.close()
            now = time.monotonic()
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.gaps.append((now, now - self.last))
            self.last = now

    def longest(self) -> float:
        return max(gap for _, gap in self.gaps)


@contextlib.asynccontextmanager
async def switchboard_up(home: Path, llm: FakeLLM) -> AsyncIterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "SWITCHBOARD_HOME": str(home),
        "SWITCHBOARD_MODEL": "openai/fake-model",
        "SWITCHBOARD_LLM_API_BASE": llm.url,
        "SWITCHBOARD_STREAM_REPLIES": "false",
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "up", "--port", str(port), cwd=ROOT, env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await healthy(base)
        yield base
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 60)


async def ordinary(browsers: list[Browser], n: int, rate: float) -> list[float]:
    """``n`` messages at ``rate``/s round the browsers; latency from each one's due time."""
    loop_start = time.monotonic()

    async def one(i: int) -> float:
        due = loop_start + i / rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        browser = browsers[i % len(browsers)]
        status, body = await browser.post(f"message {i}: how are you today?")
        assert status in (200, 202), (status, body)
        await browser.reply(body["message_id"])
        return browser.arrived[body["message_id"]] - due

    return list(await asyncio.gather(*(one(i) for i in range(n))))


Hostile = Callable[[], Awaitable[tuple[str, str, bool]]]  # → (what, answer, specific?)


def hostile_inputs(base: str, home: Path, secret: str, browsers: list[Browser]) -> list[Hostile]:
    def chat(what: str, text: str, expected: str, who: Browser) -> Hostile:
        async def send() -> tuple[str, str, bool]:
            status, body = await who.post(text)
            if status not in (200, 202):
                return what, f"HTTP {status}: {body}", False
            answer = await who.reply(body["message_id"])
            return what, answer, expected in answer.lower()

        return send

    def hook(what: str, payload: bytes, expected_status: int) -> Hostile:
        async def send() -> tuple[str, str, bool]:
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    f"{base}/hooks/hook",
                    data=payload,
                    headers={"X-Switchboard-Secret": secret, "Content-Type": "application/json"},
                ) as answer,
            ):
                text = await answer.text()
                return (
                    what,
                    f"HTTP {answer.status}: {text[:120]}",
                    (answer.status == expected_status and "error" in text),
                )

        return send

    def upload(who: Browser) -> Hostile:
        async def send() -> tuple[str, str, bool]:
            form = aiohttp.FormData()
            form.add_field("text", "here is a big file")
            form.add_field("file", b"\0" * (30 * 1024 * 1024), filename="big.bin")
            token = who._csrf()
            async with who.session.post(
                f"{base}/api/messages", data=form, headers={"X-CSRF-Token": token} if token else {}
            ) as answer:
                text = await answer.text()
                return (
                    "oversized upload",
                    f"HTTP {answer.status}: {text[:120]}",
                    (answer.status == 413 and "25" in text),
                )

        return send

    path = home / "bomb.yaml"
    path.write_text(YAML_BOMB)

    async def yaml_cli() -> tuple[str, str, bool]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "workflows",
            "validate",
            str(path),
            cwd=ROOT,
            env={**os.environ, "SWITCHBOARD_HOME": str(home)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        text = (out + err).decode()
        return (
            "YAML alias bomb (CLI)",
            text.strip()[:160],
            (process.returncode != 0 and "bomb.yaml:" in text and "Traceback" not in text),
        )

    nested = b"[" * 100_000 + b"]" * 100_000
    wide = b'{"data": {' + b",".join(b'"k%d": "%s"' % (i, b"v" * 20) for i in range(20_000)) + b"}}"
    who = iter(browsers)
    return [
        chat("template CPU bomb", CPU_BOMB, "stopped", next(who)),
        chat("template CPU bomb", CPU_BOMB, "stopped", next(who)),
        chat("template CPU bomb", CPU_BOMB, "stopped", next(who)),
        chat("template CPU bomb", CPU_BOMB, "stopped", next(who)),
        chat("template memory bomb", MEMORY_BOMB, "characters", next(who)),
        chat("template memory bomb", MEMORY_BOMB, "characters", next(who)),
        chat("template doubling bomb", DOUBLING_BOMB, "characters", next(who)),
        chat("template doubling bomb", DOUBLING_BOMB, "characters", next(who)),
        chat("huge range", HUGE_RANGE, "range", next(who)),
        chat("huge range", HUGE_RANGE, "range", next(who)),
        hook("webhook nested-JSON bomb", nested, 400),
        hook("webhook nested-JSON bomb", nested, 400),
        hook("webhook oversized body", wide * 2, 413),
        hook("webhook YAML alias bomb", YAML_BOMB.encode(), 400),
        yaml_cli,
        yaml_cli,
        upload(next(who)),
        upload(next(who)),
        upload(next(who)),
        upload(next(who)),
    ]


async def spread(inputs: list[Hostile], seconds: float) -> list[tuple[str, str, bool]]:
    async def at(i: int, send: Hostile) -> tuple[str, str, bool]:
        await asyncio.sleep(i * seconds / len(inputs))
        return await send()

    return list(await asyncio.gather(*(at(i, send) for i, send in enumerate(inputs))))


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    with temp_home() as home:
        async with FakeLLM() as llm, switchboard_up(home, llm) as base:
            secret = await _webhook(home)
            people = [await Browser.open(base) for _ in range(args.conversations)]
            strangers = [await Browser.open(base) for _ in range(20)]
            try:
                probe = Probe(base)
                with Ticker(0.1, probe.ask, "healthz-probe"):
                    say(f"warm-up: {args.conversations} messages")
                    await ordinary(people, args.conversations, args.rate)
                    say(f"quiet: {args.n} messages at {args.rate}/s")
                    quiet = await ordinary(people, args.n, args.rate)
                    quiet_gap = probe.longest()
                    say("hostile: the same, with 20 hostile inputs from other conversations")
                    hostile_start = time.monotonic()
                    calm, attacks = await asyncio.gather(
                        ordinary(people, args.n, args.rate),
                        spread(hostile_inputs(base, home, secret, strangers), args.n / args.rate),
                    )
            finally:
                for browser in people + strangers:
                    await browser.close()
            quarantined = await _quarantined(home)
    for i, (what, answer, specific) in enumerate(attacks):
        at = i * args.n / args.rate / len(attacks)
        say(f"  {'ok ' if specific else 'BAD'} +{at:4.1f} s {what}: {answer[:120]!r}")
    for when, gap in sorted(probe.gaps, key=lambda g: -g[1])[:3]:
        at = when - hostile_start
        say(f"  /healthz answered {gap:.2f} s after the answer before, at {at:+.1f} s")
    slowest = sorted(range(len(calm)), key=lambda i: -calm[i])[:5]
    say(
        "  slowest ordinary replies while hostile: "
        + ", ".join(f"{ms(calm[i]):.0f} ms at {i / args.rate:+.1f} s" for i in slowest)
    )
    quiet_p99, hostile_p99 = percentile(quiet, 99), percentile(calm, 99)
    return {
        "quiet_p50_ms": ms(percentile(quiet, 50)),
        "quiet_p99_ms": ms(quiet_p99),
        "hostile_p50_ms": ms(percentile(calm, 50)),
        "hostile_p99_ms": ms(hostile_p99),
        "ratio": round(hostile_p99 / quiet_p99, 2),
        "max_health_gap_ms": ms(probe.longest()),
        "quiet_max_health_gap_ms": ms(quiet_gap),
        "health_statuses": probe.statuses,
        "hostile_inputs": len(attacks),
        "specific_refusals": sum(specific for _, _, specific in attacks),
        "poison_quarantined": quarantined,
    }


async def _webhook(home: Path) -> str:
    """The `hook` workflow, imported and given a webhook secret through the CLI."""
    path = home / "hook.yaml"
    path.write_text(HOOK)
    env = {**os.environ, "SWITCHBOARD_HOME": str(home)}
    for args in (("workflows", "import", str(path)), ("workflows", "webhook", "hook")):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            *args,
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
    return out.decode().splitlines()[1].strip()


async def _quarantined(home: Path) -> int:
    """Messages set aside after using all their tries (what `switchboard messages failed`
    shows as "set aside after N attempts")."""
    import asyncpg

    conn = await asyncpg.connect(f"postgresql://postgres@/switchboard?host={home / 'postgres'}")
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM messages WHERE status = 'failed' "
            "AND error LIKE 'set aside after%'"
        )
    finally:
        await conn.close()
    return int(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="ordinary messages per phase")
    parser.add_argument("--rate", type=float, default=10.0, help="ordinary messages per second")
    parser.add_argument("--conversations", type=int, default=50)
    args = parser.parse_args()
    emit("hostile", **asyncio.run(measure(args)))


if __name__ == "__main__":
    main()
