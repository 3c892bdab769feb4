"""Slack over the wire: slack-bolt and slack_sdk against a fake Slack on 127.0.0.1."""

from __future__ import annotations

import contextlib
import functools
import itertools
import random
import re
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select, update

from adapters.http import HttpServer
from adapters.slack import NOT_STORED, WRITING, SlackAdapter
from bot import files, health, outbox, status
from bot.app import Runtime, channel_check, channels_for, in_process_worker, undelivered
from bot.conversation import conversation_for, receive
from bot.errors import ServiceError
from bot.messages import Attachment, ConversationRef, OutgoingMessage
from bot.storage.models import Message, Outbox, User
from tests.fakes import slack_payloads as slack
from tests.fakes.llm_server import FakeLLM
from tests.fakes.slack_server import FakeSlack
from tests.support import BINARY_FILES, files_command, outbox_rows, wait_until
from workflows import store as workflow_store

DM = ConversationRef(channel="slack", workspace=slack.TEAM_ID, chat=slack.DM_CHANNEL)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


def enable_slack(runtime: Runtime, fake: FakeSlack, *, socket: bool = True) -> None:
    """The runtime's settings with Slack on, pointed at the fake, and its channels rebuilt."""
    settings = runtime.core.settings
    settings.slack_bot_token = SecretStr(slack.BOT_TOKEN)
    settings.slack_app_token = SecretStr(slack.APP_TOKEN) if socket else None
    settings.slack_signing_secret = None if socket else SecretStr(slack.SIGNING_SECRET)
    settings.slack_api_url = fake.api_url
    runtime.core.channels = channels_for(runtime.core, runtime.redis)


def quick_to_notice(runtime: Runtime, fake: FakeSlack, seconds: float) -> SlackAdapter:
    """Slack enabled, its adapter checking its connection every ``seconds``."""
    enable_slack(runtime, fake)
    adapter = runtime.core.channels["slack"]
    assert isinstance(adapter, SlackAdapter)
    adapter.ping_interval = seconds
    return adapter


@contextlib.asynccontextmanager
async def slack_up(
    runtime: Runtime, fake: FakeSlack, *, adapter: SlackAdapter | None = None
) -> AsyncIterator[SlackAdapter]:
    """Switchboard with Slack in Socket Mode and a worker, as `switchboard up` runs it
    (with ``adapter``: the channels already enabled, that adapter among them)."""
    if adapter is None:
        enable_slack(runtime, fake)
    channels = runtime.core.channels
    await channels.start(functools.partial(receive, runtime.core))
    try:
        async with in_process_worker(runtime):
            started = channels["slack"]
            assert isinstance(started, SlackAdapter)
            yield started
    finally:
        await channels.stop()


def texts(fake: FakeSlack, channel: str, thread: str | None = None) -> list[str]:
    found = fake.messages(channel) if thread is None else fake.thread(channel, thread)
    # What the person reads: the bot's messages, less a placeholder not yet replaced.
    return [str(m.get("text", "")) for m in found if m.get("bot_id") and m["text"] != WRITING]


async def replies_in(
    fake: FakeSlack, channel: str, count: int, thread: str | None = None
) -> list[str]:
    await fake.wait_for(lambda: len(texts(fake, channel, thread)) >= count or None, timeout=20)
    return texts(fake, channel, thread)


async def stored(runtime: Runtime) -> int:
    async with runtime.core.sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(Message).where(Message.direction == "in")
        )
    return int(count or 0)


async def test_a_dm_is_answered_by_the_persona_in_the_dm(runtime: Runtime, fake: FakeSlack) -> None:
    fake.add_user(slack.PERSON, "Ann")
    async with slack_up(runtime, fake):
        envelope = await fake.socket.send_event(slack.dm("hello there"))
        ack = await fake.socket.wait_for_ack(envelope)
        assert await replies_in(fake, slack.DM_CHANNEL, 1) == ["echo: hello there"]
    assert ack.envelope_id == envelope
    assert fake.socket.open_connections == []  # the socket is closed on the way out
    async with runtime.core.sessions() as session:
        assert await session.scalar(select(User.display_name)) == "Ann"


