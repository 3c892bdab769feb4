"""The engine outlives a restart of its server: pooled connections the server dropped are
replaced before use, so the first statement after the restart works."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import psutil
from sqlalchemy import text

from bot.services import EmbeddedServices, async_database_url
from bot.storage import db


async def test_the_pool_carries_on_when_its_postgres_restarted() -> None:
    # Not pytest's tmp_path: as root, the embedded Postgres's own user must reach it.
    with tempfile.TemporaryDirectory(prefix="switchboard-db-") as home:
        services = EmbeddedServices(Path(home))
        found = await asyncio.to_thread(services.acquire, postgres=True, valkey=False)
        engine = db.make_engine(async_database_url(found.database_url), pool_size=2)
        try:
            async with engine.connect() as conn:
                assert await conn.scalar(text("SELECT 1")) == 1
            postmaster = Path(home) / "postgres" / "postmaster.pid"
            process = psutil.Process(int(postmaster.read_text().split()[0]))
            process.kill()
            process.wait(10)
            assert await asyncio.to_thread(services.heal) == ["postgres"]

            async with engine.connect() as conn:
                assert await conn.scalar(text("SELECT 2")) == 2
        finally:
            await engine.dispose()
            await asyncio.to_thread(services.release)
