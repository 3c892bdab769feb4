"""Reading the audit log: what was done on whose behalf, newest first."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bot.storage.models import AuditEvent


async def record(
    engine: AsyncEngine,
    *,
    actor: str,
    action: str,
    subject: str,
    status: str,
    data: dict[str, Any],
    key: str | None = None,
) -> None:
    """Append one event (pass an autocommit engine: Core.autocommit)."""
    values = {
        "actor": actor,
        "action": action,
        "subject": subject[:255],
        "status": status,
        "key": key,
        "data": data,
    }
    async with engine.connect() as conn:
        await conn.execute(insert(AuditEvent).values(values))


async def recent(
    session: AsyncSession,
    *,
    limit: int = 50,
    subject: str | None = None,
    actor: str | None = None,
    action: str | None = None,
) -> Sequence[AuditEvent]:
    """The newest events; ``actor`` matches a prefix (``run:12/`` for one run's calls)."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if subject:
        query = query.where(AuditEvent.subject == subject)
    if action:
        query = query.where(AuditEvent.action == action)
    if actor:
        query = query.where(AuditEvent.actor.startswith(actor, autoescape=True))
    return list(await session.scalars(query))


def line(event: AuditEvent, width: int = 120) -> str:
    """One event on one line: when, who, what, how it went, with what."""
    data = event.data or {}
    took = f"{data['duration_ms']:.0f} ms" if "duration_ms" in data else ""
    detail = (
        data.get("error")
        or data.get("why")
        or json.dumps(data.get("arguments", {}), ensure_ascii=False)
    )
    text = (
        f"#{event.id}  {event.at:%Y-%m-%d %H:%M:%S}  {event.actor}  {event.action} "
        f"{event.subject}  {event.status}  {took}  {detail}"
    )
    return text if len(text) <= width else text[: width - 1] + "…"
