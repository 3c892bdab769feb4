"""The worker side of a turn: route a stored message to a command or the active persona,
and commit the reply to the outbox in the transaction that marks the message answered."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import replace
from typing import Any

from sqlalchemy import Row, bindparam, select

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
    async with core.autocommit.connect() as conn:
        conversation_id = await conn.scalar(_CONVERSATION_OF, {"message_id": message_id})
    if conversation_id is None:
        return []
    written = []
    async with conversation_lock(core.engine, HANDLING, conversation_id):
        for number, waiting in enumerate(await _waiting(core, conversation_id, up_to=message_id)):
            # A turn may change what the next one sees (/new, another persona): read again.
            turn = waiting if number == 0 else await load_turn(core, waiting.message_id)
            if turn is not None and (reply := await _attempt(core, turn)) is not None:
                outbox_id = await outbox.commit_reply(core, turn, reply)
                written += [outbox_id] if outbox_id is not None else []
    return written


# Reads of the hot path: single statements in autocommit (no BEGIN and ROLLBACK around
# them), built once, returning plain rows rather than ORM objects.
_CONVERSATION_OF = select(Message.conversation_id).where(Message.id == bindparam("message_id"))
_TURNS = (
    select(
        Message.id,
        Message.conversation_id,
        Message.author_id,
        Message.text,
        Message.attachments,
        Message.ref,
        Message.created_at,
        Conversation.persona_id,
        Conversation.context_since,
        Conversation.ref.label("conversation_ref"),
    )
    .join(Conversation, Message.conversation_id == Conversation.id)
    .where(Message.status == "received")
)
_WAITING = (
    _TURNS.where(
        Message.conversation_id == bindparam("conversation_id"),
        Message.direction == "in",
        Message.id <= bindparam("up_to"),
    )
).order_by(Message.id)
_ONE_TURN = _TURNS.where(Message.id == bindparam("message_id"))


async def _waiting(core: Core, conversation_id: int, *, up_to: int) -> list[Turn]:
    async with core.autocommit.connect() as conn:
        rows = await conn.execute(_WAITING, {"conversation_id": conversation_id, "up_to": up_to})
        return [_turn(row) for row in rows]


async def load_turn(core: Core, message_id: int) -> Turn | None:
    """The turn of a stored message still waiting for its answer (None: answered)."""
    async with core.autocommit.connect() as conn:
        row = (await conn.execute(_ONE_TURN, {"message_id": message_id})).one_or_none()
    return None if row is None else _turn(row)


def _turn(row: Row[Any]) -> Turn:
    return Turn(
        message_id=row.id,
        conversation_id=row.conversation_id,
        user_id=row.author_id,
        persona_id=row.persona_id,
        text=row.text,
        attachments=tuple(Attachment(**a) for a in row.attachments),
        ref=ConversationRef.from_dict(row.ref or row.conversation_ref),
        context_since=row.context_since,
        created_at=row.created_at,
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