async def test_a_mention_is_answered_in_a_thread_and_the_thread_goes_on_without_one(
    runtime: Runtime, fake: FakeSlack
) -> None:
    async with slack_up(runtime, fake):
        mention = slack.app_mention("what is up?")
        await fake.socket.send_event(mention)
        assert await replies_in(fake, slack.CHANNEL, 1, mention["ts"]) == ["echo: what is up?"]

        follow = slack.channel_message("and then?", thread_ts=mention["ts"])
        await fake.socket.send_event(follow)
        answered = await replies_in(fake, slack.CHANNEL, 2, mention["ts"])
        # Talk in the channel that is not addressed to the bot is not its business.
        await fake.socket.wait_for_ack(await fake.socket.send_event(slack.channel_message("hi")))

    assert answered == ["echo: what is up?", "echo: and then?"]
    assert await stored(runtime) == 2


async def test_an_event_slack_sends_again_is_stored_and_answered_once(
    runtime: Runtime, fake: FakeSlack
) -> None:
    async with slack_up(runtime, fake):
        first = await fake.socket.send_event(slack.dm("once"))
        await fake.socket.wait_for_ack(first)
        again = await fake.socket.redeliver(first)
        await fake.socket.wait_for_ack(again)
        # The mention also comes as a plain message: one stored message.
        mention = slack.app_mention("twice?")
        await fake.socket.send_event(mention)
        as_message = slack.channel_message(f"<@{slack.BOT_USER_ID}> twice?", ts=mention["ts"])
        await fake.socket.wait_for_ack(await fake.socket.send_event(as_message))
        await replies_in(fake, slack.CHANNEL, 1, mention["ts"])
        assert await replies_in(fake, slack.DM_CHANNEL, 1) == ["echo: once"]

    assert await stored(runtime) == 2
    assert texts(fake, slack.DM_CHANNEL) == ["echo: once"]
    assert texts(fake, slack.CHANNEL, mention["ts"]) == ["echo: twice?"]


async def test_its_own_messages_other_bots_edits_and_deletions_are_not_answered(
    runtime: Runtime, fake: FakeSlack, llm: FakeLLM
) -> None:
    original = slack.dm("first")
    async with slack_up(runtime, fake):
        await fake.socket.send_event(original)
        await replies_in(fake, slack.DM_CHANNEL, 1)
        for event in (
            slack.own_message("I said this"),
            slack.bot_message("another bot"),
            slack.message_changed(ts=original["ts"], text="edited", previous_text="first"),
            slack.message_deleted(ts=original["ts"], previous_text="first"),
        ):
            await fake.socket.wait_for_ack(await fake.socket.send_event(event))

    assert await stored(runtime) == 1
    assert len(llm.requests) == 1


async def test_a_slash_command_is_acked_at_once_and_answered_in_the_channel(
    runtime: Runtime, fake: FakeSlack
) -> None:
    async with slack_up(runtime, fake):
        envelope = await fake.socket.send_command("/help")
        ack = await fake.socket.wait_for_ack(envelope)
        (answer,) = await replies_in(fake, slack.CHANNEL, 1)

    assert ack.payload in (None, {})  # an empty ack: the answer comes as a message
    assert "/run" in answer and "/help" in answer


async def test_a_command_the_database_cannot_take_in_time_is_answered_at_once(
    runtime: Runtime, fake: FakeSlack
) -> None:
    async with slack_up(runtime, fake) as adapter:

        async def stuck(incoming: object) -> None:
            raise ConnectionRefusedError("database down")

        adapter._dispatch = stuck  # type: ignore[assignment]
        ack = await fake.socket.wait_for_ack(await fake.socket.send_command("/help"))

    assert ack.payload == {"text": NOT_STORED}


async def test_a_long_reply_is_split_in_order_under_slacks_limit(
    runtime: Runtime, fake: FakeSlack
) -> None:
    paragraphs = [f"Paragraph {n}: " + "word " * 1500 for n in range(12)]
    async with slack_up(runtime, fake):
        conversation = await conversation_for(runtime.core, DM)
        text = "\n\n".join(paragraphs)
        await outbox.post(
            runtime.core, conversation, OutgoingMessage(DM, text, idempotency_key="k1")
        )
        parts = await replies_in(fake, slack.DM_CHANNEL, 3)

    assert len(parts) == 3 and all(len(part) <= 40_000 for part in parts)
    assert parts[0].startswith("Paragraph 0:") and "Paragraph 11:" in parts[-1]
    assert " ".join(parts).split() == text.split()


