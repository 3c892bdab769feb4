"""Prompt actions: reusable prompt templates run on a message, the thread, a file, or text.

`/t NAME [key=value …] [text]` runs a saved action on the text (or, without text, on the
file sent with the command, else on the message before it and its text files; with the
word `thread`, on the conversation so far; with `attachment`, on the newest file). `/t try`
runs a template without saving it; `/t save` keeps it. Every run is recorded with its
input, output, model, tokens, cost and status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.dialects.postgresql import insert

from bot import files, replies
from bot.commands import conversation_messages
from bot.core import Core
from bot.errors import UserFacingError
from bot.messages import Attachment
from bot.names import NAME
from bot.people import Viewer
from bot.router import is_command
from bot.storage.models import Message, PromptAction, PromptActionRun
from bot.turns import Turn
from personas.responder import chat_history
from workflows.errors import WorkflowError
from workflows.expressions import names_used, render, unsafe_attributes

VARIABLES = ("text", "thread")


@dataclass(frozen=True)
class Outcome:
    text: str
    ok: bool


def check_template(template: str, given: set[str] | None) -> None:
    """Refuse a template that reaches past the sandbox, or (with ``given``, when it runs)
    reads names it will not get."""
    if unsafe := unsafe_attributes(template):
        raise WorkflowError(f"templates may not use {', '.join(sorted(unsafe))}")
    if given is None:
        return
    unknown = names_used(template) - set(VARIABLES) - given
    if unknown:
        raise WorkflowError(
            f"the template reads {', '.join(sorted(unknown))}, which it will not get: "
            "use {{ text }} for the message, or give key=value when you run it"
        )


async def save(
    core: Core, viewer: Viewer, name: str, template: str, options: dict[str, str]
) -> str:
    """Keep an action: the owner's and admins' are shared with everyone, a member's are
    their own (one of a shared name comes first for them and changes nothing for others)."""
    if not NAME.match(name) or name in ("try", "save", "history", "delete"):
        raise WorkflowError(f"'{name}' cannot name an action: use lowercase letters and digits")
    check_template(template, None)  # its own variables come with each run (key=value)
    values = {
        "name": name,
        "owner_id": None if viewer.staff else viewer.user_id,
        "template": template,
        "model": options.get("model"),
        "temperature": _temperature(options.get("temperature")),
        "created_by": viewer.user_id,
    }
    statement = insert(PromptAction).values(**values)
    async with core.sessions.begin() as session:
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["name", "owner_id"],
                set_={**{k: statement.excluded[k] for k in values}, "updated_at": func.now()},
            )
        )
    whose = "everyone here may run it" if viewer.staff else "it is yours alone"
    return (
        f"Saved the action {name}. Run it with /t {name} (on the message before, or on "
        f"text); {whose}."
    )


async def run(
    core: Core,
    turn: Turn,
    name: str,
    template: str,
    model: str | None,
    temperature: float | None,
    words: list[str],
    action_id: int | None = None,
) -> Outcome:
    variables, rest = _split(words)
    source = await _source(core, turn, rest)
    check_template(template, set(variables))
    given = {**variables, "text": source, "thread": source}
    prompt = str(await render(template, given, core.sandbox))
    chosen = model or core.settings.model
    try:
        completion = await core.llm.complete(
            [{"role": "user", "content": prompt}],
            model=chosen,
            temperature=temperature,
            context={"conversation_id": turn.conversation_id, "message_id": turn.message_id},
        )
    except UserFacingError as exc:
        await _record(core, turn, name, template, action_id, source, None, chosen, exc.text)
        return Outcome(exc.text, ok=False)
    await _record(core, turn, name, template, action_id, source, completion, chosen, None)
    return Outcome(completion.text, ok=True)


def _runnable(viewer: Viewer) -> Any:
    """The actions ``viewer`` runs by name: their own and the shared ones."""
    return or_(PromptAction.owner_id == viewer.user_id, PromptAction.owner_id.is_(None))


async def find(core: Core, viewer: Viewer, name: str) -> PromptAction:
    """The action ``name`` as ``viewer`` knows it: their own first, else the shared one."""
    async with core.sessions() as session:
        action = await session.scalar(
            select(PromptAction)
            .where(PromptAction.name == name, _runnable(viewer))
            .order_by(PromptAction.owner_id.nulls_last())
            .limit(1)
        )
        if action is None:
            known = await session.scalars(
                select(PromptAction.name).where(_runnable(viewer)).distinct()
            )
            listing = ", ".join(sorted(known)) or 'none yet: save one with /t save NAME "template"'
            raise WorkflowError(f"There is no action called '{name}'. Actions: {listing}.")
        return action


async def listing(core: Core, viewer: Viewer) -> str:
    """The actions ``viewer`` may run; the owner and admins see members' own ones too."""
    query = select(PromptAction).order_by(PromptAction.name, PromptAction.owner_id.nulls_first())
    if not viewer.staff:
        query = query.where(_runnable(viewer))
    async with core.sessions() as session:
        actions = (await session.scalars(query)).all()
    if not actions:
        return 'No actions yet. Try one: /t try "Summarise in one line: {{ text }}"'
    return "Actions:\n" + "\n".join(_action_line(a, viewer) for a in actions)


