"""Replies are written to the outbox with the turn that produced them, then delivered by a job.

A reply row and its outbox row commit in the same transaction that marks the inbound
message handled, and only if it was still unanswered: a turn answered twice (a job retried
after a crash) keeps one reply. Delivery holds a row lock while it sends, so two deliver
jobs for the same row never both send; a crash mid-send rolls back to pending and the
recovery sweep sends it again under the same idempotency key.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot import files, replies
from bot.core import Core
from bot.errors import AdapterError
from bot.locks import DELIVERING, conversation_lock
from bot.messages import ConversationRef, OutgoingMessage, SentRef
from bot.queue import DELIVER
from bot.storage.models import Message, Outbox
from bot.turns import Reply, Turn

log = logging.getLogger(__name__)


class Sender(Protocol):
    async def send(self, out: OutgoingMessage) -> SentRef: ...


def deliver_job_id(outbox_id: int, attempt: int) -> str:
    return f"deliver:{outbox_id}:{attempt}"


async def commit_reply(core: Core, turn: Turn, reply: Reply) -> int | None:
    """Mark the message answered with ``reply``; returns the outbox id (None when the turn
    was answered before, or the reply is a refusal with nothing to say)."""
    async with core.sessions.begin() as session:
        claimed = await session.scalar(
            update(Message)
            .where(Message.id == turn.message_id, Message.status == "received")
            .values(
                status=_status(reply),
                error=reply.refused or reply.error,
                handled_at=func.now(),
            )
            .returning(Message.id)
        )
        if claimed is None or not (reply.text or reply.attachments):
            return None
        # The claim holds the row lock, so counting earlier answers (from /retry) is safe.
        earlier = await session.scalar(
            select(func.count()).where(Message.reply_to_id == turn.message_id)
        )
        out = OutgoingMessage(
            ref=turn.ref,
            text=reply.text,
            attachments=reply.attachments,
            idempotency_key=f"reply:{turn.message_id}:{earlier}",
            in_reply_to=turn.message_id,
        )
        outbox_id = await _write(session, turn.conversation_id, out, reply.persona_id)
    assert outbox_id is not None
    await _deliver_soon(core, outbox_id)
    return outbox_id


def _status(reply: Reply) -> str:
    if reply.refused:
        return "refused"
    return "failed" if reply.error else "handled"


async def post(
    core: Core, conversation_id: int, out: OutgoingMessage, persona_id: int | None = None
) -> int | None:
    """A message Switchboard starts (a workflow's reply, a reminder), sent once per key."""
    async with core.sessions.begin() as session:
        outbox_id = await _write(session, conversation_id, out, persona_id)
    if outbox_id is not None:
        await _deliver_soon(core, outbox_id)
    return outbox_id


async def _write(
    session: AsyncSession, conversation_id: int, out: OutgoingMessage, persona_id: int | None
) -> int | None:
    """The outbound message and its outbox row, its files kept in the same transaction; None
    if the idempotency key was used before."""
    async with session.begin_nested() as savepoint:
        out = await _by_reference(session, out)
        message_id = await session.scalar(
            insert(Message)
            .values(
                conversation_id=conversation_id,
                channel=out.ref.channel,
                direction="out",
                persona_id=persona_id,
                text=out.text,
                attachments=[a.metadata() for a in out.attachments],
                status="handled",
                reply_to_id=out.in_reply_to,
            )
            .returning(Message.id)
        )
        outbox_id = await session.scalar(
            insert(Outbox)
            .values(
                message_id=message_id,
                conversation_id=conversation_id,
                channel=out.ref.channel,
                payload=replace(out, message_id=message_id).to_dict(),
                idempotency_key=out.idempotency_key,
            )
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(Outbox.id)
        )
        if outbox_id is None:
            await savepoint.rollback()  # sent before: keep neither row
            return None
    return int(outbox_id)


async def _by_reference(session: AsyncSession, out: OutgoingMessage) -> OutgoingMessage:
    """``out`` with its files' bytes stored (once per content) and only their ids kept."""
    if not any(attachment.data for attachment in out.attachments):
        return out
    kept = await files.keep(await session.connection(), out.attachments)
    return replace(out, attachments=kept)


async def _deliver_soon(core: Core, outbox_id: int) -> None:
    await core.queue.enqueue(DELIVER, outbox_id, job_id=deliver_job_id(outbox_id, 0), priority=True)


async def deliver(core: Core, senders: Mapping[str, Sender], outbox_id: int) -> str:
    """Send the due replies of ``outbox_id``'s conversation, oldest first.

    One deliverer per conversation at a time keeps replies in the order they were written;
    an earlier reply waiting for its retry holds back the later ones, and its retry job
    sends them after it. Returns what became of ``outbox_id``: sent, pending (a retry is
    scheduled), failed, or skipped (not due, already handled, or unknown).
    """
    async with core.sessions() as session:
        conversation_id = await session.scalar(
            select(Outbox.conversation_id).where(Outbox.id == outbox_id)
        )
    if conversation_id is None:
        return "skipped"
    results: dict[int, str] = {}
    async with conversation_lock(core.engine, DELIVERING, conversation_id):
        for row_id in await _pending(core, conversation_id):
            results[row_id] = await _deliver_one(core, senders, row_id)
            if results[row_id] in ("pending", "skipped"):
                break
    expired = [row_id for row_id, status in results.items() if status == "expired"]
    if expired:
        await _note_expired(core, conversation_id, expired)
    return results.get(outbox_id, "skipped")


async def _note_expired(core: Core, conversation_id: int, expired: list[int]) -> None:
    """One short note where replies were dropped for being too late (itself sent now)."""
    async with core.sessions() as session:
        payload = await session.scalar(select(Outbox.payload).where(Outbox.id == expired[0]))
    assert payload is not None
    ref = replace(ConversationRef.from_dict(payload["ref"]), handle="")
    minutes = max(1, int(core.settings.reply_expiry // 60))
    text = replies.replies_expired(len(expired), minutes)
    await post(
        core, conversation_id, OutgoingMessage(ref, text, idempotency_key=f"expired:{expired[0]}")
    )


async def _pending(core: Core, conversation_id: int) -> list[int]:
    async with core.sessions() as session:
        rows = await session.scalars(
            select(Outbox.id)
            .where(Outbox.conversation_id == conversation_id, Outbox.status == "pending")
            .order_by(Outbox.id)
        )
        return list(rows)


async def _deliver_one(core: Core, senders: Mapping[str, Sender], outbox_id: int) -> str:
    async with core.sessions.begin() as session:
        row = await session.scalar(
            select(Outbox)
            .where(
                Outbox.id == outbox_id,
                Outbox.status == "pending",
                Outbox.next_attempt_at <= func.now(),
            )
            .with_for_update(skip_locked=True)
        )
        if row is None:
            return "skipped"
        if _too_late(core, row):
            row.status, row.last_error = "expired", "not delivered in time"
            log.warning("outbox %s expired undelivered after %s attempts", row.id, row.attempts)
            return "expired"
        row.attempts += 1
        out = await _sendable(session, row)
        try:
            sent = await _send(senders, row.channel, out)
        except AdapterError as exc:
            _record_failure(core, row, exc)
        else:
            row.status, row.sent_at, row.external_id = "sent", datetime.now(UTC), sent.external_id
            row.last_error = None
            await session.execute(
                update(Message)
                .where(Message.id == row.message_id)
                .values(external_id=_external(row))
            )
        status, attempts, due = row.status, row.attempts, row.next_attempt_at
    if status == "pending":
        # After commit: the retry must not find the row still locked by this transaction.
        await core.queue.enqueue(
            DELIVER, outbox_id, job_id=deliver_job_id(outbox_id, attempts), defer_until=due
        )
    return status


async def _sendable(session: AsyncSession, row: Outbox) -> OutgoingMessage:
    """The row's message. A row written before files went by reference has their bytes
    inline: they are kept now, and the row and its message rewritten to carry their ids."""
    written = OutgoingMessage.from_dict(row.payload)
    out = await _by_reference(session, replace(written, message_id=row.message_id))
    if out.attachments != written.attachments:
        row.payload = out.to_dict()
        metadata = [attachment.metadata() for attachment in out.attachments]
        await session.execute(
            update(Message).where(Message.id == row.message_id).values(attachments=metadata)
        )
    return out


async def _send(senders: Mapping[str, Sender], channel: str, out: OutgoingMessage) -> SentRef:
    sender = senders.get(channel)
    if sender is None:
        raise AdapterError(f"no adapter for channel {channel!r} is configured", permanent=True)
    return await sender.send(out)


def _external(row: Outbox) -> str | None:
    """The reply's key in ``messages``: platforms number messages per chat, so qualify it
    with the chat, and namespace it so it never meets an inbound message's id."""
    if not row.external_id:
        return None
    ref = row.payload["ref"]
    return f"out:{ref['chat']}:{ref['thread']}:{row.external_id}"


def _too_late(core: Core, row: Outbox) -> bool:
    """A reply undelivered this long would arrive out of context: it is not sent."""
    age = datetime.now(UTC) - row.created_at
    return age.total_seconds() > core.settings.reply_expiry


def _record_failure(core: Core, row: Outbox, exc: AdapterError) -> None:
    row.last_error = str(exc)
    # A platform that asks to wait (429) is waited for, however often: the reply's expiry
    # bounds that, so a storm of rate limits drops nothing that is still worth sending.
    gives_up = row.attempts >= core.settings.max_delivery_attempts and exc.retry_after is None
    if exc.permanent or gives_up:
        row.status = "failed"
        log.error("giving up on outbox %s after %s attempts: %s", row.id, row.attempts, exc)
        return
    delay = backoff(row.attempts, exc.retry_after)
    row.next_attempt_at = datetime.now(UTC) + timedelta(seconds=delay)
    log.warning(
        "outbox %s attempt %s failed (%s); retry in %.1fs", row.id, row.attempts, exc, delay
    )


def backoff(attempt: int, retry_after: float | None = None) -> float:
    """What the platform asked for (Retry-After), else exponential with jitter, capped at 10
    minutes."""
    if retry_after is not None:
        return retry_after
    base = min(600.0, 2.0 ** (attempt - 1))
    return base * (0.5 + random.random() / 2)