async def test_a_storm_of_rate_limits_delays_replies_but_drops_and_repeats_none(
    runtime: Runtime, fake: FakeSlack
) -> None:
    fake.rate_limit("chat.postMessage", times=3, retry_after=1)
    async with slack_up(runtime, fake):
        conversation = await conversation_for(runtime.core, DM)
        for n in range(3):
            out = OutgoingMessage(DM, f"reply {n}", idempotency_key=f"storm:{n}")
            await outbox.post(runtime.core, conversation, out)
        found = await replies_in(fake, slack.DM_CHANNEL, 3)

    assert found == ["reply 0", "reply 1", "reply 2"]
    async with runtime.core.sessions() as session:
        statuses = list(await session.scalars(select(Outbox.status)))
    assert statuses == ["sent"] * 3


async def test_replies_wait_through_a_slack_outage_and_go_out_in_order(
    runtime: Runtime, fake: FakeSlack
) -> None:
    async with slack_up(runtime, fake):
        conversation = await conversation_for(runtime.core, DM)
        await fake.stop()
        for n in range(2):
            out = OutgoingMessage(DM, f"while down {n}", idempotency_key=f"down:{n}")
            await outbox.post(runtime.core, conversation, out)
        # The first reply met a refused connection and waits.
        await wait_until(lambda: _tried(runtime), 10, "a delivery to be tried")
        await fake.start()
        found = await replies_in(fake, slack.DM_CHANNEL, 2)

    assert found == ["while down 0", "while down 1"]


async def test_http_mode_takes_signed_events_only(runtime: Runtime, fake: FakeSlack) -> None:
    enable_slack(runtime, fake, socket=False)
    channels = runtime.core.channels
    server = HttpServer("127.0.0.1", 0)
    server.add(channels.routes())
    await channels.start(functools.partial(receive, runtime.core))
    await server.start()
    url = f"{server.url}/slack/events"
    good = slack.signed_event(slack.SIGNING_SECRET, slack.event_callback(slack.dm("signed")))
    forged = slack.signed_event("not-the-secret", slack.event_callback(slack.dm("forged")))
    stale = slack.signed_event(
        slack.SIGNING_SECRET, slack.event_callback(slack.dm("stale")), timestamp="1000000000"
    )
    try:
        async with aiohttp.ClientSession() as client:
            answers = []
            for request in (forged, stale, good):
                async with client.post(url, data=request.body, headers=request.headers) as r:
                    answers.append(r.status)
            unsigned = await client.post(url, data=good.body)
            answers.append(unsigned.status)
            # Slack checks the URL when it is entered: the challenge comes back.
            check = slack.signed_event(slack.SIGNING_SECRET, slack.url_verification("c-1"))
            async with client.post(url, data=check.body, headers=check.headers) as r:
                challenge = (r.status, await r.text())
    finally:
        await server.stop()
        await channels.stop()

    assert answers == [401, 401, 200, 401]
    assert challenge[0] == 200 and "c-1" in challenge[1]
    async with runtime.core.sessions() as session:
        kept = list(await session.scalars(select(Message.text)))
    assert kept == ["signed"]


async def _tried(runtime: Runtime) -> int | None:
    async with runtime.core.sessions() as session:
        return await session.scalar(select(func.max(Outbox.attempts)))


PUBLISH = f"""
name: publish
command: /publish
inputs:
  text: {{type: string, description: what to publish}}
nodes:
  check: {{type: approval, message: "Publish '{{{{ text }}}}'?",
          approvers: ["slack:{slack.PERSON}"]}}
  go: {{type: reply, needs: [check], when: "check.approved", text: "Published: {{{{ text }}}}"}}
"""


async def test_a_slash_command_runs_a_workflow_whose_approval_is_a_button(
    runtime: Runtime, fake: FakeSlack
) -> None:
    async with runtime.core.sessions.begin() as session:
        await workflow_store.save(session, PUBLISH, origin="test")
    async with slack_up(runtime, fake):
        await fake.socket.send_command("/publish", "text=hello")
        found = await replies_in(fake, slack.CHANNEL, 2)
        asking = [m for m in fake.messages(slack.CHANNEL) if m.get("blocks")]
        (buttons,) = [b for b in asking[0]["blocks"] if b["type"] == "actions"]
        approve = buttons["elements"][0]
        # Someone who may not decide clicks first: the run keeps waiting.
        await fake.socket.wait_for_ack(
            await fake.socket.send_action(
                approve["action_id"],
                approve["value"],
                message_ts=asking[0]["ts"],
                user_id="U0STRANGER",
            )
        )
        await fake.socket.send_action(
            approve["action_id"], approve["value"], message_ts=asking[0]["ts"]
        )
        final = await fake.wait_for(
            lambda: [t for t in texts(fake, slack.CHANNEL) if t == "Published: hello"] or None,
            timeout=20,
        )

    assert found[0].startswith("Started run #1 of publish.")
    assert approve["value"] == "/approve 1" and approve["text"]["text"] == "Approve"
    assert final == ["Published: hello"]
    assert texts(fake, slack.CHANNEL)[2:] == [
        f"Only slack:{slack.PERSON} may decide on run #1.",
        "Approved run #1; it goes on now.",
        "Published: hello",
    ]


