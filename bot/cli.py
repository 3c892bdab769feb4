"""The `switchboard` command. Heavy imports happen inside commands so `--help` stays instant."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from bot import cli_messages, cli_slack, cli_tools, cli_users, cli_workflows
from bot.cli_support import Typer, run_async, settings_for
from bot.config import Settings

if TYPE_CHECKING:
    from bot.app import LocalChat, Runtime
    from bot.messages import Attachment

T = TypeVar("T")

app = Typer(
    help="Switchboard: AI personas in the chats you already use.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
cli_workflows.register(app)
cli_tools.register(app)
cli_users.register(app)
cli_messages.register(app)
cli_slack.register(app)


def main() -> None:
    app()


@app.command()
def up(
    host: Annotated[
        str | None, typer.Option(metavar="ADDRESS", help="Address for the web chat.")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT", min=0, max=65535, help="Port for the web chat (0: any free port)."
        ),
    ] = None,
    worker: Annotated[
        bool,
        typer.Option(
            help="Run a worker in this process (--no-worker: ingress only, workers elsewhere)."
        ),
    ] = True,
) -> None:
    """Start Switchboard: services, web chat, every enabled channel and a worker, until
    Ctrl+C."""
    from bot.app import run_up

    settings = settings_for()
    started = time.monotonic()

    def ready(url: str, runtime: Runtime) -> None:
        took = time.monotonic() - started
        typer.echo(f"Switchboard is ready in {took:.1f}s.")
        typer.echo(f"  Web chat:  {url}")
        typer.echo("  Terminal:  switchboard chat")
        if "slack" in runtime.core.channels:
            how = "Socket Mode" if settings.slack_app_token else f"events at {url}/slack/events"
            typer.echo(f"  Slack:     {how}")
        typer.echo(f"  Model:     {settings.model}")
        if not worker:
            typer.echo("  Worker:    none here (--no-worker): run `switchboard worker` elsewhere")
        typer.echo("Press Ctrl+C to stop.")

    run_async(
        lambda: run_up(
            settings,
            host=host or settings.web_host,
            port=settings.web_port if port is None else port,
            ready=ready,
            worker=worker,
        )
    )


@app.command()
def worker(
    burst: Annotated[bool, typer.Option(help="Exit when the queue is empty.")] = False,
) -> None:
    """Run a worker process (start as many as you need, on any machine)."""
    from bot.app import run_worker

    settings = settings_for()
    run_async(lambda: run_worker(settings, burst=burst))


@app.command()
def chat(
    message: Annotated[
        str | None,
        typer.Option(
            "--message", "-m", metavar="TEXT", help="Send one message, print the reply, exit."
        ),
    ] = None,
    persona: Annotated[
        str | None, typer.Option("--persona", "-p", metavar="NAME", help="Talk to this persona.")
    ] = None,
    new: Annotated[bool, typer.Option("--new", help="Start a fresh conversation context.")] = False,
    file: Annotated[
        list[Path] | None,
        typer.Option(
            "--file", "-f", metavar="FILE", help="Attach a file to the --message (repeatable)."
        ),
    ] = None,
) -> None:
    """Chat in the terminal (works with or without `switchboard up` running)."""
    if message is not None and not message.strip() and not file:
        typer.secho("error: the message is empty; write some text.", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    if file and message is None:
        typer.secho("error: --file goes with --message.", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    attachments = _attachments(file or [])
    settings = settings_for("WARNING")
    ok = run_async(lambda: _chat(settings, message, persona, new, attachments))
    raise typer.Exit(0 if ok else 1)


def _attachments(paths: list[Path]) -> tuple[Attachment, ...]:
    from bot.errors import UserFacingError
    from bot.files import read_path

    found = []
    for path in paths:
        try:
            found.append(read_path(path))
        except OSError as exc:
            typer.secho(f"error: cannot read {path}: {exc.strerror}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from exc
        except UserFacingError as exc:
            typer.secho(f"error: {exc.text}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from exc
    return tuple(found)


async def _chat(
    settings: Settings,
    message: str | None,
    persona: str | None,
    new: bool,
    attachments: tuple[Attachment, ...] = (),
) -> bool:
    from bot.app import LocalChat, in_process_worker, open_runtime, worker_alive

    async with open_runtime(settings) as runtime:
        chat = LocalChat(runtime, Path.cwd())
        if persona:
            typer.echo(f"Talking to {await chat.select_persona(persona)}.", err=message is not None)
        if new:
            await chat.fresh_context()
        if await worker_alive(runtime):
            return await _converse(chat, message, attachments)
        async with in_process_worker(runtime):
            return await _converse(chat, message, attachments)


async def _converse(
    chat: LocalChat, message: str | None, attachments: tuple[Attachment, ...] = ()
) -> bool:
    if message is not None:
        return await _one(chat, message, attachments, follow_runs=True)
    read = await _line_reader()
    typer.echo("Switchboard chat. /help for commands, Ctrl+D to leave.")
    tail = asyncio.create_task(_show_unprompted(chat), name="switchboard-tail")
    try:
        while True:
            line = await read("you> ")
            if line is None:
                typer.echo("")
                return True
            if line.strip():
                await _one(chat, line)
    finally:
        tail.cancel()


LineReader = Callable[[str], Awaitable[str | None]]


async def _line_reader() -> LineReader:
    """Reads lines from the terminal (None at its end) so that a stopped chat (SIGTERM, a
    closed terminal) exits at once instead of waiting for the next Enter: a terminal is read
    with input() (line editing) in a daemon thread, a pipe through the event loop."""
    loop = asyncio.get_running_loop()
    if sys.stdin.isatty():

        async def from_terminal(prompt: str) -> str | None:
            answer: asyncio.Future[str | None] = loop.create_future()

            def read() -> None:
                try:
                    line: str | None = input(prompt)
                except (EOFError, OSError):
                    line = None
                with contextlib.suppress(RuntimeError):  # the chat ended: nobody waits
                    loop.call_soon_threadsafe(_settle, answer, line)

            threading.Thread(target=read, name="switchboard-input", daemon=True).start()
            return await answer

        return from_terminal
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def from_pipe(prompt: str) -> str | None:
        sys.stdout.write(prompt)
        sys.stdout.flush()
        line = await reader.readline()
        return line.decode(errors="replace").rstrip("\n") if line else None

    return from_pipe


def _settle(future: asyncio.Future[str | None], value: str | None) -> None:
    if not future.done():
        future.set_result(value)


async def _show_unprompted(chat: LocalChat) -> None:
    """Messages nobody waits for (a workflow's result, a reminder) shown as they arrive."""
    async for text in chat.unprompted():
        typer.echo(f"\n{text}\nyou> ", nl=False)


async def _one(
    chat: LocalChat,
    text: str,
    attachments: tuple[Attachment, ...] = (),
    *,
    follow_runs: bool = False,
) -> bool:
    from adapters.terminal import ReplyTimeout

    streamed: list[str] = []

    async def show(piece: str) -> None:
        streamed.append(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()

    try:
        outcome = await chat.say(
            text, on_delta=show, attachments=attachments, follow_runs=follow_runs
        )
    except ReplyTimeout as exc:
        typer.secho(
            f"error: {exc}. Is a worker running? See `switchboard worker`.",
            fg=typer.colors.RED,
            err=True,
        )
        return False
    shown = "".join(streamed)
    if shown and outcome.ok and outcome.text.startswith(shown):
        typer.echo(outcome.text[len(shown) :])
    else:
        typer.echo("\n" if shown else "", nl=False)
        typer.echo(outcome.text, err=not outcome.ok)
    for path in outcome.saved:
        typer.echo(f"(saved {path})")
    return outcome.ok


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations (`up` does this by itself)."""
    settings = settings_for("WARNING")

    async def work() -> None:
        from bot.app import open_runtime
        from bot.storage import db

        async with open_runtime(settings, prepare=False) as runtime:
            await db.upgrade(runtime.core.engine)
            typer.echo(f"Database at revision {await db.current_revision(runtime.core.engine)}.")

    run_async(work)


@db_app.command("current")
def db_current() -> None:
    """Show the schema revision and the newest one available."""
    settings = settings_for("WARNING")

    async def work() -> None:
        from bot.app import open_runtime
        from bot.storage import db

        async with open_runtime(settings, prepare=False) as runtime:
            current = await db.current_revision(runtime.core.engine)
            typer.echo(f"current: {current or 'empty database'}; newest: {db.head_revision()}")

    run_async(work)


@app.command("status")
def status() -> None:
    """How each running Switchboard is: services, worker, every enabled channel (connected
    since, last event, last send, last error), and replies that did not go out. Exits 1
    when an enabled channel is down."""
    settings = settings_for("WARNING")

    async def work() -> bool:
        from bot import status as status_of
        from bot.app import open_runtime, undelivered

        async with open_runtime(settings, prepare=False) as runtime:
            found = await status_of.reports(runtime.redis)
            enabled = [name for name in runtime.core.channels if name != "terminal"]
            missed = await undelivered(runtime.core)
        text, ok = status_of.summary(found, enabled, missed, time.time())
        typer.echo(text)
        return ok

    if not run_async(work):
        raise typer.Exit(1)


@app.command("config")
def show_config() -> None:
    """Show the settings in effect (credentials masked)."""
    settings = settings_for("WARNING")
    for key, value in settings.safe_dump().items():
        typer.echo(f"{key} = {_display(value)}")


def _display(value: Any) -> str:
    return "(not set)" if value in (None, "", {}) else str(value)


if __name__ == "__main__":
    main()
