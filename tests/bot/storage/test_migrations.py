"""The migrations build exactly the schema the models describe, on an empty database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot import services
from bot.storage import db
from bot.storage.models import Base


@pytest.fixture
async def empty_database(endpoints: services.Endpoints) -> AsyncIterator[AsyncEngine]:
    name = f"switchboard_migrations_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(endpoints.database_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f"CREATE DATABASE {name}"))
    engine = create_async_engine(make_url(endpoints.database_url).set(database=name))
    try:
        yield engine
    finally:
        await engine.dispose()
        async with admin.connect() as conn:
            await conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        await admin.dispose()


async def test_upgrade_head_then_autogenerate_finds_no_difference(
    empty_database: AsyncEngine,
) -> None:
    await db.upgrade(empty_database)

    async with empty_database.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
            )
        )
    assert diff == []
    assert await db.current_revision(empty_database) == db.head_revision()


async def test_upgrade_twice_is_harmless(empty_database: AsyncEngine) -> None:
    await db.upgrade(empty_database)
    await db.upgrade(empty_database)

    assert await db.current_revision(empty_database) == db.head_revision()


async def test_audit_events_are_append_only(empty_database: AsyncEngine) -> None:
    await db.upgrade(empty_database)
    async with empty_database.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO audit_events (actor, action, subject, data)"
                " VALUES ('t', 'test', '', '{}')"
            )
        )

    for statement in ("UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with empty_database.begin() as conn:
                await conn.execute(text(statement))


async def test_pgvector_is_available(empty_database: AsyncEngine) -> None:
    await db.upgrade(empty_database)
    async with empty_database.connect() as conn:
        distance = await conn.scalar(text("SELECT '[1,0,0]'::vector <-> '[0,1,0]'::vector"))
    assert distance == pytest.approx(2**0.5)


def test_the_head_revision_read_from_file_names_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    assert db.head_revision() == ScriptDirectory(str(db.MIGRATIONS_DIR)).get_current_head()
