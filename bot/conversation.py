"""The two halves of a conversation turn.

``receive`` is the inbound path every adapter calls before it acknowledges a platform: it
persists the message once (deduplicated on channel + external id), resolves who wrote it and
which conversation it belongs to, and enqueues the work. Nothing slow happens here.

``handle`` runs in a worker: it routes the stored message to a command or the active persona
and commits the reply to the outbox in the same transaction that marks the message handled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from sqlalchemy import ColumnElement, and_, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from bot import files, people, replies
from bot.channels import Line, Received
from bot.core import Core
from bot.errors import ServiceUnavailable
from bot.health import describe, outage
from bot.messages import Attachment, ConversationRef, IncomingMessage, OutgoingMessage
from bot.queue import HANDLE_MESSAGE
from bot.storage.models import ChannelAccount, Conversation, Message, Outbox, Persona, User

log = logging.getLogger(__name__)


def handle_job_id(message_id: int, attempt: int | str = 0) -> str:
    return f"msg:{message_id}" if attempt == 0 else f"msg:{message_id}:{attempt}"


async def receive(core: Core, incoming: IncomingMessage) -> Received:
    """Store ``incoming`` once and queue its answer. A database that cannot be reached
    refuses it (``ServiceUnavailable``: nothing was stored, the sender may send it again);
    a queue that cannot be reached does not, since what is stored gets queued again once
    the queue is back (the sweep, a starting worker, or the sender's retry)."""
    try:
        stored = await _store(core, incoming)
    except Exception as exc:
        if outage(exc) is None:
            raise
        raise ServiceUnavailable("database", replies.database_down()) from exc
    if stored.waiting:
        await _enqueue(core, stored.message_id)
    return Received(stored.message_id, stored.conversation_id, stored.duplicate)


@dataclass(frozen=True)
class _Stored:
    message_id: int
    conversation_id: int
    duplicate: bool  # stored before: a platform's or a client's retry
    waiting: bool  # not answered yet


async def _store(core: Core, incoming: IncomingMessage) -> _Stored:
    # This runs before every platform ack. A known person in a known conversation costs two
    # single statements in autocommit; a first message creates them in a transaction.
    async with core.autocommit.connect() as conn:
        if any(attachment.data for attachment in incoming.attachments):
            incoming = replace(incoming, attachments=await files.keep(conn, incoming.attachments))
        user_id, conversation_id = await _lookup(conn, incoming)
        if user_id and conversation_id:
            return await _insert(conn, incoming, user_id, conversation_id)
    async with core.engine.begin() as conn:
        user_id, conversation_id = await _resolve(conn, core, incoming)
        return await _insert(conn, incoming, user_id, conversation_id)


async def _enqueue(core: Core, message_id: int) -> None:
    try:
        await core.queue.enqueue(HANDLE_MESSAGE, message_id, job_id=handle_job_id(message_id))
    except Exception as exc:
        if outage(exc) is None:
            raise
        log.warning(
            "message %d is stored, but the queue is down (%s); it is queued when the queue is back",
            message_id,
            describe(exc),
        )


async def _insert(
    conn: AsyncConnection, incoming: IncomingMessage, user_id: int, conversation_id: int
) -> _Stored:
    """The message stored, or the one stored before under its id (a retry), which is
    queued again if still unanswered: the first try may have been stored but not queued."""
    inserted = await conn.scalar(
        _INSERT_MESSAGE, _message_values(incoming, user_id, conversation_id)
    )
    if inserted is not None:
        return _Stored(int(inserted), conversation_id, duplicate=False, waiting=True)
    message_id, status = await _existing_message(conn, incoming)
    return _Stored(message_id, conversation_id, duplicate=True, waiting=status == "received")


_LOOKUP = text(
    """
    SELECT (SELECT user_id FROM channel_accounts
             WHERE channel = :channel AND external_id = :author),
           (SELECT id FROM conversations
             WHERE channel = :channel AND workspace = :workspace
               AND chat = :chat AND thread = :thread)
    """
)

_INSERT_MESSAGE = (
    insert(Message)
    .on_conflict_do_nothing(index_elements=["channel", "external_id"])
    .returning(Message.id)
)


def _message_values(
    incoming: IncomingMessage, user_id: int, conversation_id: int
) -> dict[str, object]:
    return {
        "conversation_id": conversation_id,
        "channel": incoming.ref.channel,
        "external_id": incoming.external_id,
        "direction": "in",
        "author_id": user_id,
        "text": incoming.text,
        "attachments": [a.metadata() for a in incoming.attachments],
        "ref": incoming.ref.to_dict(),
        "status": "received",
    }


async def _lookup(
    conn: AsyncConnection, incoming: IncomingMessage
) -> tuple[int | None, int | None]:
    ref = incoming.ref
    row = (
        await conn.execute(
            _LOOKUP,
            {
                "channel": ref.channel,
                "author": incoming.author.external_id,
                "workspace": ref.workspace,
                "chat": ref.chat,
                "thread": ref.thread,
            },
        )
    ).one()
    return row[0], row[1]


async def _resolve(conn: AsyncConnection, core: Core, incoming: IncomingMessage) -> tuple[int, int]:
    user_id, conversation_id = await _lookup(conn, incoming)
    user_id = user_id or await _create_account(conn, incoming)
    conversation_id = conversation_id or await _create_conversation(conn, core, incoming.ref)
    return user_id, conversation_id


async def _create_account(conn: AsyncConnection, incoming: IncomingMessage) -> int:
    channel, author = incoming.ref.channel, incoming.author
    user_id = await conn.scalar(
        insert(User)
        .values(display_name=author.display_name, role=people.role_for_new_account(channel))
        .returning(User.id)
    )
    inserted = await conn.scalar(
        insert(ChannelAccount)
        .values(
            channel=channel,
            external_id=author.external_id,
            user_id=user_id,
            display_name=author.display_name,
        )
        .on_conflict_do_nothing()
        .returning(ChannelAccount.user_id)
    )
    if inserted is not None:
        return int(inserted)
    # Another receive created the account first: use theirs, drop the user made for nothing.
    await conn.execute(delete(User).where(User.id == user_id))
    found = await conn.scalar(
        select(ChannelAccount.user_id).where(
            ChannelAccount.channel == channel, ChannelAccount.external_id == author.external_id
        )
    )
    assert found is not None
    return int(found)


async def conversation_for(core: Core, ref: ConversationRef) -> int:
    """The conversation at ``ref``, created with the default persona if it is new."""
    async with core.engine.begin() as conn:
        return await _create_conversation(conn, core, ref)


async def _create_conversation(conn: AsyncConnection, core: Core, ref: ConversationRef) -> int:
    persona = select(Persona.id).where(Persona.name == core.settings.default_persona)
    key = {
        "channel": ref.channel,
        "workspace": ref.workspace,
        "chat": ref.chat,
        "thread": ref.thread,
    }
    inserted = await conn.scalar(
        insert(Conversation)
        # A reply handle answers one message, not the conversation: not kept with it.
        .values(**key, ref=replace(ref, handle="").to_dict(), persona_id=persona.scalar_subquery())
        .on_conflict_do_nothing()
        .returning(Conversation.id)
    )
    if inserted is not None:
        return int(inserted)
    found = await conn.scalar(select(Conversation.id).filter_by(**key))
    assert found is not None
    return int(found)


async def _existing_message(conn: AsyncConnection, incoming: IncomingMessage) -> tuple[int, str]:
    found = (
        await conn.execute(
            select(Message.id, Message.status).where(
                Message.channel == incoming.ref.channel,
                Message.external_id == incoming.external_id,
            )
        )
    ).one()
    return int(found.id), str(found.status)


async def reset_context(core: Core, conversation_id: int) -> None:
    """/new: earlier messages stay stored but leave the model's context."""
    async with core.sessions.begin() as session:
        await session.execute(
            update(Conversation)
            .where(Conversation.id == conversation_id)
            .values(context_since=func.now())
        )


def _at(ref: ConversationRef) -> ColumnElement[bool]:
    """Messages of the conversation at ``ref``, with conversations joined."""
    return and_(
        Conversation.id == Message.conversation_id,
        Conversation.channel == ref.channel,
        Conversation.workspace == ref.workspace,
        Conversation.chat == ref.chat,
        Conversation.thread == ref.thread,
    )


async def transcript(core: Core, ref: ConversationRef, limit: int = 50) -> list[Line]:
    """The latest messages at ``ref``, oldest first (empty for a conversation not yet begun)."""
    query = (
        select(
            Message.id,
            Message.direction,
            Message.text,
            Message.reply_to_id,
            Message.attachments,
            Outbox.idempotency_key,
        )
        .join(Conversation, _at(ref))
        .outerjoin(Outbox, Outbox.message_id == Message.id)
        .order_by(Message.id.desc())
        .limit(limit)
    )
    async with core.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        Line(
            row.id,
            row.direction,
            row.text,
            row.reply_to_id,
            files=tuple(a["filename"] for a in row.attachments or ()),
            key=row.idempotency_key or "",
        )
        for row in reversed(rows)
    ]


async def message_file(
    core: Core, ref: ConversationRef, message_id: int, index: int
) -> Attachment | None:
    """The ``index``-th file of a message at ``ref``, with its content; None when the
    conversation at ``ref`` has no such message or file, so a channel serves only its own.
    Files of either direction are in the files table; a reply sent before files went by
    reference has its bytes inline in its outbox row."""
    query = (
        select(Message.attachments, Outbox.payload)
        .join(Conversation, _at(ref))
        .outerjoin(Outbox, Outbox.message_id == Message.id)
        .where(Message.id == message_id)
    )
    async with core.engine.connect() as conn:
        row = (await conn.execute(query)).one_or_none()
    if row is None or not 0 <= index < len(row.attachments or ()):
        return None
    kept = row.attachments[index]
    attachment = Attachment(
        kept["filename"], kept["content_type"], kept["size"], file_id=kept.get("file_id")
    )
    if attachment.file_id is None and row.payload is not None:
        attachment = OutgoingMessage.from_dict(row.payload).attachments[index]
    return replace(attachment, data=await files.content(core.engine, attachment))


async def message_status(core: Core, message_id: int) -> str | None:
    async with core.sessions() as session:
        return await session.scalar(select(Message.status).where(Message.id == message_id))
