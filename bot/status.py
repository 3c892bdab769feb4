"""What `switchboard status` reads: each running process publishes how its parts are.

Every `switchboard up` (and ingress process) writes its health report (services, worker,
each channel it serves) into one Redis hash every ``EVERY`` seconds, under its host and pid;
a report older than ``STALE`` seconds belongs to a process that stopped. The command reads
the fresh reports and the outbox (replies failed or expired) and says what is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.channels import Channels, Reports
from bot.health import Health, Part

log = logging.getLogger(__name__)

KEY = "switchboard:status"
EVERY = 5.0
STALE = 20.0


@dataclass(frozen=True)
class Report:
    process: str
    at: float
    parts: list[dict[str, Any]]
    channels: dict[str, dict[str, Any]]


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def publish_forever(redis: Redis, health: Health, channels: Channels) -> None:
    """Publish this process's report every EVERY seconds until cancelled (the first is
    ``publish_once``'s); the report is
    removed on the way out, so a stopped process is not shown as running."""
    try:
        while True:
            await asyncio.sleep(EVERY)
            await publish_once(redis, health, channels)
    finally:
        with contextlib.suppress(RedisError, RuntimeError):
            await asyncio.shield(redis.hdel(KEY, process_name()))  # type: ignore[arg-type]


async def publish_once(redis: Redis, health: Health, channels: Channels) -> None:
    with contextlib.suppress(RedisError):
        await publish(redis, process_name(), await health.report(), channels)


async def publish(redis: Redis, name: str, parts: list[Part], channels: Channels) -> None:
    states = {
        channel: asdict(adapter.state())
        for channel, adapter in channels.items()
        if isinstance(adapter, Reports)
    }
    report = Report(name, time.time(), [asdict(part) for part in parts], states)
    await redis.hset(KEY, name, json.dumps(asdict(report)))  # type: ignore[misc]


async def reports(redis: Redis, now: float | None = None) -> list[Report]:
    """The fresh reports, oldest process first; stale ones are dropped from the hash."""
    now = time.time() if now is None else now
    found = await redis.hgetall(KEY)  # type: ignore[misc]
    fresh: list[Report] = []
    stale: list[Report] = []
    for raw in found.values():
        report = Report(**json.loads(raw))
        (fresh if now - report.at <= STALE else stale).append(report)
    if stale:
        await redis.hdel(KEY, *(r.process for r in stale))  # type: ignore[misc]
    return sorted(fresh, key=lambda r: r.process)


@dataclass(frozen=True)
class Undelivered:
    """A reply that did not go out: failed (the platform refused) or expired (too late)."""

    outbox_id: int
    channel: str
    status: str
    created_at: float
    error: str
    text: str


def summary(
    found: list[Report], enabled: list[str], undelivered: list[Undelivered], now: float
) -> tuple[str, bool]:
    """What `switchboard status` prints, and whether everything enabled is up."""
    lines = [f"{len(found)} Switchboard process(es) reporting."]
    ok = bool(found)
    latest = {part["name"]: part for report in found for part in report.parts}
    for name in [p for p in latest if latest[p]["kind"] != "channel"]:
        lines.append(_part_line(latest[name]))
    for channel in enabled:
        seen = [r for r in found if any(p["name"] == channel for p in r.parts)]
        up = any(p["ok"] for r in seen for p in r.parts if p["name"] == channel)
        ok = ok and up
        lines.append(_channel_line(channel, seen, up, now))
    lines += _undelivered_lines(undelivered, now)
    return "\n".join(lines), ok


def _part_line(part: dict[str, Any]) -> str:
    return f"  {part['name']:<10} {'ok' if part['ok'] else 'DOWN':<5} {part['detail']}"


def _channel_line(channel: str, seen: list[Report], up: bool, now: float) -> str:
    if not seen:
        return f"  {channel:<10} DOWN  enabled, but no running process serves it"
    details = []
    for report in seen:
        part = next(p for p in report.parts if p["name"] == channel)
        state = report.channels.get(channel, {})
        details.append(f"{part['detail']}{_times(state, now)} [{report.process}]")
    return f"  {channel:<10} {'ok' if up else 'DOWN':<5} " + "; ".join(details)


def _times(state: dict[str, Any], now: float) -> str:
    said = [
        f"{label} {_ago(now - state[key])}"
        for key, label in (
            ("since", "since"),
            ("last_event", "last event"),
            ("last_send", "last send"),
        )
        if state.get(key)
    ]
    if state.get("last_error"):
        said.append(f"last error: {state['last_error']}")
    return (", " + ", ".join(said)) if said else ""


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _undelivered_lines(undelivered: list[Undelivered], now: float) -> list[str]:
    if not undelivered:
        return ["Replies: every reply of the last day went out."]
    lines = [f"Replies not delivered in the last day: {len(undelivered)}"]
    for item in undelivered[:20]:
        lines.append(
            f"  #{item.outbox_id} {item.channel} {item.status} {_ago(now - item.created_at)}: "
            f"{item.error or '-'} | {item.text[:60]!r}"
        )
    return lines
