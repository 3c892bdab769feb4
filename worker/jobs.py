"""Thin jobs: take an id, call the domain function, return."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot import handler, marks, outbox, recovery
from workflows import runs, schedule


async def handle_message(ctx: dict[str, Any], message_id: int) -> list[int]:
    await ctx["core"].load_llm()
    return await handler.handle(ctx["core"], message_id)


async def deliver(ctx: dict[str, Any], outbox_id: int) -> str:
    return await outbox.deliver(ctx["core"], ctx["senders"], outbox_id)


async def run_workflow(ctx: dict[str, Any], run_id: int) -> str:
    await ctx["core"].load_llm()
    return (await runs.advance(ctx["core"], run_id)).status


async def schedule_tick(ctx: dict[str, Any]) -> list[int]:
    return await schedule.tick(ctx["core"])


async def sweep(ctx: dict[str, Any], grace: timedelta = recovery.GRACE) -> tuple[int, int, int]:
    """Work whose job went missing; a dead worker's started jobs are the heartbeat's."""
    handled, delivered = await recovery.sweep(ctx["core"], grace)
    await marks.sweep(ctx["core"].engine)
    return handled, delivered, await runs.sweep(ctx["core"])
