"""A persona answers a turn: its prompt, the conversation so far, its model."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy import bindparam, select

from bot import files, people, replies
from bot.core import Core
from bot.router import is_command
from bot.storage.models import Message, Persona
from bot.tools import ToolContext
from bot.turns import Reply, Turn
from personas import acting, prompt
from personas.commands import refused

if TYPE_CHECKING:
    from bot.llm import DeltaSink

HISTORY_WINDOW = 200


class Saying(Protocol):
    """A stored message, as much as the history sent to a model needs of it."""

    @property
    def id(self) -> int: ...
    @property
    def direction(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def reply_to_id(self) -> int | None: ...


S = TypeVar("S", bound=Saying)


@dataclass(frozen=True)
class Said:
    """What the history query reads of a stored message (a plain row, not an ORM object)."""

    id: int
    direction: str
    status: str
    text: str
    reply_to_id: int | None


_PERSONA = select(Persona.__table__).where(Persona.id == bindparam("id"))
_HISTORY = (
    select(Message.id, Message.direction, Message.status, Message.text, Message.reply_to_id)
    .where(
        Message.conversation_id == bindparam("conversation_id"),
        Message.created_at >= bindparam("since"),
        Message.id < bindparam("before"),
    )
    .order_by(Message.id.desc())
    .limit(HISTORY_WINDOW)
)


class PersonaResponder:
    async def respond(self, core: Core, turn: Turn) -> Reply:
        persona, history = await self._load(core, turn)
        if persona is None:
            return await self._no_persona(core)
        if persona.allow and (limits := await _limits(core, persona.allow, turn)) is not None:
            return await refused(core, turn, persona.name, limits)
        await _working(core, turn)
        model = persona.model or core.settings.model

        def count(msgs: Sequence[dict[str, Any]]) -> int:
            return core.llm.count_tokens(msgs, model)

        attached = await _attached(core, turn, count)
        budget = core.settings.history_token_budget
        messages = prompt.build(
            persona.system_prompt, history, turn.text, budget, count, attached.text
        )
        caller = ToolContext(
            core=core,
            user_id=turn.user_id,
            conversation_id=turn.conversation_id,
            idempotency_key=f"message:{turn.message_id}",
        )
        reply = await acting.answer(
            core,
            persona,
            messages,
            caller=caller,
            on_delta=await _live(core, turn),
            context=_context(turn, persona),
        )
        return Reply(_with_notes(reply.text, attached), persona_id=persona.id)

    async def _load(self, core: Core, turn: Turn) -> tuple[Persona | None, list[Said]]:
        # Two statements on one autocommit connection, as plain rows: this runs every turn.
        async with core.autocommit.connect() as conn:
            found = None
            if turn.persona_id is not None:
                found = (await conn.execute(_PERSONA, {"id": turn.persona_id})).one_or_none()
            rows = await conn.execute(
                _HISTORY,
                {
                    "conversation_id": turn.conversation_id,
                    "since": turn.context_since,
                    "before": turn.message_id,
                },
            )
            said = [Said(*row) for row in rows]
        persona = None if found is None else Persona(**found._mapping)
        return persona, chat_history(said[::-1])

    async def _no_persona(self, core: Core) -> Reply:
        return Reply(replies.no_persona_configured(), error="no persona")


async def _attached(core: Core, turn: Turn, count: prompt.Counter) -> prompt.Attached:
    """The files sent with the message, as the model reads them (none: nothing to add)."""
    if not turn.attachments:
        return prompt.Attached()
    readable, unread = await files.texts(core.autocommit, turn.attachments)
    return prompt.attach(readable, unread, core.settings.file_token_budget, count)


def _with_notes(text: str, attached: prompt.Attached) -> str:
    """The answer, then what of the files was cut or could not be read."""
    if not attached.cut and not attached.unread:
        return text
    unread = [(a.filename, a.content_type) for a in attached.unread]
    return f"{text}\n\n{replies.files_note(attached.cut, unread)}"


def chat_history(rows: Sequence[S]) -> list[S]:
    """The talk with the persona: answered messages and their replies, minus commands."""
    answered = {
        row.id
        for row in rows
        if row.direction == "in" and row.status == "handled" and not is_command(row.text.strip())
    }
    return [
        row
        for row in rows
        if row.id in answered or (row.direction == "out" and row.reply_to_id in answered)
    ]


LIVE_INTERVAL = 0.1  # seconds between updates a person sees while a reply is written


async def _limits(core: Core, allow: dict[str, list[str]], turn: Turn) -> str | None:
    async with core.sessions() as session:
        return await people.outside(session, allow, turn.user_id, turn.ref)


async def _working(core: Core, turn: Turn) -> None:
    """Show that an answer is being written, where the channel can (a placeholder)."""
    if (channel := core.channels.typing(turn.ref.channel)) is not None:
        await channel.typing(turn.ref, turn.message_id)


async def _live(core: Core, turn: Turn) -> DeltaSink | None:
    """Stream to channels that can show a reply as it is written, while someone watches
    (streaming costs the model call about twice the CPU); the rest get it whole.

    Pieces are gathered and passed on at most every ``LIVE_INTERVAL``: a person cannot read
    faster, and every update costs a write. The finished reply still comes by the outbox.
    """
    channel = core.channels.live(turn.ref.channel)
    if channel is None or not core.settings.stream_replies:
        return None
    if not await channel.watching(turn.ref):
        return None
    pending: list[str] = []
    last = [0.0]

    async def show(text: str) -> None:
        pending.append(text)
        if time.monotonic() - last[0] >= LIVE_INTERVAL:
            await channel.delta(turn.ref, turn.message_id, "".join(pending))
            pending.clear()
            last[0] = time.monotonic()

    return show


def _context(turn: Turn, persona: Persona) -> dict[str, Any]:
    return {
        "persona_id": persona.id,
        "conversation_id": turn.conversation_id,
        "message_id": turn.message_id,
    }
