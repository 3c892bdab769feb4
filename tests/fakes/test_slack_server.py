"""The fake Slack answers the real slack_sdk and slack_bolt over HTTP and WebSocket the way
Slack does, so adapter tests that pass against it mean something."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.fakes.slack_payloads import (
    APP_TOKEN,
    BOT_TOKEN,
    CHANNEL,
    DM_CHANNEL,
    PERSON,
    SIGNING_SECRET,
    Json,
    app_mention,
    block_actions,
    dm,
    event_callback,
    file_share,
    own_message,
    signed_command,
    signed_event,
    signed_interaction,
    slash_command,
)
from tests.fakes.slack_server import FakeSlack


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


def web_client(fake: FakeSlack, token: str = BOT_TOKEN, **options: Any) -> AsyncWebClient:
    return AsyncWebClient(token=token, base_url=fake.api_url, **options)


async def refusal(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as raised:
        await call
    return raised.value


# -- Web API ---------------------------------------------------------------------------------


async def test_a_post_in_a_thread_is_recorded_and_shown_in_its_channel(fake: FakeSlack) -> None:
    client = web_client(fake)
    parent = await client.chat_postMessage(channel=CHANNEL, text="parent")
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*reply*"}}]
    reply = await client.chat_postMessage(
        channel=CHANNEL, text="reply", blocks=blocks, thread_ts=parent["ts"]
    )

    assert reply["channel"] == CHANNEL and reply["message"]["text"] == "reply"
    assert [m["text"] for m in fake.messages(CHANNEL)] == ["parent", "reply"]
    assert fake.thread(CHANNEL, parent["ts"])[0]["blocks"] == blocks
    posted = fake.calls_to("chat.postMessage", channel=CHANNEL)
    assert [c.params["text"] for c in posted] == ["parent", "reply"]
    assert posted[1].params["thread_ts"] == parent["ts"] and posted[0].at <= posted[1].at


async def test_edit_delete_ephemeral_and_a_dm_by_user_id(fake: FakeSlack) -> None:
    client = web_client(fake)
    posted = await client.chat_postMessage(channel=PERSON, text="working…")
    assert posted["channel"] == DM_CHANNEL  # Slack opens the DM of a user id
    await client.chat_update(channel=DM_CHANNEL, ts=posted["ts"], text="done")
    assert [(m["text"], "edited" in m) for m in fake.messages(DM_CHANNEL)] == [("done", True)]
    await client.chat_delete(channel=DM_CHANNEL, ts=posted["ts"])
    assert fake.messages(DM_CHANNEL) == []
    gone = await refusal(client.chat_update(channel=DM_CHANNEL, ts=posted["ts"], text="x"))
    assert gone.response["error"] == "message_not_found"

    await client.chat_postEphemeral(channel=CHANNEL, user=PERSON, text="only you")
    assert fake.ephemeral[0]["to"] == PERSON and fake.messages(CHANNEL) == []


async def test_a_wrong_token_is_refused_as_slack_does(fake: FakeSlack) -> None:
    wrong = await refusal(web_client(fake, "xoxb-not-ours").auth_test())
    assert wrong.response["error"] == "invalid_auth"
    app_token = await refusal(
        web_client(fake, APP_TOKEN).chat_postMessage(channel=CHANNEL, text="x")
    )
    assert app_token.response["error"] == "not_allowed_token_type"
    bot_token = await refusal(web_client(fake).apps_connections_open(app_token=BOT_TOKEN))
    assert bot_token.response["error"] == "not_allowed_token_type"

    identity = await web_client(fake).auth_test()
    assert (identity["user_id"], identity["bot_id"]) == (fake.bot_user_id, fake.bot_id)
    assert identity.headers["X-OAuth-Scopes"]


async def test_rate_limit_answers_429_with_retry_after_for_one_channel(fake: FakeSlack) -> None:
    client = web_client(fake)
    fake.rate_limit("chat.postMessage", times=2, retry_after=7, channel=CHANNEL)

    limited = await refusal(client.chat_postMessage(channel=CHANNEL, text="one"))
    assert limited.response.status_code == 429
    assert limited.response.headers["Retry-After"] == "7"
    assert limited.response["error"] == "ratelimited"
    await client.chat_postMessage(channel="C0OTHER", text="other channels go on")
    await refusal(client.chat_postMessage(channel=CHANNEL, text="two"))
    await client.chat_postMessage(channel=CHANNEL, text="three")

    assert [m["text"] for m in fake.messages(CHANNEL)] == ["three"]
    assert [c.status for c in fake.calls_to("chat.postMessage")] == [429, 200, 429, 200]


async def test_message_limits_and_channel_refusals(fake: FakeSlack) -> None:
    client = web_client(fake)
    await client.chat_postMessage(channel=CHANNEL, text="x" * 40_000)
    too_long = await refusal(client.chat_postMessage(channel=CHANNEL, text="x" * 40_001))
    assert too_long.response["error"] == "msg_too_long"
    section = [{"type": "section", "text": {"type": "mrkdwn", "text": "y" * 3_001}}]
    bad_blocks = await refusal(client.chat_postMessage(channel=CHANNEL, text="y", blocks=section))
    assert bad_blocks.response["error"] == "invalid_blocks"

    fake.missing_channels.add("C0GONE")
    fake.add_channel("C0PRIVATE", "secret", is_private=True, is_member=False)
    missing = await refusal(client.chat_postMessage(channel="C0GONE", text="hi"))
    outside = await refusal(client.chat_postMessage(channel="C0PRIVATE", text="hi"))
    assert (missing.response["error"], outside.response["error"]) == (
        "channel_not_found",
        "not_in_channel",
    )
    fake.fail("chat.update", "cant_update_message")
    posted = await client.chat_postMessage(channel=CHANNEL, text="z")
    failed = await refusal(client.chat_update(channel=CHANNEL, ts=posted["ts"], text="zz"))
    assert failed.response["error"] == "cant_update_message"


async def test_5xx_then_an_outage_then_slack_is_back_on_the_same_port(fake: FakeSlack) -> None:
    client = web_client(fake, retry_handlers=[])
    fake.server_error(times=1, status=503)
    failed = await refusal(client.chat_postMessage(channel=CHANNEL, text="one"))
    assert failed.response.status_code == 503

    port = fake.port
    await fake.stop()
    with pytest.raises(aiohttp.ClientConnectorError):
        await client.chat_postMessage(channel=CHANNEL, text="two")
    await fake.start()
    assert fake.port == port
    await client.chat_postMessage(channel=CHANNEL, text="three")
    assert [m["text"] for m in fake.messages(CHANNEL)] == ["three"]


async def test_files_upload_v2_arrives_byte_for_byte(fake: FakeSlack) -> None:
    data = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4 + b"\x00"
    thread = await web_client(fake).chat_postMessage(channel=CHANNEL, text="the report")
    result = await web_client(fake).files_upload_v2(
        channel=CHANNEL,
        file=data,
        filename="chart.png",
        title="Chart",
        initial_comment="here it is",
        thread_ts=thread["ts"],
    )

    (uploaded,) = fake.files
    assert uploaded.data == data and uploaded.length == len(data)
    assert (uploaded.channel_id, uploaded.thread_ts) == (CHANNEL, thread["ts"])
    assert (uploaded.initial_comment, uploaded.title) == ("here it is", "Chart")
    assert result["file"]["id"] == uploaded.file_id
    (shown,) = fake.thread(CHANNEL, thread["ts"])
    assert shown["text"] == "here it is" and shown["files"][0]["id"] == uploaded.file_id
    share = result["file"]["shares"]["public"][CHANNEL][0]
    assert share["ts"] == shown["ts"]


async def test_an_upload_sent_as_a_multipart_form_is_kept_too(fake: FakeSlack) -> None:
    client = web_client(fake)
    data = b"\x00\x01 binary \xff"
    issued = await client.files_getUploadURLExternal(filename="a.bin", length=len(data))
    form = aiohttp.FormData()
    form.add_field("file", data, filename="a.bin")
    async with (
        aiohttp.ClientSession() as session,
        session.post(issued["upload_url"], data=form) as response,
    ):
        assert response.status == 200
    await client.files_completeUploadExternal(
        files=[{"id": issued["file_id"]}], channel_id=DM_CHANNEL
    )
    assert [(f.data, f.channel_id, f.thread_ts) for f in fake.files] == [(data, DM_CHANNEL, None)]


async def test_users_and_conversations(fake: FakeSlack) -> None:
    client = web_client(fake)
    fake.add_user(PERSON, "Ada", real_name="Ada Lovelace")
    user = (await client.users_info(user=PERSON))["user"]
    assert (user["profile"]["display_name"], user["real_name"]) == ("Ada", "Ada Lovelace")
    unknown = await refusal(client.users_info(user="U0NOBODY"))
    assert unknown.response["error"] == "user_not_found"

    opened = await client.conversations_open(users=PERSON)
    assert opened["channel"]["id"] == DM_CHANNEL
    info = (await client.conversations_info(channel=DM_CHANNEL))["channel"]
    assert info["is_im"] and info["user"] == PERSON
    fake.missing_channels.add("C0GONE")
    gone = await refusal(client.conversations_info(channel="C0GONE"))
    assert gone.response["error"] == "channel_not_found"


async def test_a_shared_file_downloads_only_with_the_bot_token(fake: FakeSlack) -> None:
    data = b"%PDF-1.7\x00\xff binary"
    entry = fake.share_file(data, "notes.pdf", mimetype="application/pdf")
    event = file_share([entry], "have a look")
    assert event["subtype"] == "file_share" and event["files"][0]["size"] == len(data)

    async with aiohttp.ClientSession() as session:
        bearer = {"Authorization": f"Bearer {BOT_TOKEN}"}
        async with session.get(entry["url_private"], headers=bearer) as response:
            assert await response.read() == data
        async with session.get(entry["url_private"]) as response:
            # Slack answers a missing token with its sign-in page, not with an error status.
            assert response.status == 200 and response.content_type == "text/html"
    assert [d.authorized for d in fake.downloads] == [True, False]


async def test_response_url_posts_are_recorded(fake: FakeSlack) -> None:
    url = fake.response_url()
    answer = await AsyncWebhookClient(url).send(
        text="done", response_type="in_channel", replace_original=True
    )
    assert answer.status_code == 200
    (posted,) = fake.responses
    assert posted.url == url
    assert posted.body == {"text": "done", "response_type": "in_channel", "replace_original": True}


# -- Socket Mode -----------------------------------------------------------------------------


class Listener:
    """What the SDK's client hands its listeners, acknowledging every envelope."""

    def __init__(self) -> None:
        self.frames: list[Json] = []
        self.requests: list[SocketModeRequest] = []

    async def on_message(
        self, client: AsyncBaseSocketModeClient, message: Json, raw: str | None
    ) -> None:
        self.frames.append(message)

    async def on_request(self, client: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:
        self.requests.append(req)
        await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))


