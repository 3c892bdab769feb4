"""Shared fixtures: the same embedded Postgres and Valkey the product uses (or DATABASE_URL /
REDIS_URL from the environment), a fake OpenAI-compatible LLM server, and a runtime per test
on a clean database and queue."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bot import services
from bot.app import Runtime, open_runtime
from bot.config import Settings
from bot.storage.models import Base
from tests.fakes.llm_server import FakeLLM

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(scope="session")
def home() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="switchboard-test-") as path:
        yield Path(path)


@pytest.fixture(scope="session")
def endpoints(home: Path) -> Iterator[services.Endpoints]:
    """One set of servers for the whole run; the embedded ones stop when it ends."""
    settings = Settings(
        home=home,
        database_url=os.environ.get("DATABASE_URL"),
        redis_url=os.environ.get("REDIS_URL"),
    )
    found, embedded = services.resolve(settings)
    yield found
    if embedded is not None:
        embedded.release()


@pytest.fixture(scope="session")
async def fake_llm() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as llm:
        yield llm


@pytest.fixture
def llm(fake_llm: FakeLLM) -> Iterator[FakeLLM]:
    """The shared fake server, reset for each test."""
    fake_llm.reset()
    yield fake_llm
    fake_llm.reset()


@pytest.fixture
def settings(home: Path, endpoints: services.Endpoints, llm: FakeLLM, tmp_path: Path) -> Settings:
    return Settings(
        home=home,
        config_dir=tmp_path / "config",
        database_url=endpoints.database_url,
        redis_url=endpoints.redis_url,
        model="openai/fake-model",
        llm_api_base=llm.url,
        llm_timeout=5,
        queue_name=f"switchboard:test:{uuid.uuid4().hex[:8]}",
        poll_delay=0.01,
        reply_timeout=20,
    )


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    await _truncate(settings.database_url or "")
    async with open_runtime(settings) as opened:
        await opened.redis.flushdb()
        yield opened


async def _truncate(url: str) -> None:
    """Empty every table (a test starts from nothing); a fresh database has none yet."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            existing = set(
                (
                    await conn.execute(
                        text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                    )
                ).scalars()
            )
            tables = [t.name for t in Base.metadata.sorted_tables if t.name in existing]
            if tables:
                # audit_events is append-only through its trigger; TRUNCATE is the operator's way.
                await conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()
