"""Engine, sessions and schema upgrades."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

import migrations

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(migrations.__file__).parent


def make_engine(url: str, *, pool_size: int = 20) -> AsyncEngine:
    """A pooled engine that hands out no connection its server has closed.

    Not ``pool_pre_ping``: it tries each connection before handing it out, with BEGIN, an
    empty statement and ROLLBACK, three round trips per checkout, a dozen checkouts per
    reply. A server that restarts closes its connections, and the driver notices the
    socket closing while the connection waits in the pool, so a closed one is replaced at
    checkout for free. Where a statement still meets a dropped connection (the server died
    under it), the outage is told apart, the pool renewed, and its caller retries.
    """
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=10, pool_recycle=3600)
    event.listen(engine.sync_engine.pool, "checkout", _refuse_closed)
    return engine


def _refuse_closed(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """The pool discards a connection refused here and hands out a fresh one instead."""
    if record.driver_connection.is_closed():
        raise DisconnectionError("the database server closed this pooled connection")


def make_sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str | None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


MIGRATION_LOCK = 0x5B0A4D  # pg advisory lock id: one process migrates at a time


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to ``revision``; concurrent callers wait for the first to finish."""
    from sqlalchemy import text

    async with engine.begin() as conn:
        # A transaction-scoped lock: released on commit or rollback, whatever happens.
        await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK})
        await conn.run_sync(_upgrade, revision)


def _upgrade(connection: object, revision: str) -> None:
    from alembic import command

    config = alembic_config(None)
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    from sqlalchemy import text
    from sqlalchemy.exc import ProgrammingError

    async with engine.connect() as conn:
        try:
            return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        except ProgrammingError:
            return None


def head_revision() -> str:
    """The newest migration's id. Revisions are numbered like their files (0006_files.py is
    0006; a test holds alembic to it), so reading the folder spares every command loading
    alembic and parsing each migration to learn it."""
    return max(
        path.name.split("_", 1)[0] for path in (MIGRATIONS_DIR / "versions").glob("[0-9]*_*.py")
    )
