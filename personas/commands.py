"""/persona: list the personas, switch the conversation's persona, show one."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot import people, replies
from bot.core import Core
from bot.router import Command
from bot.storage.models import Conversation, Persona
from bot.turns import Reply, Turn
from personas import store

USAGE = "/persona list | /persona use NAME | /persona show NAME"


async def persona_command(core: Core, turn: Turn, args: list[str]) -> Reply:
    action, rest = args[0].lower(), args[1:]
    if action == "list" and not rest:
        return await _list(core, turn)
    if action in ("use", "show") and len(rest) == 1:
        return await (_use if action == "use" else _show)(core, turn, rest[0])
    return Reply(replies.usage_line(USAGE))


async def _list(core: Core, turn: Turn) -> Reply:
    """The personas this person may talk to."""
    async with core.sessions() as session:
        found = (await session.scalars(select(Persona).order_by(Persona.name))).all()
        rows = [p for p in found if await open_to(session, p, turn) is None]
    lines = ["Personas:"]
    for row in rows:
        marker = "→" if row.id == turn.persona_id else " "
        lines.append(f"{marker} {row.name} — {row.description}")
    lines.append("Switch with /persona use NAME.")
    return Reply("\n".join(lines))


async def _use(core: Core, turn: Turn, name: str) -> Reply:
    async with core.sessions.begin() as session:
        persona = await store.by_name(session, name)
        if (limits := await open_to(session, persona, turn)) is not None:
            return await refused(core, turn, persona.name, limits)
        await set_active(session, turn.conversation_id, persona.id)
    return Reply(replies.persona_switched(persona.name, persona.greeting), persona_id=persona.id)


async def open_to(session: AsyncSession, persona: Persona, turn: Turn) -> str | None:
    """None when the persona talks to the person of ``turn`` there; else its limits."""
    return await people.outside(session, persona.allow or {}, turn.user_id, turn.ref)


async def refused(core: Core, turn: Turn, persona: str, limits: str) -> Reply:
    """A polite no, audited like every refusal."""
    actor = f"user:{turn.user_id}" if turn.user_id else "unknown"
    await people.refuse(core, actor, f"persona:{persona}", f"limited to {limits}")
    text = replies.persona_limited(persona, limits)
    return Reply(text, refused=f"persona {persona} is limited to {limits}")


async def set_active(session: AsyncSession, conversation_id: int, persona_id: int) -> None:
    await session.execute(
        update(Conversation).where(Conversation.id == conversation_id).values(persona_id=persona_id)
    )


async def _show(core: Core, turn: Turn, name: str) -> Reply:
    async with core.sessions() as session:
        persona = await store.by_name(session, name)
    model = persona.model or f"{core.settings.model} (the default)"
    lines = [
        f"{persona.name} — {persona.description}",
        f"Model: {model}",
        f"Temperature: {_or_default(persona.temperature)}",
        f"Max tokens: {_or_default(persona.max_tokens)}",
        f"Tools: {', '.join(persona.tools) or 'none'}",
        "System prompt:",
        persona.system_prompt.strip(),
    ]
    return Reply("\n".join(lines))


def _or_default(value: float | None) -> str:
    return "model default" if value is None else f"{value:g}"


COMMANDS = (Command("persona", USAGE, "list, switch or show personas", persona_command, 1, 2),)
