"""Model calls: every one recorded, and summed per conversation, persona and model."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import replies
from bot.storage.models import LLMCall, Persona

if TYPE_CHECKING:
    from bot.llm import CallRecord


def record_call(
    sessions: async_sessionmaker[AsyncSession],
) -> Callable[[CallRecord], Awaitable[None]]:
    async def record(call: CallRecord) -> None:
        context = dict(call.context)
        async with sessions.begin() as session:
            await session.execute(
                insert(LLMCall).values(
                    model=call.model,
                    prompt_tokens=call.prompt_tokens,
                    completion_tokens=call.completion_tokens,
                    cost_usd=call.cost_usd,
                    latency_ms=call.latency_ms,
                    status=call.status,
                    error=call.error,
                    persona_id=context.get("persona_id"),
                    conversation_id=context.get("conversation_id"),
                    message_id=context.get("message_id"),
                    run_id=context.get("run_id"),
                )
            )

    return record


@dataclass(frozen=True)
class UsageRow:
    persona: str
    model: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    unpriced_calls: int


async def conversation_usage(session: AsyncSession, conversation_id: int) -> list[UsageRow]:
    rows = await session.execute(
        select(
            func.coalesce(Persona.name, "(none)"),
            LLMCall.model,
            func.count(),
            func.sum(LLMCall.prompt_tokens),
            func.sum(LLMCall.completion_tokens),
            func.sum(LLMCall.cost_usd),
            func.count().filter(LLMCall.cost_usd.is_(None)),
        )
        .outerjoin(Persona, Persona.id == LLMCall.persona_id)
        .where(LLMCall.conversation_id == conversation_id, LLMCall.status == "ok")
        .group_by(Persona.name, LLMCall.model)
        .order_by(Persona.name, LLMCall.model)
    )
    return [UsageRow(*row) for row in rows]


def format_usage(rows: list[UsageRow]) -> str:
    lines = ["Usage in this conversation:"]
    for row in rows:
        lines.append(
            f"  {row.persona} · {row.model}: {row.calls} calls, "
            f"{row.prompt_tokens:,} prompt + {row.completion_tokens:,} completion tokens, "
            f"{_cost(row)}"
        )
    total_tokens = sum(r.prompt_tokens + r.completion_tokens for r in rows)
    priced = [r.cost_usd for r in rows if r.cost_usd is not None]
    total = replies.cost(sum(priced) if priced else None)
    lines.append(f"  Total: {total_tokens:,} tokens, {total}")
    return "\n".join(lines)


def _cost(row: UsageRow) -> str:
    note = f" ({row.unpriced_calls} calls with no price known)" if row.unpriced_calls else ""
    return replies.cost(row.cost_usd) + (note if row.cost_usd is not None else "")
