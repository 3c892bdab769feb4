"""Delivery for the two local channels (terminal, web): a Redis stream per chat.

Workers may run anywhere, so they cannot print to a terminal or write to a browser socket;
they append the reply to the chat's stream and the waiting client reads it. Entries carry the
outbox idempotency key, so a reply delivered twice after a crash is shown once.

Beside the stream, each chat keeps the replies still being written (the id of the first
piece of each, until the reply itself arrives), so a client that starts late — a page
reloaded mid-reply — knows where to read from to show them whole.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.channels import Capabilities, Dispatch
from bot.errors import AdapterError
from bot.messages import ConversationRef, OutgoingMessage, SentRef

log = logging.getLogger(__name__)

STREAM_LENGTH = 1000
SEEN_SECONDS = 7 * 24 * 3600

# Append once per idempotency key, atomically: a redelivery after a crash finds the entry
# the first attempt wrote and returns its id instead of writing a second one.
_APPEND_ONCE = """
if ARGV[4] ~= '' then redis.call('HDEL', KEYS[3], ARGV[4]) end
local seen = redis.call('GET', KEYS[2])
if seen then return seen end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
                      'kind', 'reply', 'payload', ARGV[2])
redis.call('SET', KEYS[2], id, 'EX', ARGV[3])
return id
"""

# A piece of a reply, and the first piece's id kept until the reply comes (or the writing
# stops for WRITING_SECONDS: a worker that died mid-reply leaves no stale entry behind).
_APPEND_DELTA = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
                      'kind', 'delta', 'payload', ARGV[2])
redis.call('HSETNX', KEYS[2], ARGV[3], id)
redis.call('EXPIRE', KEYS[2], ARGV[4])
return id
"""
WRITING_SECONDS = 15 * 60
# A client following a chat says so at least this often (the web page with each keep-alive,
# the terminal while it waits), so replies are streamed only while someone reads them.
WATCHED_SECONDS = 15


def stream_key(channel: str, chat: str) -> str:
    return f"switchboard:local:{channel}:{chat}"


def writing_key(channel: str, chat: str) -> str:
    return f"{stream_key(channel, chat)}:writing"


def watched_key(channel: str, chat: str) -> str:
    return f"{stream_key(channel, chat)}:watched"


@dataclass(frozen=True)
class StreamEntry:
    entry_id: str
    kind: str  # "reply" | "delta" | "status" | "message"
    out: OutgoingMessage | None
    data: dict[str, Any]


@dataclass(frozen=True)
class Resume:
    """Where a client holding the stored transcript reads the stream from: entries up to
    ``until`` are in the transcript already, except the pieces of the replies to ``writing``
    (messages still being answered), which start after ``after``."""

    after: str
    until: str
    writing: tuple[int, ...]