@contextlib.asynccontextmanager
async def socket_client(
    fake: FakeSlack, listener: Listener, **options: Any
) -> AsyncIterator[SocketModeClient]:
    """slack_sdk's own aiohttp Socket Mode client, its Web API calls going to the fake."""
    client = SocketModeClient(app_token=APP_TOKEN, web_client=web_client(fake), **options)
    client.message_listeners.append(listener.on_message)
    client.socket_mode_request_listeners.append(listener.on_request)
    await client.connect()  # type: ignore[no-untyped-call]  # the SDK leaves these untyped
    try:
        yield client
    finally:
        await client.close()  # type: ignore[no-untyped-call]


async def test_the_sdk_connects_is_greeted_and_acks_an_event(fake: FakeSlack) -> None:
    listener = Listener()
    async with socket_client(fake, listener):
        await fake.wait_for(lambda: listener.frames, what="hello")
        assert listener.frames[0]["type"] == "hello"
        assert listener.frames[0]["num_connections"] == 1

        event = dm("hello there")
        envelope_id = await fake.socket.send_event(event)
        ack = await fake.socket.wait_for_ack(envelope_id)
        assert ack.payload is None and ack.latency is not None and ack.latency >= 0
        (request,) = listener.requests
        assert request.type == "events_api" and request.payload["event"] == event
        assert request.payload["event_id"].startswith("Ev")
    await fake.wait_for(lambda: not fake.socket.open_connections, what="the socket closed")


