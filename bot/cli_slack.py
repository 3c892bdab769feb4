"""`switchboard slack`: what setting up the Slack app needs (a composition root: it reads
the command registry and the stored workflows, and the Slack adapter's manifest)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from adapters.slack_manifest import SlashCommand
from bot.cli_support import Typer, run_async, settings_for
from bot.config import Settings

slack_app = Typer(help="Slack: the app manifest to create the Slack app from.")


def register(app: typer.Typer) -> None:
    app.add_typer(slack_app, name="slack", no_args_is_help=True)


@slack_app.command("manifest")
def slack_manifest(
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of YAML.")] = False,
    url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="HTTP mode: the public https URL of /slack/events (default: Socket Mode).",
        ),
    ] = None,
    name: Annotated[str, typer.Option(help="The app's and the bot's name.")] = "Switchboard",
) -> None:
    """Print the app manifest: scopes, events, every slash command (workflows' too)."""
    from adapters.slack_manifest import manifest

    settings = settings_for("WARNING")
    commands = run_async(lambda: _slash_commands(settings))
    found = manifest(commands, name=name, events_url=url)
    if as_json:
        typer.echo(json.dumps(found, indent=2, ensure_ascii=False))
        return
    import yaml

    typer.echo(yaml.safe_dump(found, sort_keys=False, allow_unicode=True), nl=False)


async def _slash_commands(settings: Settings) -> list[SlashCommand]:
    """Every registered command, then every enabled workflow's (from the config folder and
    those saved from chat)."""
    from sqlalchemy import select

    from bot.app import build_commands, open_runtime
    from bot.storage.models import Workflow, WorkflowVersion

    commands = [
        SlashCommand(f"/{c.name}", c.summary, c.usage.partition(" ")[2])
        for c in build_commands().commands.values()
    ]
    query = (
        select(Workflow.command, WorkflowVersion.spec)
        .join(
            WorkflowVersion,
            (WorkflowVersion.workflow_id == Workflow.id)
            & (WorkflowVersion.version == Workflow.version),
        )
        .where(Workflow.command.is_not(None), Workflow.enabled)
        .order_by(Workflow.command)
    )
    async with open_runtime(settings) as runtime, runtime.core.sessions() as session:
        rows = (await session.execute(query)).all()
    return commands + [
        SlashCommand(str(command), str(spec.get("description") or "")) for command, spec in rows
    ]
