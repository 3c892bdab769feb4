"""``Marks`` kept in Postgres: what a channel remembers about its platform (see
``bot.storage.models.ChannelMark``), shared by every worker and kept across restarts."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import bindparam, delete, func, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.errors import ServiceUnavailable
from bot.health import describe, outage
from bot.storage.models import ChannelMark

_GET = text(
    "SELECT value FROM channel_marks WHERE channel = :channel AND key = :key AND expires_at > now()"
)
# Written when new (or expired); with :replace, written over a live one too.
_PUT = text(
    """
    INSERT INTO channel_marks AS m (channel, key, value, expires_at)
    VALUES (:channel, :key, :value, now() + make_interval(secs => :keep))
    ON CONFLICT (channel, key) DO UPDATE
       SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at
     WHERE :replace OR m.expires_at <= now()
    RETURNING 1
    """
).bindparams(bindparam("replace"))
_APPEND = text(
    """
    INSERT INTO channel_marks AS m (channel, key, value, expires_at)
    VALUES (:channel, :key, :value, now() + make_interval(secs => :keep))
    ON CONFLICT (channel, key) DO UPDATE
       SET value = CASE WHEN m.expires_at <= now() THEN EXCLUDED.value
                        ELSE m.value || chr(10) || EXCLUDED.value END,
           expires_at = EXCLUDED.expires_at
    """
)
_TAKE = text(
    "DELETE FROM channel_marks WHERE channel = :channel AND key = :key"
    " RETURNING value, expires_at > now() AS live"
)


class StoredMarks:
    """One channel's marks: ``key`` → text, each kept ``keep`` seconds. A database that
    cannot be reached is ``ServiceUnavailable``, as the channel seam promises."""

    def __init__(self, engine: AsyncEngine, channel: str) -> None:
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.channel = channel

    async def get(self, key: str) -> str | None:
        async with _reached(self.engine) as conn:
            found = await conn.scalar(_GET, {"channel": self.channel, "key": key})
        return None if found is None else str(found)

    async def put(self, key: str, value: str, *, keep: float, replace: bool = True) -> bool:
        """Keep ``value``; with ``replace`` off, only if no live mark has the key (then
        False: someone set it first)."""
        values = {"channel": self.channel, "key": key, "value": value, "keep": keep}
        async with _reached(self.engine) as conn:
            written = await conn.scalar(_PUT, {**values, "replace": replace})
        return written is not None

    async def append(self, key: str, value: str, *, keep: float) -> None:
        """Add a line to the mark (a live one's lines come first)."""
        values = {"channel": self.channel, "key": key, "value": value, "keep": keep}
        async with _reached(self.engine) as conn:
            await conn.execute(_APPEND, values)

    async def take(self, key: str) -> str | None:
        """The mark's value, forgotten as it is read (None if absent or expired)."""
        async with _reached(self.engine) as conn:
            row = (await conn.execute(_TAKE, {"channel": self.channel, "key": key})).first()
        return str(row.value) if row is not None and row.live else None


@contextlib.asynccontextmanager
async def _reached(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    try:
        async with engine.connect() as conn:
            yield conn
    except Exception as exc:
        if outage(exc) is None:
            raise
        raise ServiceUnavailable("database", f"channel marks: {describe(exc)}") from exc


async def sweep(engine: AsyncEngine) -> int:
    """Forget expired marks; returns how many."""
    async with engine.begin() as conn:
        expired = ChannelMark.expires_at <= func.now()
        result = await conn.execute(delete(ChannelMark).where(expired))
    return int(result.rowcount or 0)