async def test_binary_files_go_out_byte_for_byte(runtime: Runtime, fake: FakeSlack) -> None:
    runtime.core.commands.add(files_command("draw"))
    async with slack_up(runtime, fake):
        await fake.socket.send_event(slack.dm("/draw"))
        await fake.wait_for(lambda: len(fake.files) >= len(BINARY_FILES) or None, timeout=20)
        # Sent again (a worker died after sending): nothing is posted or uploaded twice.
        async with runtime.core.sessions.begin() as session:
            await session.execute(update(Outbox).values(status="pending"))
        (row_id,) = [row.id for row in await outbox_rows(runtime)]
        assert await outbox.deliver(runtime.core, runtime.core.channels, row_id) == "sent"

    assert {upload.filename: upload.data for upload in fake.files} == BINARY_FILES
    assert {upload.channel_id for upload in fake.files} == {slack.DM_CHANNEL}
    assert texts(fake, slack.DM_CHANNEL).count("Made 2 files.") == 1
    assert len(fake.files) == len(BINARY_FILES)


async def test_a_shared_file_reaches_the_persona(
    runtime: Runtime, fake: FakeSlack, llm: FakeLLM
) -> None:
    shared = fake.share_file(b"- Ann: ship it\n- Bo: wait", "notes.md", mimetype="text/markdown")
    async with slack_up(runtime, fake):
        await fake.socket.send_event(slack.file_share([shared], "summarise this"))
        await replies_in(fake, slack.DM_CHANNEL, 1)

    asked = [m["content"] for request in llm.requests for m in request["messages"]]
    assert any("--- notes.md ---\n- Ann: ship it" in str(text) for text in asked)
    assert [d.authorized for d in fake.downloads] == [True]


async def test_the_person_sees_work_begin_and_the_answer_replaces_the_placeholder(
    runtime: Runtime, fake: FakeSlack
) -> None:
    async with slack_up(runtime, fake):
        await fake.socket.send_event(slack.dm("think hard"))
        await fake.wait_for(lambda: fake.calls_to("chat.update") or None, timeout=20)

    (placeholder,) = fake.calls_to("chat.postMessage")
    assert placeholder.params["text"] == "_Writing…_"
    (update,) = fake.calls_to("chat.update")
    assert update.params["text"] == "echo: think hard"
    assert texts(fake, slack.DM_CHANNEL) == ["echo: think hard"]


async def test_a_deaf_socket_is_replaced_and_messages_are_heard_again(
    runtime: Runtime, fake: FakeSlack
) -> None:
    adapter = quick_to_notice(runtime, fake, 0.5)
    async with slack_up(runtime, fake, adapter=adapter):
        deaf = fake.socket.go_deaf()
        await fake.wait_for(
            lambda: (len(fake.socket.open_connections) == 1 and not deaf.open) or None,
            timeout=20,
        )
        await fake.socket.send_event(slack.dm("still there?"))
        assert await replies_in(fake, slack.DM_CHANNEL, 1) == ["echo: still there?"]
        await fake.wait_for(lambda: adapter.state().connected or None, timeout=10)

    opened = fake.socket.connections
    assert len(opened) >= 2 and fake.socket.open_connections == []
    # Never two at once: each connection closed before the next one opened.
    assert all(
        a.closed_at is not None and a.closed_at <= b.opened_at
        for a, b in itertools.pairwise(opened)
    )


async def test_status_tells_whether_slack_is_connected_and_what_it_last_did(
    runtime: Runtime, fake: FakeSlack
) -> None:
    async with slack_up(runtime, fake) as adapter:
        await fake.socket.send_event(slack.dm("hi"))
        await replies_in(fake, slack.DM_CHANNEL, 1)
        await fake.wait_for(lambda: adapter.state().last_send, timeout=10)
        probe = health.Probe("slack", "channel", channel_check("slack", adapter))
        await status.publish(
            runtime.redis, "box:1", await health.Health([probe]).report(), runtime.core.channels
        )
        up_text, up = status.summary(
            await status.reports(runtime.redis), ["slack"], [], time.time()
        )
    down = await health.Health([probe]).report()

    assert up, up_text
    assert re.search(r"slack +ok +Socket Mode, since \d+ s ago, last event \d+ s ago", up_text)
    assert "last send" in up_text and "[box:1]" in up_text
    assert [(part.ok, part.detail) for part in down] == [(False, "ServiceUnavailable: stopped")]


