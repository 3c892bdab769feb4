"""Prompt actions: tried, saved, run on a message, text or the thread, and kept in history."""

from __future__ import annotations

import time

from sqlalchemy import select

from bot import replies
from bot.app import Runtime
from bot.messages import Attachment, ConversationRef
from bot.storage.models import AuditEvent, Message, PromptActionRun, StoredFile
from tests.fakes.llm_server import FakeLLM
from tests.support import delivered, drain, in_browser, loop_gaps, outbox_rows, reply_to, say


async def test_try_then_save_then_run_on_the_message_before(runtime: Runtime, llm: FakeLLM) -> None:
    await reply_to(runtime, "the meeting moved to Friday")
    tried = await reply_to(runtime, '/t try "Make formal: {{ text }}"')
    assert tried.text == "echo: Make formal: the meeting moved to Friday"

    saved = await reply_to(
        runtime, '/t save formal "Rewrite formally in {{ lang }}: {{ text }}" temperature=0.1'
    )
    assert saved.text.startswith("Saved the action formal.")
    ran = await reply_to(runtime, "/t formal lang=German see you soon")
    assert ran.text == "echo: Rewrite formally in German: see you soon"
    assert llm.requests[-1]["temperature"] == 0.1

    listed = (await reply_to(runtime, "/t")).text
    assert "formal — Rewrite formally in {{ lang }}: {{ text }}" in listed
    history = (await reply_to(runtime, "/t history")).text
    assert "formal · openai/fake-model · ok" in history and "try · " in history
    async with runtime.core.sessions() as session:
        runs = (await session.scalars(select(PromptActionRun).order_by(PromptActionRun.id))).all()
    assert [(r.name, r.input, r.status) for r in runs] == [
        ("try", "the meeting moved to Friday", "ok"),
        ("formal", "see you soon", "ok"),
    ]
    assert runs[1].prompt_tokens > 0


async def test_actions_and_their_history_belong_to_their_person(runtime: Runtime) -> None:
    tried = await in_browser(runtime, "ann", '/t try "Secret: {{ text }}" ann-private')
    assert tried == "echo: Secret: ann-private"
    await in_browser(runtime, "ann", '/t save mine "Ann: {{ text }}"')

    assert await in_browser(runtime, "bob", "/t history") == "No action runs yet."
    assert "There is no action called 'mine'" in await in_browser(runtime, "bob", "/t mine hi")
    await in_browser(runtime, "bob", '/t save mine "Bob: {{ text }}"')  # his own: ann's stays
    assert await in_browser(runtime, "ann", "/t mine hi") == "echo: Ann: hi"
    assert await in_browser(runtime, "bob", "/t mine hi") == "echo: Bob: hi"

    await reply_to(runtime, '/t save shout "Loud: {{ text }}"')  # the owner's: everyone's
    assert await in_browser(runtime, "bob", "/t shout hey") == "echo: Loud: hey"
    listed = await in_browser(runtime, "bob", "/t")
    assert "shout — Loud" in listed and "mine — Bob" in listed and "Ann:" not in listed
    assert "ann-private" not in await in_browser(runtime, "bob", "/t history")
    assert "ann-private" in (await reply_to(runtime, "/t history")).text
    await in_browser(runtime, "bob", '/t save shout "Quiet: {{ text }}"')
    assert await in_browser(runtime, "ann", "/t shout hey") == "echo: Loud: hey"


async def test_an_action_on_the_whole_thread(runtime: Runtime, llm: FakeLLM) -> None:
    await reply_to(runtime, "first point")
    await reply_to(runtime, '/t try "Summarise: {{ thread }}" thread')
    prompt = llm.requests[-1]["messages"][-1]["content"]
    assert prompt == "Summarise: Person: first point\nAssistant: echo: first point"


async def test_bad_actions_are_explained(runtime: Runtime) -> None:
    assert "There is no action called 'nope'" in (await reply_to(runtime, "/t nope")).text
    await reply_to(runtime, '/t save x "{{ colour }} {{ text }}"')
    assert "reads colour, which it will not get" in (await reply_to(runtime, "/t x hi")).text
    assert (
        "may not use __class__"
        in (await reply_to(runtime, '/t try "{{ text.__class__ }}" hi')).text
    )
    assert "no message before this one" in (await reply_to(runtime, '/t try "{{ text }}"')).text


LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x"
BOMB = f'/t try "{LOOPS}" hi'


async def test_a_template_bomb_is_stopped_while_others_are_answered(
    runtime: Runtime, llm: FakeLLM
) -> None:
    bob = ConversationRef(channel="terminal", chat="bob")
    bomb = await say(runtime, BOMB)
    help_ = await say(runtime, "/help", ref=bob, author="bob")
    started = time.monotonic()
    async with loop_gaps() as gaps:
        await drain(runtime)

    assert time.monotonic() - started < 30
    [stopped] = [out for out in await delivered(runtime) if out.in_reply_to == bomb.message_id]
    assert stopped.text == replies.template_too_slow(2)
    assert stopped.text.startswith("That template ran for more than 2 s and was stopped.")
    # Bob's answer was written while the bomb ran, and the event loop never stalled.
    rows = {row.payload["in_reply_to"]: row.id for row in await outbox_rows(runtime)}
    assert rows[help_.message_id] < rows[bomb.message_id]
    assert max(gaps) < 1.0
    assert llm.requests == []


async def test_each_bomb_gets_the_sentence_for_its_bound(runtime: Runtime) -> None:
    too_big = replies.template_too_big(1_000_000)
    cases = {
        '/t try "{{ range(10**9)|length }}" hi': replies.template_range_too_long(100_000, 10**9),
        "/t try \"{{ ('a' * 10**8)|length }}\" hi": too_big,
        "/t try \"{% set ns = namespace(x='a') %}{% for i in range(60) %}"
        '{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x|length }}" hi': too_big,
        "/t try \"{{ 'ab'|center(1000000000)|length }}\" hi": (
            replies.template_too_much_memory(256)
        ),
    }
    for command, sentence in cases.items():
        assert (await reply_to(runtime, command)).text == sentence, command

    async with runtime.core.sessions() as session:
        refusals = (
            await session.scalars(
                select(AuditEvent).where(AuditEvent.action == "refused").order_by(AuditEvent.id)
            )
        ).all()
    assert [(e.actor.startswith("user:"), e.data["why"]) for e in refusals] == [
        (True, sentence) for sentence in cases.values()
    ]
    assert all(e.subject.startswith("message:") for e in refusals)


NOTES = Attachment("notes.txt", "text/plain", data=b"- ship on Friday\n- Ann owns the demo")


async def test_an_action_on_an_attached_file(runtime: Runtime, llm: FakeLLM) -> None:
    """The file comes with the command, or was sent before; its content is kept once."""
    sent = await reply_to(runtime, '/t try "Tasks in: {{ text }}"', attachments=(NOTES,))
    assert sent.text == "echo: Tasks in: - ship on Friday\n- Ann owns the demo"

    await reply_to(runtime, "here are the notes", attachments=(NOTES,))
    before = await reply_to(runtime, '/t try "Tasks in: {{ text }}"')
    assert before.text == (
        "echo: Tasks in: here are the notes\n\n--- notes.txt ---\n"
        "- ship on Friday\n- Ann owns the demo"
    )
    await reply_to(runtime, "and something else")
    newest = await reply_to(runtime, '/t try "Only: {{ text }}" attachment')
    assert newest.text == "echo: Only: - ship on Friday\n- Ann owns the demo"

    async with runtime.core.sessions() as session:
        assert len((await session.scalars(select(StoredFile))).all()) == 1
        stored = await session.scalar(select(Message.attachments).where(Message.id == 1))
    assert stored == [
        {"filename": "notes.txt", "content_type": "text/plain", "size": 36, "url": "", "file_id": 1}
    ]


async def test_a_file_that_is_not_text_is_refused_plainly(runtime: Runtime) -> None:
    assert "no attached file" in (await reply_to(runtime, '/t try "{{ text }}" attachment')).text
    photo = Attachment("cat.png", "image/png", data=b"\x89PNG....")
    refused = await reply_to(runtime, '/t try "Describe: {{ text }}"', attachments=(photo,))
    assert refused.text.startswith("cat.png is image/png, not text: attach a text file")


def test_text_formats_people_attach_count_as_text() -> None:
    from bot.files import is_text, kind_of

    for name in ("flow.yaml", "conf.yml", "pyproject.toml", "notes.md", "app.log", "data.csv"):
        assert is_text(Attachment(name, kind_of(name))), name
    assert not is_text(Attachment("cat.png", kind_of("cat.png")))
