"""When the model or a platform fails: the person is told what to do and nothing is lost."""

from __future__ import annotations

from sqlalchemy import func, select, text, update

from bot.app import Runtime, open_runtime
from bot.config import Settings
from bot.errors import AdapterError
from bot.messages import OutgoingMessage, SentRef
from bot.outbox import backoff, deliver
from bot.storage.models import Message, Outbox
from tests.fakes.llm_server import FakeLLM
from tests.support import delivered, drain, outbox_rows, reply_to, say


async def test_unreachable_model_says_which_model_where_and_what_to_set(
    runtime: Runtime, settings: Settings
) -> None:
    broken = settings.model_copy(update={"llm_api_base": "http://127.0.0.1:9/v1"})
    async with open_runtime(broken) as offline:
        received = await say(offline, "are you there?")
        await drain(offline)
        (out,) = await delivered(offline)

    assert "openai/fake-model" in out.text and "http://127.0.0.1:9/v1" in out.text
    assert "SWITCHBOARD_MODEL" in out.text and "/retry" in out.text
    async with runtime.core.sessions() as session:
        stored = await session.get(Message, received.message_id)
    assert stored is not None and stored.status == "failed" and stored.text == "are you there?"

    # The model is back: /retry answers the kept message.
    notice = await reply_to(runtime, "/retry")
    assert notice.text == "Trying again: “are you there?”"
    answers = [o for o in await delivered(runtime) if o.in_reply_to == received.message_id]
    assert [a.text for a in answers][-1] == "echo: are you there?"
    assert (await reply_to(runtime, "/retry")).text.startswith("There is no failed message")


async def test_a_model_error_falls_into_a_kept_message(runtime: Runtime, llm: FakeLLM) -> None:
    llm.fail_next(1, 500)
    out = await reply_to(runtime, "hello")

    assert "openai/fake-model" in out.text
    async with runtime.core.sessions() as session:
        status = await session.scalar(select(Message.status).where(Message.direction == "in"))
    assert status == "failed"


class FlakySender:
    """A platform that refuses ``failures`` times (429 with Retry-After), then accepts."""

    def __init__(self, failures: int, *, permanent: bool = False) -> None:
        self.failures, self.permanent = failures, permanent
        self.sent: list[OutgoingMessage] = []

    async def send(self, out: OutgoingMessage) -> SentRef:
        if self.failures > 0:
            self.failures -= 1
            raise AdapterError("429 Too Many Requests", retry_after=0.05, permanent=self.permanent)
        self.sent.append(out)
        return SentRef(f"ext-{len(self.sent)}")


async def test_delivery_retries_with_backoff_then_sends_once(runtime: Runtime) -> None:
    await say(runtime, "hi")
    await drain(runtime)  # the first delivery goes to the terminal stream
    (row,) = await outbox_rows(runtime)
    await _reset_outbox(runtime, row.id)
    sender = FlakySender(failures=2)

    assert await deliver(runtime.core, {"terminal": sender}, row.id) == "pending"
    assert await deliver(runtime.core, {"terminal": sender}, row.id) == "skipped"  # not due yet
    await _make_due(runtime, row.id)
    assert await deliver(runtime.core, {"terminal": sender}, row.id) == "pending"
    await _make_due(runtime, row.id)
    assert await deliver(runtime.core, {"terminal": sender}, row.id) == "sent"
    assert await deliver(runtime.core, {"terminal": sender}, row.id) == "skipped"

    (row,) = await outbox_rows(runtime)
    assert (row.status, row.attempts, row.external_id) == ("sent", 3, "ext-1")
    assert len(sender.sent) == 1


async def test_a_permanent_refusal_fails_the_delivery(runtime: Runtime) -> None:
    await say(runtime, "hi")
    await drain(runtime)
    (row,) = await outbox_rows(runtime)
    await _reset_outbox(runtime, row.id)

    assert (
        await deliver(runtime.core, {"terminal": FlakySender(1, permanent=True)}, row.id)
        == "failed"
    )
    assert await deliver(runtime.core, {}, row.id) == "skipped"
    (row,) = await outbox_rows(runtime)
    assert row.status == "failed" and row.last_error == "429 Too Many Requests"


def test_backoff_grows_and_honours_retry_after() -> None:
    assert 0.5 <= backoff(1) <= 1.0
    assert 4.0 <= backoff(4) <= 8.0
    assert backoff(30) <= 600.0
    assert backoff(1, retry_after=30.0) == 30.0
    assert backoff(10, retry_after=1.0) == 1.0  # as long as asked, however many tries


async def _make_due(runtime: Runtime, outbox_id: int) -> None:
    async with runtime.core.sessions.begin() as session:
        await session.execute(
            update(Outbox).where(Outbox.id == outbox_id).values(next_attempt_at=func.now())
        )


async def _reset_outbox(runtime: Runtime, outbox_id: int) -> None:
    async with runtime.core.sessions.begin() as session:
        await session.execute(
            update(Outbox).where(Outbox.id == outbox_id).values(status="pending", attempts=0)
        )


async def test_a_storm_of_rate_limits_never_gives_up_a_reply_still_in_time(
    runtime: Runtime,
) -> None:
    await say(runtime, "hi")
    await drain(runtime)
    (row,) = await outbox_rows(runtime)
    await _reset_outbox(runtime, row.id)
    storm = runtime.core.settings.max_delivery_attempts * 2
    sender = FlakySender(failures=storm)

    for _ in range(storm):
        assert await deliver(runtime.core, {"terminal": sender}, row.id) == "pending"
        await _make_due(runtime, row.id)
    assert await deliver(runtime.core, {"terminal": sender}, row.id) == "sent"
    assert len(sender.sent) == 1


async def test_a_reply_too_late_is_dropped_with_one_note(runtime: Runtime) -> None:
    first = await say(runtime, "one")
    await say(runtime, "two")
    await drain(runtime)
    rows = await outbox_rows(runtime)
    for row in rows:
        await _reset_outbox(runtime, row.id)
    async with runtime.core.sessions.begin() as session:
        await session.execute(
            update(Outbox).values(created_at=func.now() - text("interval '2 hours'"))
        )
    sender = FlakySender(failures=0)

    assert await deliver(runtime.core, {"terminal": sender}, rows[0].id) == "expired"
    statuses = sorted((r.id, r.status) for r in await outbox_rows(runtime))
    assert [status for _, status in statuses] == ["expired", "expired", "pending"]
    await drain(runtime)  # the note goes out through the terminal as usual
    note = (await delivered(runtime))[-1]
    assert note.text.startswith("2 replies here could not be delivered for over 60 minutes")
    assert note.in_reply_to is None and first.duplicate is False
