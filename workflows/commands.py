"""Chat commands for workflows: /run, /runs, and each workflow's own command."""

from __future__ import annotations

from bot import people, replies
from bot.core import Core
from bot.router import Command
from bot.turns import Reply, Turn
from workflows import actions, runs, store, templates
from workflows.errors import WorkflowError
from workflows.inputs import parse_pairs
from workflows.validate import read_file

RUN_USAGE = "/run NAME [key=value …] | /run status ID | /run cancel ID | /run retry ID"


async def run_command(core: Core, turn: Turn, args: list[str]) -> Reply:
    action = args[0].lower()
    if action in ("status", "cancel", "retry") and len(args) == 2:
        return await _manage(core, turn, action, args[1])
    return await start_from_chat(core, turn, args[0], args[1:])


async def start_from_chat(core: Core, turn: Turn, name: str, words: list[str]) -> Reply:
    run_id, workflow = await runs.start(
        core,
        name,
        parse_pairs(words),
        trigger="command",
        ref=turn.ref,
        conversation_id=turn.conversation_id,
        user_id=turn.user_id,
    )
    return Reply(f"Started run #{run_id} of {workflow}. I'll answer here when it's done.")


async def _manage(core: Core, turn: Turn, action: str, raw_id: str) -> Reply:
    run_id = _run_id(raw_id)
    await runs.check_theirs(core, await people.viewer(core, turn), run_id, f"/run {action}")
    if action == "status":
        return Reply(await runs.describe(core, run_id))
    if action == "cancel":
        return Reply(await runs.cancel(core, run_id))
    return Reply(await runs.retry(core, run_id))


def _run_id(raw: str) -> int:
    digits = raw.removeprefix("#")
    if not digits.isdigit():
        raise WorkflowError(replies.usage_line(RUN_USAGE, f"'{raw}' is not a run number."))
    return int(digits)


async def approve_command(core: Core, turn: Turn, args: list[str]) -> Reply:
    return await _decide(core, turn, args, approved=True)


async def reject_command(core: Core, turn: Turn, args: list[str]) -> Reply:
    return await _decide(core, turn, args, approved=False)


async def _decide(core: Core, turn: Turn, args: list[str], *, approved: bool) -> Reply:
    note = " ".join(args[1:])
    viewer = await people.viewer(core, turn)
    text = await runs.decide(core, _run_id(args[0]), approved=approved, viewer=viewer, note=note)
    return Reply(text)


async def runs_command(core: Core, turn: Turn, args: list[str]) -> Reply:
    viewer = await people.viewer(core, turn)
    lines = await runs.recent(core, viewer)
    if viewer.staff:
        return Reply("Recent runs:\n" + "\n".join(lines) if lines else "No runs yet.")
    return Reply(
        "Your runs and this conversation's:\n" + "\n".join(lines)
        if lines
        else "No runs of yours yet."
    )


async def workflow_command(core: Core, turn: Turn, name: str, args: list[str]) -> Reply | None:
    """A workflow's own command (/digest last=24h), when one is stored under that name."""
    from sqlalchemy import select

    from bot.storage.models import Workflow

    async with core.sessions() as session:
        found = await session.scalar(select(Workflow.name).where(Workflow.command == f"/{name}"))
    if found is None:
        return None
    return await start_from_chat(core, turn, found, args)


TEMPLATES_USAGE = "/templates | /templates install NAME"


async def templates_command(core: Core, turn: Turn, args: list[str]) -> Reply:
    if not args:
        lines = [
            f"  {t.name}{f' ({t.command})' if t.command else ''} — {t.description}"
            for t in templates.available()
        ]
        return Reply(
            "Workflow templates:\n" + "\n".join(lines) + "\nInstall one with "
            "/templates install NAME."
        )
    if args[0] == "install" and len(args) == 2:
        await people.staff(core, turn, "/templates install")  # it adds a workflow for everyone
        return Reply(await install_template(core, args[1]))
    return Reply(replies.usage_line(TEMPLATES_USAGE))


async def install_template(core: Core, name: str) -> str:
    template = templates.get(name)
    path = templates.install(template, core.settings.resolved_config_dir)
    async with core.sessions.begin() as session:
        saved = await store.save(session, read_file(path), origin=str(path))
    start = template.command or f"/run {template.name}"
    return (
        f"Installed {saved.name} (version {saved.version}) from the template. Start it with "
        f"{start}; edit {path} to adapt it."
    )


ACTION_USAGE = (
    '/t NAME [key=value …] [text|thread|attachment] | /t try "TEMPLATE" [text] | '
    '/t save NAME "TEMPLATE" [model=…] [temperature=…] | /t history [NAME] | /t'
)


async def action_command(core: Core, turn: Turn, args: list[str]) -> Reply:
    viewer = await people.viewer(core, turn)
    if not args:
        return Reply(await actions.listing(core, viewer) + f"\nUsage: {ACTION_USAGE}")
    verb, rest = args[0], args[1:]
    if verb == "history" and len(rest) <= 1:
        return Reply(await actions.history(core, viewer, rest[0] if rest else None))
    if verb == "save" and len(rest) >= 2:
        options = {k: v for k, _, v in (w.partition("=") for w in rest[2:])}
        return Reply(await actions.save(core, viewer, rest[0], rest[1], options))
    if verb == "try" and rest:
        outcome = await actions.run(core, turn, "try", rest[0], None, None, rest[1:])
    elif verb in ("history", "save", "try"):
        return Reply(replies.usage_line(ACTION_USAGE))
    else:
        action = await actions.find(core, viewer, verb)
        outcome = await actions.run(
            core,
            turn,
            action.name,
            action.template,
            action.model,
            action.temperature,
            rest,
            action_id=action.id,
        )
    return Reply(outcome.text, error=None if outcome.ok else outcome.text)


COMMANDS = (
    Command(
        "run", RUN_USAGE, "start a workflow, or see, cancel or retry a run", run_command, 1, None
    ),
    Command("runs", "/runs", "the latest workflow runs", runs_command),
    Command(
        "approve",
        "/approve ID [note]",
        "approve a run that waits for you",
        approve_command,
        1,
        None,
    ),
    Command(
        "reject", "/reject ID [reason]", "reject a run that waits for you", reject_command, 1, None
    ),
    Command("t", ACTION_USAGE, "run a saved prompt action on a message", action_command, 0, None),
    Command("templates", TEMPLATES_USAGE, "ready workflows to install", templates_command, 0, 2),
)
