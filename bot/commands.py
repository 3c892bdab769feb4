"""Built-in commands: help, a fresh context, history, export, usage and retry."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select

from bot import attempts, replies
from bot.conversation import reset_context
from bot.core import Core
from bot.messages import Attachment
from bot.router import Command
from bot.storage.models import Message, Persona
from bot.turns import Reply, Turn
from bot.usage import conversation_usage, format_usage

HISTORY_DEFAULT = 10
HISTORY_MAX = 100


async def help_command(core: Core, turn: Turn, args: list[str]) -> Reply:
    return Reply(replies.help_text(core.commands.listing()))


async def new_command(core: Core, turn: Turn, args: list[str]) -> Reply:
    await reset_context(core, turn.conversation_id)
    async with core.sessions() as session:
        persona = await session.scalar(select(Persona.name).where(Persona.id == turn.persona_id))
    return Reply(replies.new_context(persona or "no persona"))


async def history_command(core: Core, turn: Turn, args: list[str]) -> Reply:
    count = _count_arg(args)
    if count is None:
        return Reply(replies.usage_line(HISTORY.usage, "N must be a number from 1 to 100."))
    rows = await conversation_messages(core, turn, limit=count, since=turn.context_since)
    if not rows:
        return Reply(replies.no_history())
    return Reply("\n".join(_history_line(row) for row in rows))


def _count_arg(args: list[str]) -> int | None:
    if not args:
        return HISTORY_DEFAULT
    if not args[0].isdigit() or not 1 <= int(args[0]) <= HISTORY_MAX:
        return None
    return int(args[0])


def _history_line(row: Message) -> str:
    who = "you" if row.direction == "in" else "assistant"
    snippet = row.text if len(row.text) <= 200 else row.text[:199] + "…"
    return f"[{row.created_at:%Y-%m-%d %H:%M}] {who}: {snippet}"


async def conversation_messages(
    core: Core, turn: Turn, *, limit: int | None = None, since: datetime | None = None
) -> Sequence[Message]:
    """The conversation's messages in order, oldest first, excluding the command asking."""
    query = (
        select(Message)
        .where(Message.conversation_id == turn.conversation_id, Message.id != turn.message_id)
        .order_by(Message.id.desc())
        .limit(limit)
    )
    if since is not None:
        query = query.where(Message.created_at >= since)
    async with core.sessions() as session:
        rows = list((await session.scalars(query)).all())
    return rows[::-1]


async def export_command(core: Core, turn: Turn, args: list[str]) -> Reply:
    rows = await conversation_messages(core, turn)
    document = render_markdown(turn, rows)
    name = f"conversation-{turn.conversation_id}-{turn.created_at:%Y%m%d-%H%M}.md"
    attachment = Attachment(name, "text/markdown", data=document.encode())
    return Reply(replies.export_caption(len(rows)), attachments=(attachment,))


def render_markdown(turn: Turn, rows: Sequence[Message]) -> str:
    lines = [
        f"# Conversation {turn.conversation_id} ({turn.ref.channel})",
        "",
        f"Exported {turn.created_at:%Y-%m-%d %H:%M %Z}, {len(rows)} messages.",
        "",
    ]
    for row in rows:
        who = "**You**" if row.direction == "in" else "**Assistant**"
        lines += [f"### {who} · {row.created_at:%Y-%m-%d %H:%M:%S}", "", row.text, ""]
        lines += [f"- attachment: {a['filename']} ({a['size']} bytes)" for a in row.attachments]
    return "\n".join(lines).rstrip() + "\n"


async def usage_command(core: Core, turn: Turn, args: list[str]) -> Reply:
    async with core.sessions() as session:
        rows = await conversation_usage(session, turn.conversation_id)
    return Reply(format_usage(rows) if rows else replies.no_usage())


async def retry_command(core: Core, turn: Turn, args: list[str]) -> Reply:
    # The asking message's id is unique per request, so arq takes it as a new job.
    again = str(turn.message_id)
    failed = await attempts.retry(
        core, Message.conversation_id == turn.conversation_id, again=again
    )
    if failed is None:
        return Reply(replies.nothing_to_retry())
    return Reply(replies.retrying(failed.text[:80]))


HISTORY = Command(
    "history", "/history [N]", "show the last N messages (default 10)", history_command, 0, 1
)

BUILTINS = (
    Command("help", "/help", "list the commands", help_command),
    Command("new", "/new", "start a fresh conversation context", new_command),
    HISTORY,
    Command("export", "/export", "this conversation as a Markdown file", export_command),
    Command("usage", "/usage", "tokens and cost in this conversation", usage_command),
    Command("retry", "/retry", "answer the last failed message again", retry_command),
)
