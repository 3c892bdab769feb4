"""The safety net under the queue: work whose job was lost is enqueued again.

Postgres is the record; Redis only carries jobs. If a process dies between committing and
enqueueing, or the Redis data is lost, the rows are still here and this sweep finds them.
Job ids make a re-enqueue of work that is still queued or running a no-op.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bot.conversation import handle_job_id
from bot.core import Core
from bot.outbox import deliver_job_id
from bot.queue import DELIVER, HANDLE_MESSAGE
from bot.storage.models import Message, Outbox

# Work this young is normally still on its way to the queue (or in it).
GRACE = timedelta(seconds=30)


async def sweep(core: Core, grace: timedelta = GRACE) -> tuple[int, int]:
    """Re-enqueue unanswered messages and undelivered replies older than ``grace``."""
    cutoff = datetime.now(UTC) - grace
    async with core.sessions() as session:
        messages = (
            await session.scalars(
                select(Message.id).where(
                    Message.direction == "in",
                    Message.status == "received",
                    Message.created_at < cutoff,
                )
            )
        ).all()
        deliveries = (
            await session.execute(
                select(Outbox.id, Outbox.attempts).where(
                    Outbox.status == "pending", Outbox.next_attempt_at < cutoff
                )
            )
        ).all()
    handled = [
        await core.queue.enqueue(HANDLE_MESSAGE, mid, job_id=handle_job_id(mid)) for mid in messages
    ]
    delivered = [
        await core.queue.enqueue(DELIVER, oid, job_id=deliver_job_id(oid, attempts), priority=True)
        for oid, attempts in deliveries
    ]
    return sum(handled), sum(delivered)
