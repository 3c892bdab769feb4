"""Tries to answer a message, counted in Postgres; a message that keeps failing is set aside.

A try is counted, and committed, before its work starts: one that crashes or freezes the
worker (and is picked up again after a restart by the liveness reclaim or the sweep)
counts like one that fails. A message that has used ``max_message_attempts`` tries is not
handled again: it is set aside as failed, with one reply that says so and why, until
someone tries again on purpose (/retry, `switchboard messages retry ID`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update

from bot import replies
from bot.conversation import handle_job_id
from bot.core import Core
from bot.outbox import backoff
from bot.queue import HANDLE_MESSAGE
from bot.storage.models import Conversation, Message
from bot.turns import Reply


@dataclass(frozen=True)
class UsedUp:
    """A message that has had all its tries: how many, and the last one's error (None: the
    last try stopped mid-way, its worker crashed or was killed)."""

    attempts: int
    error: str | None


_BEGIN = (
    update(Message)
    .where(
        Message.id == bindparam("message_id"),
        Message.status == "received",
        Message.attempts < bindparam("most"),
    )
    .values(attempts=Message.attempts + 1, error=None)
    .returning(Message.attempts)
)


async def begin(core: Core, message_id: int) -> int | UsedUp:
    """Count a new try (committed before it starts) and return its number, or say the
    message has used them all."""
    most = core.settings.max_message_attempts
    async with core.autocommit.connect() as conn:
        number = await conn.scalar(_BEGIN, {"message_id": message_id, "most": most})
        if number is not None:
            return int(number)
        row = (
            await conn.execute(
                select(Message.attempts, Message.error).where(Message.id == message_id)
            )
        ).one()
    return UsedUp(row.attempts, row.error)


async def failed(core: Core, message_id: int, number: int, error: str) -> None:
    """Try ``number`` failed: keep its error, and queue the next try after a pause."""
    async with core.autocommit.connect() as conn:
        await conn.execute(
            update(Message)
            .where(Message.id == message_id, Message.status == "received")
            .values(error=error)
        )
    when = datetime.now(UTC) + timedelta(seconds=backoff(number))
    job_id = handle_job_id(message_id, f"try{number + 1}")
    await core.queue.enqueue(HANDLE_MESSAGE, message_id, job_id=job_id, defer_until=when)


def set_aside(used: UsedUp) -> Reply:
    """The one reply to a message that has used its tries; it stays failed."""
    reason = used.error or replies.STOPPED_MIDWAY
    return Reply(
        replies.set_aside(used.attempts, used.error),
        error=f"set aside after {used.attempts} attempts: {reason}",
    )


async def retry(core: Core, *where: Any, again: str) -> Message | None:
    """The newest failed inbound message matching ``where``, reset (its tries too) and queued
    again under the job suffix ``again``; None when there is none."""
    async with core.sessions.begin() as session:
        message = await session.scalar(
            select(Message)
            .where(Message.direction == "in", Message.status == "failed", *where)
            .order_by(Message.id.desc())
            .limit(1)
            .with_for_update()
        )
        if message is None:
            return None
        message.status, message.error, message.attempts = "received", None, 0
    job_id = handle_job_id(message.id, again)
    await core.queue.enqueue(HANDLE_MESSAGE, message.id, job_id=job_id)
    return message


@dataclass(frozen=True)
class Failed:
    """A failed inbound message as `switchboard messages failed` lists it."""

    id: int
    at: datetime
    channel: str
    chat: str
    attempts: int
    error: str | None
    text: str


async def failed_messages(core: Core, limit: int = 50) -> Sequence[Failed]:
    """The newest failed inbound messages, newest first."""
    async with core.sessions() as session:
        rows = await session.execute(
            select(
                Message.id,
                Message.created_at,
                Conversation.channel,
                Conversation.chat,
                Message.attempts,
                Message.error,
                Message.text,
            )
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(Message.direction == "in", Message.status == "failed")
            .order_by(Message.id.desc())
            .limit(limit)
        )
        return [Failed(*row) for row in rows]


def line(message: Failed) -> str:
    """One failed message on one line: id, when, where, tries, why, and what it said."""
    return (
        f"#{message.id}  {message.at:%Y-%m-%d %H:%M}  {message.channel}:{message.chat}  "
        f"{replies.plural(message.attempts, 'attempt')}  {replies.clip(message.error or '', 120)}"
        f"  “{replies.clip(message.text, 60)}”"
    )


async def not_retried(core: Core, message_id: int) -> str:
    """Why the message ``message_id`` cannot be tried again."""
    async with core.sessions() as session:
        message = await session.get(Message, message_id)
    if message is None or message.direction != "in":
        return f"There is no message #{message_id} from a person."
    return f"Message #{message_id} is {message.status}; only a failed message can be retried."
