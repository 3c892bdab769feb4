"""`/persona`: who may talk to which persona (its allow: list), refusals polite and audited."""

from __future__ import annotations

from sqlalchemy import select

from bot.app import Runtime
from bot.messages import ConversationRef
from bot.storage.models import AuditEvent
from personas import store
from personas.spec import PersonaSpec
from tests.fakes.llm_server import FakeLLM
from tests.support import reply_to

# The web chat delivers here; a platform's ids are written the same way (slack:U0123).
BOB = ConversationRef(channel="web", workspace="home", chat="bob")
EVE = ConversationRef(channel="web", workspace="home", chat="eve")


async def _analyst(runtime: Runtime, **allow: list[str]) -> None:
    spec = PersonaSpec(name="analyst", system_prompt="You analyse.", allow=allow)
    async with runtime.core.sessions.begin() as session:
        await store.upsert(session, spec, source="test")


async def test_a_limited_persona_talks_only_to_whom_it_names(runtime: Runtime) -> None:
    await _analyst(runtime, users=["web:bob"])

    chosen = await reply_to(runtime, "/persona use analyst", ref=BOB, author="bob")
    refused = await reply_to(runtime, "/persona use analyst", ref=EVE, author="eve")
    listed = await reply_to(runtime, "/persona list", ref=EVE, author="eve")

    assert chosen.text.startswith("Now talking to analyst")
    assert refused.text == (
        "Sorry, analyst talks only to users web:bob. Send /persona list for the personas "
        "you can use here."
    )
    assert "analyst" not in listed.text and "assistant" in listed.text
    async with runtime.core.sessions() as session:
        (event,) = await session.scalars(select(AuditEvent).where(AuditEvent.action == "refused"))
    assert (event.subject, event.data["why"]) == ("persona:analyst", "limited to users web:bob")


async def test_chats_and_workspaces_can_be_named(runtime: Runtime) -> None:
    await _analyst(runtime, workspaces=["web:home"], chats=["web:bob"])
    elsewhere = ConversationRef(channel="web", workspace="other", chat="bob")

    here = await reply_to(runtime, "/persona use analyst", ref=BOB, author="bob")
    there = await reply_to(runtime, "/persona use analyst", ref=elsewhere, author="bob")

    assert here.text.startswith("Now talking to analyst")
    assert there.text.startswith("Sorry, analyst talks only to")
    assert "workspaces web:home" in there.text


async def test_a_limited_persona_does_not_answer_others_in_a_conversation_it_holds(
    runtime: Runtime, llm: FakeLLM
) -> None:
    await _analyst(runtime, chats=["web:bob"])
    shared = ConversationRef(channel="web", workspace="home", chat="bob")
    await reply_to(runtime, "/persona use analyst", ref=shared, author="bob")
    await _analyst(runtime, chats=["web:elsewhere"])  # the owner narrows it later

    answer = await reply_to(runtime, "what now?", ref=shared, author="bob")

    assert answer.text.startswith("Sorry, analyst talks only to chats web:elsewhere.")
    assert llm.requests == []
