"""The job queue seam: arq on a Redis-protocol server, with JSON (never pickle) on the wire."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

HANDLE_MESSAGE = "handle_message"
DELIVER = "deliver"


def serialize(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode()


def deserialize(data: bytes) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(data)
    return result


# arq starts jobs in score order (the time they are due). A priority job is filed as if due
# a minute ago, so a finished reply is delivered before the model calls queued behind it.
PRIORITY_LEAD = timedelta(seconds=60)


def due_time(defer_until: datetime | None, *, priority: bool, now: datetime) -> datetime | None:
    """When arq should see a job as due. A time already past means "now" (a priority job: a
    minute before now): arq derives the job's expiry from how far ahead it is due, and a time
    more than a day past would give Redis a negative expiry."""
    earliest = now - PRIORITY_LEAD if priority else now
    if defer_until is None:
        return earliest if priority else None
    return max(defer_until, earliest)


class Queue(Protocol):
    async def enqueue(
        self,
        function: str,
        *args: Any,
        job_id: str,
        defer_until: datetime | None = None,
        priority: bool = False,
    ) -> bool: ...


class ArqQueue:
    """Enqueues by function name; ``job_id`` makes a second enqueue of the same work a no-op."""

    def __init__(self, redis: ArqRedis, queue_name: str) -> None:
        self.redis = redis
        self.queue_name = queue_name

    async def enqueue(
        self,
        function: str,
        *args: Any,
        job_id: str,
        defer_until: datetime | None = None,
        priority: bool = False,
    ) -> bool:
        job = await self.redis.enqueue_job(
            function,
            *args,
            _job_id=job_id,
            _queue_name=self.queue_name,
            _defer_until=due_time(defer_until, priority=priority, now=datetime.now(UTC)),
        )
        return job is not None


def redis_settings(url: str) -> RedisSettings:
    return RedisSettings.from_dsn(url)


async def connect(url: str) -> ArqRedis:
    return await create_pool(
        redis_settings(url), job_serializer=serialize, job_deserializer=deserialize
    )
