"""Locks in Postgres (per conversation, per workflow run): one holder at a time, released
if the holder dies."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# The first key of pg_advisory_lock(int, int): what is locked; the second: which one (a
# conversation, a run). Postgres shows them in pg_locks as classid and objid.
HANDLING = 0x5B01
DELIVERING = 0x5B02
ADVANCING = 0x5B03  # a workflow run being advanced by a worker
PAIRING = 0x5B04  # pairing replies, counted against one cap for all channels


@contextlib.asynccontextmanager
async def conversation_lock(
    engine: AsyncEngine, purpose: int, conversation_id: int
) -> AsyncIterator[None]:
    """Hold the lock for ``purpose`` on one conversation while the block runs.

    A session-level advisory lock on its own autocommit connection: no transaction stays
    open while a slow model answers, and a worker that dies drops the connection, and so
    the lock, with it.
    """
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        keys = {"purpose": purpose, "conversation": conversation_id}
        await conn.execute(text("SELECT pg_advisory_lock(:purpose, :conversation)"), keys)
        try:
            yield
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:purpose, :conversation)"), keys)