def _action_line(action: PromptAction, viewer: Viewer) -> str:
    whose = ""
    if action.owner_id is not None:
        whose = " (yours)" if action.owner_id == viewer.user_id else f" (#{action.owner_id}'s)"
    return f"  {action.name} — {replies.clip(action.template, 70)}{whose}"


async def history(core: Core, viewer: Viewer, name: str | None) -> str:
    """The latest runs ``viewer`` may see: their own and their conversation's (all of them
    for the owner and admins)."""
    query = (
        select(PromptActionRun)
        .where(viewer.sees(PromptActionRun.user_id, PromptActionRun.conversation_id))
        .order_by(PromptActionRun.id.desc())
        .limit(10)
    )
    if name:
        query = query.where(PromptActionRun.name == name)
    async with core.sessions() as session:
        rows = (await session.scalars(query)).all()
    if not rows:
        return "No action runs yet."
    return "Recent action runs:\n" + "\n".join(_run_line(row) for row in rows)


def _run_line(row: PromptActionRun) -> str:
    tokens = row.prompt_tokens + row.completion_tokens
    cost = replies.cost(row.cost_usd)
    result = replies.clip(row.output or row.error or "", 40)
    return (
        f"  {row.created_at:%m-%d %H:%M} {row.name} · {row.model} · {row.status} · "
        f"{tokens} tokens, {cost} — {replies.clip(row.input, 40)} → {result}"
    )


def _split(words: list[str]) -> tuple[dict[str, str], list[str]]:
    variables: dict[str, str] = {}
    rest: list[str] = []
    for word in words:
        key, sep, value = word.partition("=")
        if sep and key.isidentifier() and not rest:
            variables[key] = value
        else:
            rest.append(word)
    return variables, rest


async def _source(core: Core, turn: Turn, rest: list[str]) -> str:
    """The text to work on: given, the whole thread, an attached file, or (by default) the
    file attached to the command, else the message before it with its text files."""
    if rest == ["thread"]:
        return await _thread(core, turn)
    if rest == ["attachment"]:
        return await _attachment(core, turn)
    if rest:
        return " ".join(rest)
    if turn.attachments:
        return await _with_files(core, "", turn.attachments, strict=True)
    for text, attached in await _earlier(core, turn):
        if not is_command(text.strip()) and (text.strip() or attached):
            return await _with_files(core, text, attached, strict=False)
    raise WorkflowError(
        "There is no message before this one to work on: add the text after the name."
    )


async def _earlier(core: Core, turn: Turn) -> list[tuple[str, tuple[Attachment, ...]]]:
    """The person's messages before this one, newest first, with their attachments."""
    async with core.sessions() as session:
        rows = await session.execute(
            select(Message.text, Message.attachments)
            .where(
                Message.conversation_id == turn.conversation_id,
                Message.direction == "in",
                Message.id < turn.message_id,
            )
            .order_by(Message.id.desc())
            .limit(20)
        )
        return [(text, tuple(Attachment(**a) for a in attached)) for text, attached in rows]


async def _attachment(core: Core, turn: Turn) -> str:
    """The newest file: attached to the command, or to one of the messages before it."""
    if turn.attachments:
        return await _with_files(core, "", turn.attachments[-1:], strict=True)
    for _, attached in await _earlier(core, turn):
        if attached:
            return await _with_files(core, "", attached[-1:], strict=True)
    raise WorkflowError("There is no attached file to work on: attach one to the command.")


async def _with_files(
    core: Core, text: str, attached: tuple[Attachment, ...], *, strict: bool
) -> str:
    """The text followed by each text file's content (other files refused when ``strict``,
    else left out)."""
    read, others = await files.texts(core.autocommit, attached)
    if strict and others:
        raise UserFacingError(replies.not_text(others[0].filename, others[0].content_type))
    parts = [text] if text.strip() else []
    for attachment, content in read:
        alone = not parts and len(attached) == 1
        parts.append(content if alone else files.section(attachment.filename, content))
    if not parts:
        raise WorkflowError("The message before has no text or text file to work on.")
    return "\n\n".join(parts)


async def _thread(core: Core, turn: Turn) -> str:
    """The talk since the last /new, as the persona sees it (commands and their replies out)."""
    rows = chat_history(await conversation_messages(core, turn, since=turn.context_since))
    lines = [f"{'Person' if r.direction == 'in' else 'Assistant'}: {r.text}" for r in rows]
    if not lines:
        raise WorkflowError("This conversation has nothing to work on yet.")
    return "\n".join(lines)


async def _record(
    core: Core,
    turn: Turn,
    name: str,
    template: str,
    action_id: int | None,
    source: str,
    completion: Any,
    model: str,
    error: str | None,
) -> None:
    async with core.sessions.begin() as session:
        session.add(
            PromptActionRun(
                action_id=action_id,
                name=name,
                template=template,
                conversation_id=turn.conversation_id,
                user_id=turn.user_id,
                input=source,
                output=completion.text if completion else None,
                model=completion.model if completion else model,
                prompt_tokens=completion.prompt_tokens if completion else 0,
                completion_tokens=completion.completion_tokens if completion else 0,
                cost_usd=completion.cost_usd if completion else None,
                status="error" if error else "ok",
                error=error,
            )
        )


def _temperature(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise WorkflowError(f"temperature must be a number from 0 to 2, got '{raw}'") from None
    if not 0 <= value <= 2:
        raise WorkflowError(f"temperature must be a number from 0 to 2, got '{raw}'")
    return value
