"""The engine outlives a restart of its server: at most the first statement that meets a
dropped connection fails, as an outage (its caller retries), and the pool is renewed, so
every statement after it works; what a transaction cut off by the restart raises is told
apart as an outage too."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import psutil
import pytest
from sqlalchemy import text

from bot.health import outage
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
            cut_off = await engine.connect()
            await cut_off.begin()
            await cut_off.execute(text("SELECT 1"))
            postmaster = Path(home) / "postgres" / "postmaster.pid"
            process = psutil.Process(int(postmaster.read_text().split()[0]))
            process.kill()
            process.wait(10)
            assert await asyncio.to_thread(services.heal) == ["postgres"]

            try:  # a pooled connection noticed as dropped is replaced; one not yet fails once
                async with engine.connect() as conn:
                    await conn.scalar(text("SELECT 2"))
            except Exception as dropped:
                assert outage(dropped) == "database", repr(dropped)
            for _ in range(3):  # the whole pool was renewed: no other stale connection
                async with engine.connect() as conn:
                    assert await conn.scalar(text("SELECT 2")) == 2
            for _ in range(2):  # the statement the restart cut off, then one more after it
                with pytest.raises(Exception) as lost:
                    await cut_off.execute(text("SELECT 3"))
                assert outage(lost.value) == "database", repr(lost.value)
            await cut_off.close()
        finally:
            await engine.dispose()
            await asyncio.to_thread(services.release)
