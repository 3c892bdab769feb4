"""Health that tells the truth: each part named, a part that does not answer is down within
the check's timeout, the others are still told, and /healthz answers 200 or 503."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import health
from bot.app import Runtime
from bot.storage import db
from tests.support import free_port, serve


@pytest.fixture
async def stopped_database(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine for a server that is not running (no socket where it would listen)."""
    engine = db.make_engine(f"postgresql+asyncpg://postgres@/switchboard?host={tmp_path}")
    yield engine
    await engine.dispose()


async def test_each_service_is_named_and_ok_when_it_answers(runtime: Runtime) -> None:
    parts = await runtime.health.report()

    assert [(part.name, part.kind, part.ok) for part in parts] == [
        ("database", "service", True),
        ("queue", "service", True),
    ]
    assert all(part.detail.startswith("answered in") for part in parts)


async def test_a_database_that_does_not_answer_is_down_by_name_and_the_rest_still_told(
    runtime: Runtime, stopped_database: AsyncEngine
) -> None:
    checks = health.Health(
        [
            health.Probe(
                "database", "service", health.database(stopped_database), lambda: "restarts"
            ),
            health.Probe("queue", "service", health.queue(runtime.redis)),
        ]
    )

    found = health.summary(await checks.report())

    assert found["ok"] is False and found["down"] == ["database"]
    database, queue = found["parts"]
    assert database["detail"].startswith("FileNotFoundError") and "(restarts)" in database["detail"]
    assert queue["ok"] is True


async def test_a_part_that_hangs_is_down_after_the_timeout_without_holding_up_others() -> None:
    async def hangs() -> str:
        await asyncio.Event().wait()
        return "never"

    async def answers() -> str:
        return "fine"

    checks = health.Health(
        [health.Probe("web", "channel", hangs), health.Probe("worker", "worker", answers)],
        timeout=0.2,
    )
    started = time.monotonic()
    parts = await checks.report()

    assert time.monotonic() - started < 5  # the timeout, not the hang
    assert [(p.name, p.ok, p.detail) for p in parts] == [
        ("web", False, "no answer within 0.2 s"),
        ("worker", True, "fine"),
    ]


async def test_callers_arriving_during_a_round_share_it() -> None:
    calls, release = 0, asyncio.Event()

    async def slow() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "ok"

    checks = health.Health([health.Probe("queue", "service", slow)])
    first = asyncio.create_task(checks.report())
    second = asyncio.create_task(checks.report())
    await asyncio.sleep(0.05)
    release.set()

    assert await first == await second
    assert calls == 1


async def test_healthz_answers_200_when_all_are_ok_and_503_naming_what_is_down(
    runtime: Runtime, stopped_database: AsyncEngine
) -> None:
    good = health.Health([health.Probe("queue", "service", health.queue(runtime.redis))])
    bad = health.Health(
        [
            health.Probe("database", "service", health.database(stopped_database)),
            health.Probe("queue", "service", health.queue(runtime.redis)),
        ]
    )
    async with (
        serve(health.route(good)) as good_url,
        serve(health.route(bad)) as bad_url,
        aiohttp.ClientSession() as client,
    ):
        ok = await client.get(f"{good_url}/healthz")
        down = await client.get(f"{bad_url}/healthz")
        assert ok.status == 200 and (await ok.json())["ok"] is True
        assert down.status == 503
        body = await down.json()
    assert body["down"] == ["database"]
    assert [part["name"] for part in body["parts"]] == ["database", "queue"]


async def test_a_listener_is_checked_by_connecting_to_it() -> None:
    async with serve() as url:
        port = int(url.rsplit(":", 1)[1])
        assert await health.listening(lambda: ("0.0.0.0", port))() == f"listening on 0.0.0.0:{port}"
    with pytest.raises(OSError):
        await health.listening(lambda: ("127.0.0.1", port))()


async def test_outages_are_told_from_other_failures(
    runtime: Runtime, stopped_database: AsyncEngine
) -> None:
    with pytest.raises(Exception) as database_down:
        async with stopped_database.connect():
            pass
    with pytest.raises(Exception) as queue_down:
        await Redis(port=free_port()).ping()
    with pytest.raises(IntegrityError) as broken_rule:
        async with runtime.core.engine.connect() as conn:
            await conn.execute(text("CREATE TEMP TABLE t (x int PRIMARY KEY)"))
            await conn.execute(text("INSERT INTO t VALUES (1), (1)"))

    assert health.outage(database_down.value) == "database"
    assert health.outage(queue_down.value) == "queue"
    assert health.outage(broken_rule.value) is None
    assert health.outage(FileNotFoundError(2, "No such file", "notes.md")) is None
