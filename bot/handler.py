"""The worker side of a turn: route a stored message to a command or the active persona,
and commit the reply to the outbox in the transaction that marks the message answered."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import replace

from sqlalchemy import select

from bot import access, attempts, outbox, people, replies
from bot.core import Core
from bot.errors import LimitExceeded, UserFacingError
from bot.health import outage
from bot.locks import HANDLING, conversation_lock
from bot.messages import Attachment, ConversationRef
from bot.router import is_command
from bot.storage.models import Conversation, Message
from bot.turns import Reply, Turn

log = logging.getLogger(__name__)


async def handle(core: Core, message_id: int) -> list[int]:
    """Answer a stored inbound message, and any earlier one of its conversation still waiting.

    Turns of one conversation are taken one at a time, oldest first, under a lock, as a
    person answers in order: a quick command never overtakes a slow model reply, and each
    turn sees the ones before it. Each try is counted first (see bot/attempts.py). Returns
    the outbox ids written (none if already answered, or if the try failed and another
    comes later).
    """
    async with core.sessions() as session:
        conversation_id = await session.scalar(
            select(Message.conversation_id).where(Message.id == message_id)
        )
    if conversation_id is None:
        return []
    written = []
    async with conversation_lock(core.engine, HANDLING, conversation_id):
        for waiting in await _waiting(core, conversation_id, up_to=message_id):
            turn = await load_turn(core, waiting)
            if turn is not None and (reply := await _attempt(core, turn)) is not None:
                outbox_id = await outbox.commit_reply(core, turn, reply)
                written += [outbox_id] if outbox_id is not None else []
    return written


async def _waiting(core: Core, conversation_id: int, *, up_to: int) -> list[int]:
    async with core.sessions() as session:
        rows = await session.scalars(
            select(Message.id)
            .where(
                Message.conversation_id == conversation_id,
                Message.direction == "in",
                Message.status == "received",
                Message.id <= up_to,
            )
            .order_by(Message.id)
        )
        return list(rows)


async def load_turn(core: Core, message_id: int) -> Turn | None:
    async with core.sessions() as session:
        row = (
            await session.execute(
                select(Message, Conversation)
                .join(Conversation, Message.conversation_id == Conversation.id)
                .where(Message.id == message_id)
            )
        ).one_or_none()
    if row is None or row.Message.status != "received":
        return None
    return _turn(row.Message, row.Conversation)


def _turn(message: Message, conversation: Conversation) -> Turn:
    return Turn(
        message_id=message.id,
        conversation_id=conversation.id,
        user_id=message.author_id,
        persona_id=conversation.persona_id,
        text=message.text,
        attachments=tuple(Attachment(**a) for a in message.attachments),
        ref=ConversationRef.from_dict(message.ref or conversation.ref),
        context_since=conversation.context_since,
        created_at=message.created_at,
    )


async def _attempt(core: Core, turn: Turn) -> Reply | None:
    """The turn's reply; None when this try failed and another is queued."""
    number = await attempts.begin(core, turn.message_id)
    if isinstance(number, attempts.UsedUp):
        return attempts.set_aside(number)
    try:
        return await _route(core, turn)
    except Exception as exc:  # a bug or a blip: tried again, a few times at most
        if outage(exc) is not None:
            raise  # the database or the queue went away mid-turn: the job waits it out
        reference = uuid.uuid4().hex[:8]
        log.exception("turn %s failed (reference %s)", turn.message_id, reference)
        error = f"{type(exc).__name__}: {replies.clip(str(exc), 300)} (reference {reference})"
        if number >= core.settings.max_message_attempts:
            return attempts.set_aside(attempts.UsedUp(number, error))
        await attempts.failed(core, turn.message_id, number, error)
        return None


async def _route(core: Core, turn: Turn) -> Reply:
    limit = core.settings.turn_timeout
    try:
        async with asyncio.timeout(limit) as bound:
            return await _answer(core, turn)
    except LimitExceeded as exc:  # hostile or unlucky: refused, and the refusal kept
        actor = f"user:{turn.user_id}" if turn.user_id else "unknown"
        await people.refuse(core, actor, f"message:{turn.message_id}", exc.text)
        return Reply(exc.text, error=exc.text)
    except UserFacingError as exc:
        return Reply(exc.text, error=exc.text)
    except TimeoutError:
        if not bound.expired():
            raise  # a time-out of something inside, not of the turn
        log.warning("turn %s stopped after %g s", turn.message_id, limit)
        return Reply(replies.turn_timed_out(limit), error=f"stopped after {limit:g} s")


async def _answer(core: Core, turn: Turn) -> Reply:
    if (refusal := await access.gate(core, turn)) is not None:
        return refusal
    stripped = turn.text.strip()
    if not stripped and not turn.attachments:
        return Reply(replies.empty_message())
    if len(turn.text) > core.settings.max_input_chars:
        return Reply(replies.message_too_long(len(turn.text), core.settings.max_input_chars))
    if is_command(stripped):
        return await core.commands.dispatch(core, _with_text(turn, stripped))
    for intercept in core.interceptors:
        if (reply := await intercept(core, turn)) is not None:
            return reply
    if core.responder is None:
        return Reply(replies.no_persona_configured())
    return await core.responder.respond(core, turn)


def _with_text(turn: Turn, text: str) -> Turn:
    return replace(turn, text=text)
