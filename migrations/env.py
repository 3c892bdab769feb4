"""Alembic environment: the URL comes from Switchboard's settings, never from a file."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from bot.storage.models import Base

target_metadata = Base.metadata


def _url() -> str:
    url = context.config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from bot.config import Settings
    from bot.services import async_database_url

    settings = Settings()
    if not settings.database_url:
        raise SystemExit(
            "Set DATABASE_URL, or use `switchboard db upgrade` for the embedded database."
        )
    return async_database_url(settings.database_url)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (connection := context.config.attributes.get("connection")) is not None:
    _run(connection)  # handed over by bot.storage.db.upgrade, which holds the migration lock
else:
    asyncio.run(_run_async())
