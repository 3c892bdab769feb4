"""Sends per chat at a platform's pace, across every worker: each send reserves the next free
slot of its chat in Redis (by Redis's clock, so workers' clocks do not matter) and waits
for it. Replies to one conversation already go out one at a time (the outbox), so the
wait only grows when several conversations share a chat (threads of one Slack channel)."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.errors import AdapterError

# Reserve the slot at max(now, the chat's next free time) and move that on by the gap; a
# slot further away than the longest wait is not reserved (negative: how far it is).
_RESERVE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local free = tonumber(redis.call('GET', KEYS[1]) or '0')
local at = math.max(now, free)
if at - now > tonumber(ARGV[2]) then return -(at - now) end
local gap = tonumber(ARGV[1])
redis.call('SET', KEYS[1], at + gap, 'PX', at + gap - now + 1000)
return at - now
"""
# Past this, the send is handed back to the outbox to try later instead of waiting here.
MAX_WAIT_SECONDS = 10.0


class Pacer:
    def __init__(self, redis: Redis, name: str, per_second: float) -> None:
        self.redis = redis
        self.name = name
        self.gap_ms = int(1000 / per_second) if per_second > 0 else 0

    async def wait_turn(self, chat: str) -> None:
        """Wait for ``chat``'s next slot; a wait over MAX_WAIT_SECONDS is an AdapterError
        with ``retry_after``, so the outbox tries again then (and a worker is not held)."""
        if not self.gap_ms:
            return
        try:
            wait_ms = await self.redis.eval(  # type: ignore[misc]
                _RESERVE,
                1,
                f"switchboard:pace:{self.name}:{chat}",
                str(self.gap_ms),
                str(int(MAX_WAIT_SECONDS * 1000)),
            )
        except RedisError as exc:
            raise AdapterError(f"could not pace the send: {exc}") from exc
        wait = int(wait_ms) / 1000
        if wait < 0:
            raise AdapterError(f"{self.name} chat {chat} is busy", retry_after=-wait)
        await asyncio.sleep(wait)
