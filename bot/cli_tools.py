"""`switchboard tools` and `switchboard audit`: what personas and workflows can do, and
what they did."""

from __future__ import annotations

from typing import Annotated

import typer

from bot.cli_support import Typer, run_async, settings_for

tools_app = Typer(help="Tools personas and workflows can call.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(tools_app, name="tools")
    app.command("audit")(audit)


@tools_app.command("list")
def tools_list() -> None:
    """Every tool, one per line: its name and what it does."""
    from bot.tools import catalog

    tools = catalog()
    for name in tools.names():
        tool = tools.get(name)
        marks = " [acts: calls are never repeated]" if tool.effects else ""
        typer.echo(f"{name} — {tool.description}{marks}")


@tools_app.command("show")
def tools_show(name: Annotated[str, typer.Argument(metavar="NAME")]) -> None:
    """A tool's arguments, as a workflow's tool node or a persona passes them."""
    from bot.tools import ToolError, catalog

    try:
        tool = catalog().get(name)
    except ToolError as exc:
        typer.secho(f"error: {exc.text}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{tool.name} — {tool.description}")
    typer.echo(f"acts on the world: {_yes(tool.effects)}; works offline: {_yes(tool.offline)}")
    typer.echo("arguments:")
    for arg, info in tool.params.model_fields.items():
        needed = "required" if info.is_required() else f"default {info.default!r}"
        kind = getattr(info.annotation, "__name__", str(info.annotation))
        typer.echo(f"  {info.alias or arg} ({kind}, {needed}): {info.description or ''}")


def audit(
    limit: Annotated[int, typer.Option(metavar="N", help="How many events, newest first.")] = 50,
    tool: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Only calls of this tool (or 'GET https://…' requests)."),
    ] = None,
    run: Annotated[
        int | None, typer.Option(metavar="ID", help="Only calls made by this workflow run.")
    ] = None,
    action: Annotated[
        str | None,
        typer.Option(metavar="KIND", help="Only this kind of event: refused, approved, …"),
    ] = None,
) -> None:
    """The audit log: every tool call and workflow request, every refusal and approval, who
    asked, and how it went."""
    settings = settings_for("WARNING")

    async def work() -> None:
        from bot import audit as log
        from bot.app import open_runtime

        async with open_runtime(settings, config=False) as runtime:
            async with runtime.core.sessions() as session:
                actor = f"run:{run}/" if run is not None else None
                events = await log.recent(
                    session, limit=limit, subject=tool, actor=actor, action=action
                )
            if not events:
                filtered = tool is not None or run is not None or action is not None
                typer.echo("Nothing recorded matches." if filtered else "Nothing recorded yet.")
            for event in reversed(events):
                typer.echo(log.line(event))

    run_async(work)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