class LocalStream:
    """A local channel's side in the queue's Redis. As a channel (the terminal's), it only
    sends: its client (`switchboard chat`) receives in its own process and dispatches there."""

    capabilities = Capabilities(text_limit=None, dialect="markdown")

    def __init__(self, redis: Redis, channel: str) -> None:
        self.redis = redis
        self.channel = channel

    async def start(self, dispatch: Dispatch) -> None:
        """Nothing to listen to: see the class."""

    async def stop(self) -> None:
        """Nothing was opened: the Redis pool is the process's."""

    async def send(self, out: OutgoingMessage) -> SentRef:
        chat = out.ref.chat
        keys = [
            stream_key(self.channel, chat),
            f"switchboard:sent:{out.idempotency_key}",
            writing_key(self.channel, chat),
        ]
        try:
            entry = await self.redis.eval(  # type: ignore[misc]
                _APPEND_ONCE,
                3,
                *keys,
                str(STREAM_LENGTH),
                json.dumps(out.to_dict()),
                str(SEEN_SECONDS),
                "" if out.in_reply_to is None else str(out.in_reply_to),
            )
        except RedisError as exc:
            raise AdapterError(f"could not append to the {self.channel} stream: {exc}") from exc
        return SentRef(_text(entry))

    async def delta(self, ref: ConversationRef, in_reply_to: int, text: str) -> None:
        """A piece of a reply still being written; the final reply still comes by ``send``."""
        await _passing(
            "delta",
            self.redis.eval(  # type: ignore[arg-type]
                _APPEND_DELTA,
                2,
                stream_key(self.channel, ref.chat),
                writing_key(self.channel, ref.chat),
                str(STREAM_LENGTH),
                json.dumps({"in_reply_to": in_reply_to, "text": text}),
                str(in_reply_to),
                str(WRITING_SECONDS),
            ),
        )

    async def watched(self, chat: str, seconds: float = WATCHED_SECONDS) -> None:
        """Someone follows ``chat`` now (for ``seconds``, unless said again)."""
        await _passing(
            "watch", self.redis.set(watched_key(self.channel, chat), 1, ex=max(1, int(seconds)))
        )

    async def watching(self, ref: ConversationRef) -> bool:
        try:
            return bool(await self.redis.exists(watched_key(self.channel, ref.chat)))
        except RedisError:
            return False  # no stream to write pieces to either

    async def status(self, ref: ConversationRef, key: str, text: str) -> None:
        """A line the client shows once and replaces in place each time ``key`` comes again."""
        await self._event(ref, "status", {"key": key, "text": text})

    async def message(self, ref: ConversationRef, data: dict[str, Any]) -> None:
        """A message a person sent, for the chat's other clients (another tab) to show."""
        await self._event(ref, "message", data)

    async def _event(self, ref: ConversationRef, kind: str, data: dict[str, Any]) -> None:
        await _passing(
            kind,
            self.redis.xadd(
                stream_key(self.channel, ref.chat),
                {"kind": kind, "payload": json.dumps(data)},
                maxlen=STREAM_LENGTH,
                approximate=True,
            ),
        )

    async def read(self, chat: str, after: str, block_ms: int) -> list[StreamEntry]:
        found = await self.redis.xread({stream_key(self.channel, chat): after}, block=block_ms)
        return [
            parse_entry(entry_id, fields) for _, entries in found for entry_id, fields in entries
        ]

    async def history(self, chat: str) -> list[StreamEntry]:
        entries = await self.redis.xrange(stream_key(self.channel, chat))
        return [parse_entry(entry_id, fields) for entry_id, fields in entries]

    async def last_id(self, chat: str) -> str:
        entries = await self.redis.xrevrange(stream_key(self.channel, chat), count=1)
        return _text(entries[0][0]) if entries else "0-0"

    async def resume(self, chat: str) -> Resume:
        """Taken before the transcript is read: whatever is written after ``until`` may or
        may not be in it, so a client drops what it already shows (by key and id)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xrevrange(stream_key(self.channel, chat), count=1)
            pipe.hgetall(writing_key(self.channel, chat))
            last, writing = await pipe.execute()
        until = _text(last[0][0]) if last else "0-0"
        firsts = [_text(first) for first in writing.values()]
        if not firsts:
            return Resume(until, until, ())
        before = await self.redis.xrevrange(
            stream_key(self.channel, chat), max=f"({min(firsts, key=_order)}", count=1
        )
        after = _text(before[0][0]) if before else "0-0"
        return Resume(after, until, tuple(sorted(int(_text(k)) for k in writing)))


async def _passing(kind: str, write: Awaitable[Any]) -> None:
    """Something passing (progress, a partial reply): written at most once, never retried,
    and skipped while Redis is down, so a turn does not fail for it; the reply itself comes
    through the outbox."""
    try:
        await write
    except RedisError as exc:
        log.info("a %s update was skipped: %s", kind, exc)


def parse_entry(entry_id: Any, fields: dict[Any, Any]) -> StreamEntry:
    decoded = {_text(k): _text(v) for k, v in fields.items()}
    data = json.loads(decoded["payload"])
    kind = decoded["kind"]
    out = OutgoingMessage.from_dict(data) if kind == "reply" else None
    return StreamEntry(_text(entry_id), kind, out, data)


def _order(entry_id: str) -> tuple[int, int]:
    milliseconds, sequence = entry_id.split("-")
    return int(milliseconds), int(sequence)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
