"""The job queue seam: arq on a Redis-protocol server, with JSON (never pickle) on the wire."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms, to_unix_ms

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


# arq's enqueue_job, in one round trip instead of four (WATCH, EXISTS, then MULTI, PSETEX,
# ZADD, EXEC), two of them per reply: the same check (no job, no kept result under this
# id), the same job record and queue entry, atomic because a script runs alone.
_ENQUEUE = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return 1
"""


class ArqQueue:
    """Enqueues by function name; ``job_id`` makes a second enqueue of the same work a no-op."""

    def __init__(self, redis: ArqRedis, queue_name: str) -> None:
        self.redis = redis
        self.queue_name = queue_name
        self._enqueue = redis.register_script(_ENQUEUE)  # by its digest; loaded when missing

    async def enqueue(
        self,
        function: str,
        *args: Any,
        job_id: str,
        defer_until: datetime | None = None,
        priority: bool = False,
    ) -> bool:
        now = timestamp_ms()
        due = due_time(defer_until, priority=priority, now=datetime.now(UTC))
        score = now if due is None else to_unix_ms(due)
        # As arq: kept until a day after it is due.
        expires = score - now + self.redis.expires_extra_ms
        job = serialize_job(function, args, {}, None, now, serializer=serialize)
        keys = [job_key_prefix + job_id, result_key_prefix + job_id, self.queue_name]
        return bool(await self._enqueue(keys=keys, args=[expires, job, score, job_id]))


def redis_settings(url: str) -> RedisSettings:
    return RedisSettings.from_dsn(url)


async def connect(url: str) -> ArqRedis:
    return await create_pool(
        redis_settings(url), job_serializer=serialize, job_deserializer=deserialize
    )
