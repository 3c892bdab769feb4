"""The embedded Postgres and Valkey: started once, shared by every local process, kept
across restarts, and stopped when the last process using them leaves."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from bot.errors import ServiceError
from bot.services import EmbeddedServices, async_database_url

SHARE = """
import json, sys
from pathlib import Path
from bot.services import EmbeddedServices
services = EmbeddedServices(Path(sys.argv[1]))
found = services.acquire(postgres=True, valkey=True)
print(json.dumps([found.database_url, found.redis_url]))
services.release()
"""


def _pg(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _valkey_answers(url: str) -> bool:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        return bool(await client.ping())
    except OSError:
        return False
    except aioredis.ConnectionError:
        return False
    finally:
        await client.aclose()


async def test_embedded_services_are_shared_kept_and_stopped(tmp_path: Path) -> None:
    services = EmbeddedServices(tmp_path)
    found = await asyncio.to_thread(services.acquire, postgres=True, valkey=True)
    try:
        conn = await asyncpg.connect(_pg(found.database_url))
        await conn.execute("CREATE TABLE kept (note text); INSERT INTO kept VALUES ('still here')")
        await conn.close()

        # Another process joins the same servers and leaves without stopping them.
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SHARE, str(tmp_path), stdout=asyncio.subprocess.PIPE
        )
        stdout, _ = await child.communicate()
        assert json.loads(stdout) == [found.database_url, found.redis_url]
        assert await _valkey_answers(found.redis_url)
    finally:
        await asyncio.to_thread(services.release)

    # The last user left: both servers are down.
    assert not (tmp_path / "postgres" / "postmaster.pid").exists()
    assert not await _valkey_answers(found.redis_url)

    again = await asyncio.to_thread(services.acquire, postgres=True, valkey=True)
    try:
        conn = await asyncpg.connect(_pg(again.database_url))
        assert await conn.fetchval("SELECT note FROM kept") == "still here"
        await conn.close()
    finally:
        await asyncio.to_thread(services.release)


def test_database_urls_are_normalised_for_asyncpg() -> None:
    assert async_database_url("postgres://u:p@h/db") == "postgresql+asyncpg://u:p@h/db"
    assert async_database_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    with pytest.raises(ServiceError, match="must be a postgresql:// URL"):
        async_database_url("mysql://u@h/db")