async def test_a_refresh_in_the_middle_moves_to_a_new_socket_and_closes_the_old(
    fake: FakeSlack,
) -> None:
    listener = Listener()
    async with socket_client(fake, listener):
        first = await fake.socket.send_event(dm("before"))
        await fake.socket.wait_for_ack(first)
        old = await fake.socket.disconnect("refresh_requested")
        # Delivered only once the client has reconnected, on the new socket.
        second = await fake.socket.send_event(dm("after"))
        ack = await fake.socket.wait_for_ack(second)

        assert ack.connection != old.number
        await fake.wait_for(lambda: not old.open, what="the old socket closed")
        assert [c.number for c in fake.socket.open_connections] == [ack.connection]
        assert len(fake.calls_to("apps.connections.open")) == 2


async def test_a_deaf_socket_is_replaced_by_a_client_that_pings(fake: FakeSlack) -> None:
    listener = Listener()
    async with socket_client(fake, listener, ping_interval=0.2):
        deaf = fake.socket.go_deaf()
        envelope_id = await fake.socket.send_event(dm("are you there?"))
        ack = await fake.socket.wait_for_ack(envelope_id)
        assert ack.connection != deaf.number and deaf.pings > 0
        await fake.wait_for(lambda: not deaf.open, what="the deaf socket closed")


