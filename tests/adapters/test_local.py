"""The local channels' streams: passing updates never fail a turn."""

from __future__ import annotations

from redis.asyncio import Redis

from adapters.local import LocalStream
from bot.messages import ConversationRef
from tests.support import free_port


async def test_a_live_update_is_skipped_while_redis_is_down() -> None:
    redis = Redis(port=free_port())  # nothing listens there
    stream = LocalStream(redis, "web")
    ref = ConversationRef(channel="web", chat="c1")
    try:
        await stream.delta(ref, 1, "half a rep")
        await stream.status(ref, "run:1", "step 2 of 3")
    finally:
        await redis.aclose()
