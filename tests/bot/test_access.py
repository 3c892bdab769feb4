"""Who may talk at all: strangers on channels anyone can reach get a pairing code and
nothing else until the owner lets them in; allow lists admit only the listed; a flood costs
stored rows, not replies. Real Postgres, Valkey and workers; Telegram is the channel of
IncomingMessages as its adapter will send them (its replies stay in the outbox)."""

from __future__ import annotations

import re

from sqlalchemy import select, update

from bot.app import Runtime
from bot.channels import Received
from bot.conversation import receive
from bot.messages import ConversationRef
from bot.storage.models import AuditEvent, Message, Outbox, PairingCode
from tests.fakes.llm_server import FakeLLM
from tests.support import drain, incoming, reply_to

CODE = re.compile(r"\b([ACDEFGHJKMNPQRTUVWXY34679]{4}-[ACDEFGHJKMNPQRTUVWXY34679]{4})\b")


async def tell(
    runtime: Runtime, text: str, who: str = "555", channel: str = "telegram"
) -> Received:
    """A message from ``who`` in their own direct chat (Telegram's chat id is the person's)."""
    ref = ConversationRef(channel=channel, chat=who)
    return await receive(runtime.core, incoming(text, ref=ref, author=who))


async def answers(runtime: Runtime, received: Received) -> list[str]:
    """What Switchboard wrote to that conversation, oldest first (the outbox keeps it)."""
    async with runtime.core.sessions() as session:
        rows = await session.scalars(
            select(Outbox)
            .where(Outbox.conversation_id == received.conversation_id)
            .order_by(Outbox.id)
        )
        return [row.payload["text"] for row in rows]


async def statuses(runtime: Runtime, received: Received) -> list[str]:
    async with runtime.core.sessions() as session:
        rows = await session.scalars(
            select(Message.status)
            .where(Message.conversation_id == received.conversation_id, Message.direction == "in")
            .order_by(Message.id)
        )
        return list(rows)


async def refusals(runtime: Runtime) -> list[AuditEvent]:
    async with runtime.core.sessions() as session:
        rows = await session.scalars(
            select(AuditEvent).where(AuditEvent.action == "refused").order_by(AuditEvent.id)
        )
        return list(rows)


async def code_of(runtime: Runtime, received: Received) -> str:
    (text,) = [t for t in await answers(runtime, received) if CODE.search(t)]
    found = CODE.search(text)
    assert found is not None
    return found.group(1)


async def test_a_stranger_gets_a_pairing_code_and_nothing_else(
    runtime: Runtime, llm: FakeLLM
) -> None:
    first = await tell(runtime, "hello, who are you?")
    await tell(runtime, "/help")
    await tell(runtime, "/run anything")
    await drain(runtime)

    (said,) = await answers(runtime, first)
    code = CODE.search(said)
    assert code is not None and f"/approve-user {code.group(1)}" in said
    assert "Commands:" not in said
    assert llm.requests == []
    assert await statuses(runtime, first) == ["refused", "refused", "refused"]
    events = await refusals(runtime)
    assert [(e.actor, e.status) for e in events] == [("telegram:555", "refused")] * 3
    assert events[0].data["why"] == "waiting for pairing approval"


async def test_the_owner_approves_from_their_own_chat_and_the_stranger_is_then_answered(
    runtime: Runtime, llm: FakeLLM
) -> None:
    stranger = await tell(runtime, "hi there")
    await drain(runtime)
    code = await code_of(runtime, stranger)

    approved = await reply_to(runtime, f"/approve-user {code.lower().replace('-', '')}")
    assert approved.text == (
        "Approved telegram:555: they can talk to Switchboard now, and I've told them so."
    )
    await drain(runtime)
    assert (await answers(runtime, stranger))[-1].startswith("You're in.")

    again = await tell(runtime, "now can we talk?")
    await drain(runtime)
    assert (await answers(runtime, again))[-1] == "echo: now can we talk?"
    assert (await reply_to(runtime, f"/approve-user {code}")).text.startswith(
        f"No pairing code {code} is waiting."
    )


async def test_only_the_owner_or_an_admin_may_approve(runtime: Runtime) -> None:
    stranger = await tell(runtime, "let me in")
    await drain(runtime)
    code = await code_of(runtime, stranger)

    web = ConversationRef(channel="web", chat="someone")
    asked = await receive(
        runtime.core, incoming(f"/approve-user {code}", ref=web, author="web:someone")
    )
    await drain(runtime)
    assert await answers(runtime, asked) == ["Only the owner or an admin may use /approve-user."]
    last = (await refusals(runtime))[-1]
    assert last.actor.startswith("user:") and last.subject == "command:/approve-user"
    await tell(runtime, "still there?")
    await drain(runtime)
    assert await statuses(runtime, stranger) == ["refused", "refused"]