async def test_a_redelivery_keeps_the_event_id(fake: FakeSlack) -> None:
    listener = Listener()
    async with socket_client(fake, listener):
        first = await fake.socket.send_event(dm("once"))
        again = await fake.socket.redeliver(first)
        await fake.socket.wait_for_ack(again)
        one, two = listener.requests
        assert one.payload["event_id"] == two.payload["event_id"]
        assert (two.retry_attempt, two.retry_reason) == (1, "timeout")


async def test_a_click_reaches_the_client_as_an_interactive_envelope(fake: FakeSlack) -> None:
    listener = Listener()
    async with socket_client(fake, listener):
        clicked = await fake.socket.send_action("approve", "yes", message_ts="1.000001")
        await fake.socket.wait_for_ack(clicked)
        (request,) = listener.requests
        assert request.type == "interactive" and request.payload["type"] == "block_actions"
        action = request.payload["actions"][0]
        assert (action["action_id"], action["value"]) == ("approve", "yes")
        assert request.payload["response_url"].startswith(fake.url)


async def test_after_a_restart_the_client_reconnects_and_nothing_leaks(fake: FakeSlack) -> None:
    listener = Listener()
    async with socket_client(fake, listener, ping_interval=0.2):
        before = fake.socket.open_connections[0]
        await fake.restart()
        assert not before.open
        envelope_id = await fake.socket.send_event(dm("back again"))
        ack = await fake.socket.wait_for_ack(envelope_id)
        assert ack.connection != before.number
        assert [c.number for c in fake.socket.open_connections] == [ack.connection]


async def test_a_warning_is_followed_by_the_server_closing_the_socket(fake: FakeSlack) -> None:
    url = (await web_client(fake, APP_TOKEN).apps_connections_open(app_token=APP_TOKEN))["url"]
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        assert (await ws.receive_json())["type"] == "hello"
        await fake.socket.disconnect("warning", close_after=0.05)
        assert (await ws.receive_json())["reason"] == "warning"
        assert (await ws.receive()).type is aiohttp.WSMsgType.CLOSE


async def test_waiting_has_a_deadline(fake: FakeSlack) -> None:
    with pytest.raises(TimeoutError, match="the impossible"):
        await fake.wait_for(lambda: False, 0.05, what="the impossible")


async def test_slack_caps_open_sockets(fake: FakeSlack) -> None:
    fake.socket.max_connections = 2
    app_client = web_client(fake, APP_TOKEN)
    async with aiohttp.ClientSession() as session:
        sockets = []
        for _ in range(3):
            url = (await app_client.apps_connections_open(app_token=APP_TOKEN))["url"]
            sockets.append(await session.ws_connect(url))
        greetings = [await ws.receive_json() for ws in sockets]
        assert [g["type"] for g in greetings] == ["hello", "hello", "disconnect"]
        assert greetings[2]["reason"] == "too_many_websockets"
        reused = await session.get(url.replace("ws://", "http://"))
        assert reused.status == 401  # a ticket opens one socket
        for ws in sockets:
            await ws.close()
    await fake.wait_for(lambda: not fake.socket.open_connections, what="every socket closed")


# -- slack_bolt ------------------------------------------------------------------------------


def bolt_app(fake: FakeSlack) -> AsyncApp:
    """How an AsyncApp stays off slack.com: its client carries the fake's base URL."""
    return AsyncApp(client=web_client(fake), signing_secret=SIGNING_SECRET)


async def test_bolt_in_socket_mode_runs_a_mention_and_acks_a_command(fake: FakeSlack) -> None:
    app = bolt_app(fake)
    mentions: list[Json] = []

    @app.event("app_mention")
    async def on_mention(event: Json, say: Any) -> None:
        mentions.append(event)
        await say(text="on it", thread_ts=event["ts"])

    @app.command("/x")
    async def on_command(ack: Any, command: dict[str, str]) -> None:
        await ack(text=f"running {command['text']}")

    handler = AsyncSocketModeHandler(app, APP_TOKEN)
    await handler.connect_async()  # type: ignore[no-untyped-call]
    try:
        event = app_mention("summarise")
        await fake.socket.wait_for_ack(await fake.socket.send_event(event))
        await fake.wait_for(lambda: fake.messages(CHANNEL), what="the reply")
        assert mentions[0]["text"] == event["text"]
        assert fake.thread(CHANNEL, event["ts"])[0]["text"] == "on it"
        assert len(fake.calls_to("auth.test")) == 1  # asked lazily, at the first request

        ack = await fake.socket.wait_for_ack(await fake.socket.send_command("/x", "digest"))
        assert ack.payload == {"text": "running digest"}
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]


