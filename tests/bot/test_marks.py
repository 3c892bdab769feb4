"""Channel marks: what a channel remembers about its platform, in Postgres."""

from __future__ import annotations

from sqlalchemy import func, update

from bot import marks
from bot.app import Runtime
from bot.marks import StoredMarks
from bot.storage.models import ChannelMark


async def test_marks_are_kept_per_channel_claimed_once_appended_and_taken(
    runtime: Runtime,
) -> None:
    slack = StoredMarks(runtime.core.engine, "slack")
    other = StoredMarks(runtime.core.engine, "telegram")

    assert await slack.put("placeholder:1", "", keep=60, replace=False)
    assert not await slack.put("placeholder:1", "", keep=60, replace=False)  # claimed
    assert await slack.put("placeholder:1", "1700.1", keep=60)
    assert await other.get("placeholder:1") is None
    await slack.append("parts:k", "a", keep=60)
    await slack.append("parts:k", "b", keep=60)

    assert await slack.get("parts:k") == "a\nb"
    assert await slack.take("placeholder:1") == "1700.1"
    assert await slack.take("placeholder:1") is None


async def test_expired_marks_are_gone_and_swept(runtime: Runtime) -> None:
    slack = StoredMarks(runtime.core.engine, "slack")
    await slack.put("thread:C1:1.0", "", keep=60)
    await slack.append("parts:k", "old", keep=60)
    async with runtime.core.sessions.begin() as session:
        await session.execute(update(ChannelMark).values(expires_at=func.now()))

    assert await slack.get("thread:C1:1.0") is None
    assert await slack.put("thread:C1:1.0", "", keep=60, replace=False)  # free again
    await slack.append("parts:k", "new", keep=60)
    assert await slack.get("parts:k") == "new"
    async with runtime.core.sessions.begin() as session:
        await session.execute(update(ChannelMark).values(expires_at=func.now()))
    assert await marks.sweep(runtime.core.engine) == 2
