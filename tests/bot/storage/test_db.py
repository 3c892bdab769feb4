"""The engine outlives a restart of its server: a pooled connection the server closed is
replaced when it is handed out, without a round trip to try it; where a statement still
meets a dropped connection it fails as an outage (its caller retries) and the pool is
renewed; what a transaction cut off by the restart raises is told apart as an outage too."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import psutil
import pytest
from sqlalchemy import text

from bot.health import outage
from bot.services import EmbeddedServices, Endpoints, async_database_url
from bot.storage import db


async def test_a_pooled_connection_is_handed_out_without_a_round_trip(
    endpoints: Endpoints,
) -> None:
    engine = db.make_engine(endpoints.database_url, pool_size=1)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    sent: list[str] = []
    try:
        async with autocommit.connect() as conn:
            raw = await conn.get_raw_connection()
            raw.driver_connection.add_query_logger(lambda record: sent.append(record.query))
        for _ in range(3):
            async with autocommit.connect() as conn:
                assert await conn.scalar(text("SELECT 1")) == 1
        # A pre-ping would show here as BEGIN, an empty statement and ROLLBACK each time.
        assert [query for query in sent if query != "SELECT 1"] == []
    finally:
        await engine.dispose()


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

            # The server closed the pooled connection while it was idle: replaced, not tried.
            async with engine.connect() as conn:
                assert await conn.scalar(text("SELECT 2")) == 2
            for _ in range(3):  # no other stale connection
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