async def test_a_flood_from_one_sender_gets_one_reply_and_the_same_code_later(
    runtime: Runtime, llm: FakeLLM
) -> None:
    first = None
    for n in range(50):
        received = await tell(runtime, f"spam {n}")
        first = first or received
    assert first is not None
    await drain(runtime)

    assert len(await answers(runtime, first)) == 1
    assert set(await statuses(runtime, first)) == {"refused"}
    assert llm.requests == []
    code = await code_of(runtime, first)

    await _age(runtime, minutes=11)  # ten minutes on, the same code is shown once more
    await tell(runtime, "hello again")
    await drain(runtime)
    texts = await answers(runtime, first)
    assert len(texts) == 2 and code in texts[1]

    await _age(runtime, minutes=61)  # an hour on it has expired: a new one
    await tell(runtime, "and again")
    await drain(runtime)
    texts = await answers(runtime, first)
    fresh = CODE.search(texts[-1])
    assert len(texts) == 3 and fresh is not None and fresh.group(1) != code


async def _age(runtime: Runtime, *, minutes: int) -> None:
    """Move the pairing codes back in time, as if ``minutes`` had passed."""
    from datetime import timedelta

    async with runtime.core.sessions.begin() as session:
        await session.execute(
            update(PairingCode).values(
                created_at=PairingCode.created_at - timedelta(minutes=minutes),
                expires_at=PairingCode.expires_at - timedelta(minutes=minutes),
                replied_at=PairingCode.replied_at - timedelta(minutes=minutes),
            )
        )


async def test_pairing_replies_are_capped_per_minute_across_senders(runtime: Runtime) -> None:
    runtime.core.settings.pairing_replies_per_minute = 3
    sent = [await tell(runtime, "hi", who=f"60{n}") for n in range(5)]
    await drain(runtime)

    replied = [bool(await answers(runtime, received)) for received in sent]
    assert sum(replied) == 3
    assert len(await refusals(runtime)) == 5


async def test_an_allowlist_admits_the_listed_ids_and_refuses_others(
    runtime: Runtime, llm: FakeLLM
) -> None:
    runtime.core.settings.telegram_access = "allowlist"
    runtime.core.settings.telegram_allow = ["111"]
    listed = await tell(runtime, "hello", who="111")
    other = await tell(runtime, "hello", who="222")
    await drain(runtime)

    assert await answers(runtime, listed) == ["echo: hello"]
    assert await answers(runtime, other) == []
    assert await statuses(runtime, other) == ["refused"]
    (event,) = await refusals(runtime)
    assert (event.actor, event.data["why"]) == ("telegram:222", "not on the channel's allow list")
    assert len(llm.requests) == 1


async def test_an_email_allowlist_takes_addresses_and_domains(runtime: Runtime) -> None:
    runtime.core.settings.email_access = "allowlist"
    runtime.core.settings.email_allow = ["Boss@Corp.example", "@friends.example", "kin.example"]
    senders = ["boss@corp.example", "ann@friends.example", "Uncle@Kin.Example", "eve@corp.example"]
    sent = [await tell(runtime, "hello", who=who, channel="email") for who in senders]
    await drain(runtime)

    assert [await statuses(runtime, received) for received in sent] == [
        ["handled"],
        ["handled"],
        ["handled"],
        ["refused"],
    ]


async def test_open_channels_answer_everyone_and_dms_stay_one_conversation_per_person(
    runtime: Runtime,
) -> None:
    runtime.core.settings.telegram_access = "open"
    ann = await tell(runtime, "I am Ann", who="701")
    bob = await tell(runtime, "I am Bob", who="702")
    await drain(runtime)
    assert ann.conversation_id != bob.conversation_id

    history = await tell(runtime, "/history", who="702")
    await drain(runtime)
    shown = (await answers(runtime, history))[-1]
    assert "I am Bob" in shown and "Ann" not in shown


async def test_an_expired_code_is_not_approved(runtime: Runtime) -> None:
    stranger = await tell(runtime, "hello")
    await drain(runtime)
    code = await code_of(runtime, stranger)
    await _age(runtime, minutes=61)

    assert (await reply_to(runtime, f"/approve-user {code}")).text == (
        f"The pairing code {code} of telegram:555 has expired: ask them to write again "
        "for a new one."
    )
    await tell(runtime, "still me")
    await drain(runtime)
    assert await statuses(runtime, stranger) == ["refused", "refused"]


async def test_slack_answers_its_workspace_and_pairs_people_from_other_workspaces(
    runtime: Runtime,
) -> None:
    assert runtime.core.settings.slack_access == "workspace"
    member = await tell(runtime, "hello", who="U0MEMBER", channel="slack")
    guest = await tell(runtime, "hello", who="T0OTHER/U0GUEST", channel="slack")
    await drain(runtime)

    assert await answers(runtime, member) == ["echo: hello"]
    assert await statuses(runtime, guest) == ["refused"]
    assert CODE.search((await answers(runtime, guest))[0])