async def test_odd_messages_get_a_clear_answer_or_a_logged_refusal(
    runtime: Runtime, fake: FakeSlack
) -> None:
    huge = fake.share_file(b"x", "server.log", mimetype="text/plain")
    huge["size"] = 30 * 2**20  # as Slack describes it: never downloaded
    fake.outside_channels.add("C0NOTMINE")
    async with slack_up(runtime, fake):
        await fake.socket.send_event(slack.dm(":wave:"))
        await replies_in(fake, slack.DM_CHANNEL, 1)
        await fake.socket.send_event(slack.file_share([huge], "what is in it?"))
        answers = await replies_in(fake, slack.DM_CHANNEL, 2)
        await fake.socket.send_event(slack.app_mention("/help", channel="C0NOTMINE"))
        await wait_until(lambda: undelivered(runtime.core), 20, "a reply to fail")
        failed = await undelivered(runtime.core)

    assert answers[0] == "echo: :wave:"
    assert "server.log is larger than 25 MB" in answers[1]
    assert fake.downloads == []
    assert [(item.channel, item.status) for item in failed] == [("slack", "failed")]
    assert "not_in_channel" in failed[0].error


async def test_a_command_where_the_bot_may_not_post_is_answered_through_its_response_url(
    runtime: Runtime, fake: FakeSlack
) -> None:
    fake.outside_channels.add("C0PRIVATE")
    async with slack_up(runtime, fake):
        await fake.socket.send_command("/help", channel_id="C0PRIVATE")
        await fake.wait_for(lambda: fake.responses or None, timeout=20)

    (answer,) = fake.responses
    assert "/run" in answer.body["text"] and answer.body["response_type"] == "in_channel"
    async with runtime.core.sessions() as session:
        assert list(await session.scalars(select(Outbox.status))) == ["sent"]


async def test_slack_out_of_reach_at_start_is_tried_again_until_it_answers(
    runtime: Runtime, fake: FakeSlack
) -> None:
    adapter = quick_to_notice(runtime, fake, 0.2)
    await fake.stop()  # no network at boot
    async with slack_up(runtime, fake, adapter=adapter):
        state = adapter.state()
        assert not state.connected and "could not be reached" in state.last_error
        await fake.start()
        await fake.wait_for(lambda: adapter.state().connected or None, timeout=20)
        await fake.socket.send_event(slack.dm("back?"))
        assert await replies_in(fake, slack.DM_CHANNEL, 1) == ["echo: back?"]


async def test_a_token_slack_refuses_stops_with_what_to_fix(
    runtime: Runtime, fake: FakeSlack
) -> None:
    enable_slack(runtime, fake)
    runtime.core.settings.slack_bot_token = SecretStr("xoxb-wrong")
    runtime.core.channels = channels_for(runtime.core, runtime.redis)

    with pytest.raises(ServiceError, match=re.escape("Slack refused the bot token (invalid_auth)")):
        await runtime.core.channels.start(functools.partial(receive, runtime.core))
    await runtime.core.channels.stop()


async def test_a_large_shared_file_arrives_whole_and_the_token_goes_only_to_slack(
    runtime: Runtime, fake: FakeSlack
) -> None:
    data = random.Random(8).randbytes(3 * 2**20)  # many chunks on the wire
    big = fake.share_file(data, "data.bin")
    elsewhere = fake.share_file(b"x", "elsewhere.txt", mimetype="text/plain")
    elsewhere["url_private"] = elsewhere["url_private_download"] = "http://127.0.0.2:9/f.txt"
    async with slack_up(runtime, fake):
        await fake.socket.send_event(slack.file_share([big, elsewhere], "keep these"))
        await replies_in(fake, slack.DM_CHANNEL, 1)

    async with runtime.core.sessions() as session:
        (kept,) = await session.scalars(
            select(Message.attachments).where(Message.direction == "in")
        )
    stored = {a["filename"]: a for a in kept}
    assert stored["data.bin"]["size"] == len(data)
    assert await files.content(runtime.core.engine, Attachment(**stored["data.bin"])) == data
    assert "file_id" not in stored["elsewhere.txt"]  # kept as a link, never fetched
    assert len(fake.downloads) == 1