async def test_bolt_in_http_mode_accepts_signed_requests_and_refuses_forged(
    fake: FakeSlack,
) -> None:
    app = bolt_app(fake)
    seen: list[str] = []

    @app.event("message")
    async def on_message(event: Json) -> None:
        seen.append(event["text"])

    @app.command("/run")
    async def on_command(ack: Any) -> None:
        await ack()

    @app.action("approve")
    async def on_click(ack: Any, body: Json) -> None:
        await ack()
        seen.append(body["actions"][0]["value"])

    async def status(body: bytes, headers: dict[str, str]) -> int:
        bolt_request = AsyncBoltRequest(body=body.decode(), headers=dict(headers))
        return (await app.async_dispatch(bolt_request)).status

    own = signed_event(SIGNING_SECRET, event_callback(own_message("my own echo")))
    person = signed_event(SIGNING_SECRET, event_callback(dm("from a person")))
    assert SignatureVerifier(SIGNING_SECRET).is_valid_request(person.body, person.headers)
    assert await status(own.body, own.headers) == 200
    assert await status(person.body, person.headers) == 200
    await fake.wait_for(lambda: seen, what="the person's message")
    assert seen == ["from a person"]  # our own message is recognised and ignored

    url = fake.response_url()
    command = signed_command(SIGNING_SECRET, slash_command("/run", "digest", response_url=url))
    assert await status(command.body, command.headers) == 200
    click = signed_interaction(
        SIGNING_SECRET, block_actions("approve", "yes", response_url=url, message_ts="1.000001")
    )
    assert await status(click.body, click.headers) == 200
    await fake.wait_for(lambda: "yes" in seen, what="the click")

    forged = signed_event("not-the-secret", event_callback(dm("forged")))
    stale = signed_event(SIGNING_SECRET, event_callback(dm("replayed")), timestamp=1)
    assert await status(forged.body, forged.headers) == 401
    assert await status(stale.body, stale.headers) == 401
    assert await status(person.body, {}) == 401


# -- control endpoints, for a fake in another process (benchmarks) ---------------------------


async def records(fake: FakeSlack, **since: int) -> Json:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{fake.url}/_records", params=since) as answer,
    ):
        assert answer.status == 200
        found: Json = await answer.json()
        return found


async def test_records_page_through_the_calls_from_another_process(fake: FakeSlack) -> None:
    client = web_client(fake)
    await client.chat_postMessage(channel=DM_CHANNEL, text="first")
    posted = await client.chat_postMessage(channel=CHANNEL, text="second")
    await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="edited")

    everything = await records(fake)
    assert [(c["method"], c["channel"], c["text"]) for c in everything["calls"]] == [
        ("chat.postMessage", DM_CHANNEL, "first"),
        ("chat.postMessage", CHANNEL, "second"),
        ("chat.update", CHANNEL, "edited"),
    ]
    assert everything["next_call"] == 3 and everything["calls"][0]["ok"] is True
    assert everything["calls"][0]["at"] == fake.calls[0].at  # time.monotonic(), system-wide

    await client.chat_postMessage(channel=CHANNEL, text="third")
    later = await records(fake, calls=everything["next_call"])
    assert [c["text"] for c in later["calls"]] == ["third"] and later["next_call"] == 4


async def test_events_posted_to_the_fake_reach_the_socket_and_their_acks_are_recorded(
    fake: FakeSlack,
) -> None:
    listener = Listener()
    async with socket_client(fake, listener):
        events = [dm(f"hello {n}", user=f"U0PERSON{n}", channel=f"D0PERSON{n}") for n in range(3)]
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{fake.url}/_socket/events", json={"events": events}) as answer,
        ):
            assert answer.status == 200
            sent = (await answer.json())["envelope_ids"]
        assert len(sent) == 3
        for envelope_id in sent:
            await fake.socket.wait_for_ack(envelope_id)
        assert [r.payload["event"] for r in listener.requests] == events

        acks = (await records(fake))["acks"]
        assert {a["envelope_id"] for a in acks} == set(sent)
        assert all(a["latency"] >= 0 for a in acks)
        assert (await records(fake, acks=2))["acks"] == acks[2:]
