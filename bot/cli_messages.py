"""`switchboard messages`: the messages Switchboard set aside, and trying one again."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer

from bot.cli_support import Typer, run_async, settings_for

messages_app = Typer(help="Messages that could not be answered.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(messages_app, name="messages")


@messages_app.command("failed")
def failed(
    limit: Annotated[int, typer.Option(metavar="N", help="How many, newest first.")] = 50,
) -> None:
    """Messages that failed: id, when, where, tries, the last error and what they said."""
    settings = settings_for("WARNING")

    async def work() -> None:
        from bot import attempts
        from bot.app import open_runtime

        async with open_runtime(settings, config=False) as runtime:
            found = await attempts.failed_messages(runtime.core, limit)
        if not found:
            typer.echo("No failed messages.")
        for message in found:
            typer.echo(attempts.line(message))

    run_async(work)


@messages_app.command("retry")
def retry(message_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Try a failed message again from the start (its tries are reset); a worker answers it
    in its conversation."""
    settings = settings_for("WARNING")

    async def work() -> bool:
        from bot import attempts
        from bot.app import open_runtime
        from bot.storage.models import Message

        async with open_runtime(settings, config=False) as runtime:
            again = f"cli{uuid.uuid4().hex[:8]}"
            queued = await attempts.retry(runtime.core, Message.id == message_id, again=again)
            if queued is None:
                typer.secho(
                    await attempts.not_retried(runtime.core, message_id), err=True, fg="red"
                )
                return False
        typer.echo(
            f"Message #{message_id} is queued again: a running worker (`switchboard up` or "
            "`switchboard worker`) answers it in its conversation."
        )
        return True

    raise typer.Exit(0 if run_async(work) else 1)
