"""Model calls: every one recorded, and summed per conversation, persona and model."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bot import replies
from bot.storage.models import LLMCall, Persona

if TYPE_CHECKING:
    from bot.llm import CallRecord


class StoredCalls:
    """The ``llm_calls`` table as the gateway's call log: a row written as a call starts
    (status ``started``) and completed when it ends, so a call cut off by a crash is still
    counted. One autocommit statement each."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine  # an autocommit engine (Core.autocommit)

    async def started(self, model: str, context: Mapping[str, Any]) -> int | None:
        values = {"model": model, "status": "started", **_where(context)}
        async with self.engine.connect() as conn:
            found = await conn.scalar(_STARTED, values)
        return None if found is None else int(found)

    async def ended(self, call: int | None, record: CallRecord) -> None:
        values = {
            "model": record.model,
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "cost_usd": record.cost_usd,
            "latency_ms": record.latency_ms,
            "status": record.status,
            "error": record.error,
        }
        async with self.engine.connect() as conn:
            if call is None:
                await conn.execute(_INSERT, {**values, **_where(record.context)})
            else:
                await conn.execute(_ENDED, {**values, "call": call})


# Built once: two of these run for every model call. The values come as parameters.
_INSERT = insert(LLMCall)
_STARTED = insert(LLMCall).returning(LLMCall.id)
_ENDED = update(LLMCall).where(LLMCall.id == bindparam("call"))


def _where(context: Mapping[str, Any]) -> dict[str, Any]:
    """Whose call it was: the persona, conversation, message or run in its context."""
    names = ("persona_id", "conversation_id", "message_id", "run_id")
    return {name: context.get(name) for name in names}


@dataclass(frozen=True)
class UsageRow:
    persona: str
    model: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    unpriced_calls: int
    cut_off: int  # started and never finished: a crash, a killed worker, a turn stopped


_OK = LLMCall.status == "ok"


async def conversation_usage(session: AsyncSession, conversation_id: int) -> list[UsageRow]:
    rows = await session.execute(
        select(
            func.coalesce(Persona.name, "(none)"),
            LLMCall.model,
            func.count().filter(_OK),
            func.sum(LLMCall.prompt_tokens),
            func.sum(LLMCall.completion_tokens),
            func.sum(LLMCall.cost_usd),
            func.count().filter(_OK & LLMCall.cost_usd.is_(None)),
            func.count().filter(LLMCall.status == "started"),
        )
        .outerjoin(Persona, Persona.id == LLMCall.persona_id)
        .where(LLMCall.conversation_id == conversation_id, LLMCall.status.in_(("ok", "started")))
        .group_by(Persona.name, LLMCall.model)
        .order_by(Persona.name, LLMCall.model)
    )
    return [UsageRow(*row) for row in rows]


async def unfinished_by_run(session: AsyncSession, run_ids: Collection[int]) -> dict[int, int]:
    """Model calls of these workflow runs that started and have not ended, per run."""
    rows = await session.execute(
        select(LLMCall.run_id, func.count())
        .where(LLMCall.run_id.in_(run_ids), LLMCall.status == "started")
        .group_by(LLMCall.run_id)
    )
    return {int(run_id): int(count) for run_id, count in rows if run_id is not None}


def unfinished_note(calls: int, *, running: bool) -> str:
    """``; 1 call cut off`` (or ``under way`` while the run goes on), or nothing."""
    if not calls:
        return ""
    return (
        f"; {replies.plural(calls, 'call')} under way" if running else f"; {replies.cut_off(calls)}"
    )


def format_usage(rows: list[UsageRow]) -> str:
    lines = ["Usage in this conversation:"]
    for row in rows:
        cut = f", {replies.cut_off(row.cut_off)}" if row.cut_off else ""
        lines.append(
            f"  {row.persona} · {row.model}: {replies.plural(row.calls, 'call')}{cut}, "
            f"{row.prompt_tokens:,} prompt + {row.completion_tokens:,} completion tokens, "
            f"{_cost(row)}"
        )
    total_tokens = sum(r.prompt_tokens + r.completion_tokens for r in rows)
    priced = [r.cost_usd for r in rows if r.cost_usd is not None]
    total = replies.cost(sum(priced) if priced else None)
    lines.append(f"  Total: {total_tokens:,} tokens, {total}")
    return "\n".join(lines)


def _cost(row: UsageRow) -> str:
    unpriced = replies.plural(row.unpriced_calls, "call")
    note = f" ({unpriced} with no price known)" if row.unpriced_calls else ""
    return replies.cost(row.cost_usd) + (note if row.cost_usd is not None else "")
