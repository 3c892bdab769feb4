"""Slack, through slack-bolt's ``AsyncApp`` and slack_sdk: Socket Mode when an app-level
token is set, HTTP at ``/slack/events`` when a signing secret is (both may be).

Inbound: every listener stores the message (``dispatch``) before Slack is acknowledged
(``process_before_response``), so a crash loses nothing and Slack's retry of the same
event is stored once. A slash command or a button must be acknowledged within 3 s: it waits
at most ``ACK_WITHIN`` seconds for the store and otherwise says so at once. Outbound: a
reply is converted to mrkdwn, split at Slack's limit and posted part by part; the parts
already posted are remembered in Redis under the reply's idempotency key, so a reply sent
again after a crash posts only what is missing. See ``adapters.slack_events`` for how
payloads become messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from adapters import slack_events
from adapters.dialects import render
from adapters.pacing import Pacer
from bot.channels import MAX_FILE, Capabilities, ChannelState, Dispatch, Wiring
from bot.errors import AdapterError, ServiceError, ServiceUnavailable
from bot.messages import Attachment, ConversationRef, IncomingMessage, OutgoingMessage, SentRef

log = logging.getLogger(__name__)
# bolt reads SLACK_BOT_TOKEN from the environment itself and, given our client too, warns at
# every start that it goes unused: true, and nothing for a person to do.
BOLT_LOG = logging.getLogger(f"{__name__}.bolt")
BOLT_LOG.addFilter(lambda record: "`token` will be unused" not in record.getMessage())

CHANNEL = slack_events.CHANNEL
TEXT_LIMIT = 40_000  # characters of one message's text
ACK_WITHIN = 2.0  # seconds a command or a click waits to be stored before Slack is answered
PING_INTERVAL = 10.0  # seconds between Socket Mode pings (and liveness checks)
MAX_RECONNECT_PAUSE = 60.0  # seconds between tries to reach Slack when it was out of reach
NAME_WITHIN = 0.5  # seconds a display name may take to look up before the ack
DOWNLOAD_WITHIN = 2.0  # seconds the files of one event may take to download before the ack
DOWNLOADS_AT_ONCE = 4  # events whose files download at the same time (each up to MAX_FILES)
MAX_FILES = 10  # files of one message (Slack's own limit)
KEEP_SECONDS = 7 * 24 * 3600  # how long sent parts and known threads are remembered
# Errors no retry cures: the reply is marked failed at once.
PERMANENT = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
        "no_permission",
        "missing_scope",
        "msg_too_long",
        "invalid_blocks",
        "restricted_action",
        "cannot_reply_to_message",
    }
)
# Where the bot may not post, the command's response_url still answers.
NOT_POSTABLE = frozenset({"channel_not_found", "not_in_channel", "is_archived"})


class SlackDown(Exception):
    """Slack answered, but not as itself (a 5xx or a 429 while connecting): try later."""


# Slack out of reach, or down (not Slack refusing the token: that stops Switchboard).
UNREACHABLE = (aiohttp.ClientError, OSError, TimeoutError, SlackDown)
# What a passing update (a status line, a placeholder) may meet: it is skipped, not retried.
PASSING = (SlackClientError, RedisError, aiohttp.ClientError, ServiceUnavailable, OSError)

NOT_STORED = (
    "Switchboard is slow to store this right now. If no answer comes within a minute, "
    "send it again."
)
WRITING = "_Writing…_"


class SlackAdapter:
    channel = CHANNEL
    capabilities = Capabilities(
        text_limit=TEXT_LIMIT, dialect="mrkdwn", edits=True, buttons=True, sends_per_second=1.0
    )

    def __init__(self, wiring: Wiring) -> None:
        settings = wiring.settings
        assert settings.slack_bot_token is not None
        self.settings = settings
        self.redis: Redis = wiring.redis
        self.content = wiring.content
        self.marks = wiring.marks(CHANNEL)
        self.client = AsyncWebClient(
            token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url
        )
        self.pacer = Pacer(self.redis, CHANNEL, self.capabilities.sends_per_second)
        secret = settings.slack_signing_secret
        self.app = AsyncApp(
            name=CHANNEL,  # else bolt reads it off the call stack, every source file included
            logger=BOLT_LOG,
            client=self.client,
            signing_secret=secret.get_secret_value() if secret else "",
            request_verification_enabled=secret is not None,
            ignoring_self_events_enabled=False,  # ours are ignored below, with other bots'
            process_before_response=True,
            raise_error_for_unhandled_request=False,
        )
        self.app.event("message")(self._on_event)
        self.app.event("app_mention")(self._on_event)
        self.app.command(re.compile(r"^/"))(self._on_command)
        self.app.action(re.compile(f"^{slack_events.ACTION_PREFIX}"))(self._on_action)
        self.socket: AsyncSocketModeHandler | None = None
        self.identity: tuple[str, str] | None = None  # (bot user id, team id)
        self._state = _State()
        self.ping_interval = PING_INTERVAL
        self._dispatch: Dispatch | None = None
        # Files downloaded at once, across events: a flood of shares holds this much at most.
        self._downloading = asyncio.Semaphore(DOWNLOADS_AT_ONCE)
        self._watchdog: asyncio.Task[None] | None = None

    # --- the ChatAdapter protocol -----------------------------------------------------

    async def start(self, dispatch: Dispatch) -> None:
        """Connect; a token Slack refuses stops Switchboard with what to fix, but Slack out of
        reach (no network at boot) does not: it is tried again in the background, and
        `switchboard status` says so meanwhile."""
        self._dispatch = dispatch
        try:
            await self._connect()
        except UNREACHABLE as exc:
            self._state.down(f"Slack could not be reached: {exc}")
            log.warning("slack: not reachable (%s); trying again in the background", exc)
            self._watchdog = asyncio.create_task(self._connect_later(), name="switchboard-slack")

    async def _connect(self) -> None:
        await self._whoami()
        if self.settings.slack_app_token is None:
            self._state.connected()  # events come over HTTP: up while the server is
            return
        self.socket = AsyncSocketModeHandler(
            self.app,
            self.settings.slack_app_token.get_secret_value(),
            web_client=AsyncWebClient(base_url=self.settings.slack_api_url),
            ping_interval=self.ping_interval,
        )
        await self.socket.connect_async()  # type: ignore[no-untyped-call]
        self._state.connected()
        self._watchdog = asyncio.create_task(self._watch(), name="switchboard-slack-watch")

    async def _connect_later(self) -> None:
        pause = self.ping_interval
        while True:
            await asyncio.sleep(pause)
            if self.socket is not None:
                await self.socket.close_async()  # type: ignore[no-untyped-call]
                self.socket = None
            try:
                await self._connect()
                log.info("slack: connected")
                return
            except UNREACHABLE as exc:
                self._state.down(f"Slack could not be reached: {exc}")
                pause = min(pause * 2, MAX_RECONNECT_PAUSE)

    async def send(self, out: OutgoingMessage) -> SentRef:
        try:
            return await self._send(out)
        except SlackApiError as exc:
            raise _mapped(exc) from exc
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            self._state.failed(str(exc))
            raise AdapterError(f"Slack could not be reached: {exc}") from exc

    async def stop(self) -> None:
        self._dispatch = None
        self._state.down("stopped")
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        if self.socket is not None:
            # Closes the socket: a restart must not leave it open (Slack allows 10 per app).
            await self.socket.close_async()  # type: ignore[no-untyped-call]
            self.socket = None

    # --- optional capabilities --------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        if self.settings.slack_signing_secret is None:
            return []
        return [web.post("/slack/events", self._http)]

    async def status(self, ref: ConversationRef, key: str, text: str) -> None:
        """One message per ``key``, edited in place as the status changes (at most about
        once a second: Slack's pace); a status lost to a blip is not retried."""
        mark = f"status:{ref.chat}:{ref.thread}:{key}"
        with contextlib.suppress(*PASSING):
            if not await self.redis.set(f"switchboard:slack:{mark}", 1, px=1000, nx=True):
                return  # updated less than a second ago
            if ts := await self.marks.get(mark):
                await self.client.chat_update(channel=ref.chat, ts=ts, text=text)
                return
            posted = await self.client.chat_postMessage(
                channel=ref.chat, thread_ts=ref.thread or None, text=text
            )
            await self.marks.put(mark, str(posted["ts"]), keep=KEEP_SECONDS)

    async def typing(self, ref: ConversationRef, in_reply_to: int) -> None:
        """A placeholder the reply replaces when it comes, so the person sees work begin."""
        mark = f"placeholder:{in_reply_to}"
        with contextlib.suppress(*PASSING):
            if not await self.marks.put(mark, "", keep=KEEP_SECONDS, replace=False):
                return  # a try before this one posted it
            posted = await self.client.chat_postMessage(
                channel=ref.chat, thread_ts=ref.thread or None, text=WRITING
            )
            await self.marks.put(mark, str(posted["ts"]), keep=KEEP_SECONDS)

    def state(self) -> ChannelState:
        return self._state.now("Socket Mode" if self.socket is not None else "events over HTTP")

    async def _watch(self) -> None:
        """Liveness of the Socket Mode connection. The SDK pings every ``ping_interval`` and
        reconnects a socket whose pongs stop (a socket that says "connected" but hears
        nothing); this watch keeps the state for `switchboard status` and, should the SDK's
        own monitor stop, opens a new connection itself (the old one closed first)."""
        assert self.socket is not None
        client = self.socket.client
        down_since: float | None = None
        while True:
            await asyncio.sleep(self.ping_interval)
            if await client.is_connected():
                if down_since is not None:
                    self._state.connected()
                down_since = None
                continue
            down_since = down_since or time.monotonic()
            self._state.down("the Socket Mode connection was lost; reconnecting")
            if time.monotonic() - down_since > 3 * self.ping_interval:
                with contextlib.suppress(Exception):
                    await client.connect_to_new_endpoint(force=True)

    # --- inbound ----------------------------------------------------------------------

    async def _http(self, request: web.Request) -> web.StreamResponse:
        response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(response)

    async def _on_event(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        self._state.received()
        bot_user, team = await self._whoami()
        if not await self._wanted(event, bot_user):
            return
        files = await self._download(slack_events.shared_files(event))
        incoming = slack_events.message(event, team, bot_user, files)
        name = await self._display_name(str(event.get("user") or ""))
        await self._store(replace(incoming, author=replace(incoming.author, display_name=name)))
        if incoming.ref.thread:
            await self._remember_thread(incoming.ref)

    async def _wanted(self, event: Mapping[str, Any], bot_user: str) -> bool:
        subtype = str(event.get("subtype") or "")
        if subtype in ("message_changed", "message_deleted"):
            log.info("slack: %s in %s ignored", subtype.replace("_", " "), event.get("channel"))
            return False
        if subtype not in slack_events.PEOPLE_SUBTYPES or slack_events.is_from_bot(event, bot_user):
            return self.settings.slack_allow_bots and event.get("user") not in (bot_user, None)
        if event.get("type") == "app_mention" or event.get("channel_type") == "im":
            return True
        if f"<@{bot_user}" in str(event.get("text") or ""):
            return True  # a mention, also coming as app_mention: stored once
        thread = event.get("thread_ts")
        return bool(thread) and await self._in_thread(str(event["channel"]), str(thread))

    async def _on_command(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        self._state.received()
        _, team = await self._whoami()
        await self._acked(ack, slack_events.command(body, team))

    async def _on_action(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        self._state.received()
        _, team = await self._whoami()
        incoming = slack_events.button(body, team)
        if incoming is None:
            await ack()
            return
        await self._acked(ack, incoming)

    async def _acked(self, ack: AsyncAck, incoming: IncomingMessage) -> None:
        """Store, then acknowledge, within Slack's 3 s whatever the database does."""
        storing = asyncio.ensure_future(self._store(incoming))
        done, _ = await asyncio.wait({storing}, timeout=ACK_WITHIN)
        if storing in done and storing.exception() is None:
            await ack()
            return
        # Still storing (left to finish: the answer comes if it does) or refused.
        storing.add_done_callback(_log_late)
        await ack(text=NOT_STORED)

    async def _store(self, incoming: IncomingMessage) -> None:
        if self._dispatch is None:
            raise ServiceUnavailable("slack", "Switchboard is stopping")
        await self._dispatch(incoming)

    async def _download(self, shared: Sequence[slack_events.SharedFile]) -> tuple[Attachment, ...]:
        """The files, fetched with the bot token before the ack (within DOWNLOAD_WITHIN);
        a file too large, or too slow to fetch, is kept by name and link only, and the
        persona says it cannot open it."""
        try:
            async with asyncio.timeout(DOWNLOAD_WITHIN), self._downloading:
                return tuple([await self._fetch(found) for found in shared[:MAX_FILES]])
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("slack: files not downloaded before the ack: %s", exc)
            return tuple(_unfetched(found) for found in shared[:MAX_FILES])

    async def _fetch(self, found: slack_events.SharedFile) -> Attachment:
        """One file, read in chunks up to MAX_FILE; the bot token goes only to Slack's own
        hosts (a link elsewhere is kept as a link)."""
        if found.size > MAX_FILE or not self._slack_host(found.url):
            return _unfetched(found)
        headers = {"Authorization": f"Bearer {self.client.token}"}
        data = bytearray()
        async with (
            aiohttp.ClientSession() as session,
            session.get(found.url, headers=headers) as response,
        ):
            response.raise_for_status()
            async for chunk in response.content.iter_chunked(64 * 1024):
                data += chunk
                if len(data) > MAX_FILE:
                    return _unfetched(found)
        return Attachment(found.name, found.content_type, data=bytes(data), url=found.url)

    def _slack_host(self, url: str) -> bool:
        host = (urlsplit(url).hostname or "").lower()
        api = (urlsplit(self.settings.slack_api_url).hostname or "").lower()
        return host == api or host == "slack.com" or host.endswith(".slack.com")

    async def _whoami(self) -> tuple[str, str]:
        if self.identity is None:
            try:
                found = await self.client.auth_test()
            except SlackApiError as exc:
                if exc.response.status_code >= 500 or exc.response.status_code == 429:
                    raise SlackDown(f"HTTP {exc.response.status_code}") from exc
                raise ServiceError(
                    f"Slack refused the bot token ({exc.response.get('error')}): check "
                    "SLACK_BOT_TOKEN (xoxb-...) and that the app is installed."
                ) from exc
            self.identity = (str(found["user_id"]), str(found["team_id"]))
        return self.identity

    async def _display_name(self, user: str) -> str:
        """A person's display name (users.info, kept a day); "" when Slack cannot say at
        once, which never holds a message up."""
        key = f"switchboard:slack:name:{user}"
        with contextlib.suppress(RedisError):
            if (known := await self.redis.get(key)) is not None:
                return str(known.decode())
        try:
            async with asyncio.timeout(NAME_WITHIN):
                found = await self.client.users_info(user=user)
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.info("slack: no display name for %s: %s", user, exc)
            return ""
        profile: dict[str, Any] = (found.get("user") or {}).get("profile") or {}
        name = str(profile.get("display_name") or profile.get("real_name") or "")
        with contextlib.suppress(RedisError):
            await self.redis.set(key, name, ex=24 * 3600)
        return name

    async def _remember_thread(self, ref: ConversationRef) -> None:
        await self.marks.put(f"thread:{ref.chat}:{ref.thread}", "", keep=KEEP_SECONDS)

    async def _in_thread(self, chat: str, thread: str) -> bool:
        return await self.marks.get(f"thread:{chat}:{thread}") is not None

    # --- outbound ---------------------------------------------------------------------

    async def _send(self, out: OutgoingMessage) -> SentRef:
        parts = render(out.text, "mrkdwn", TEXT_LIMIT) if out.text.strip() else []
        sent = await self._sent_parts(out.idempotency_key)
        if out.buttons and (not parts or len(parts[-1]) > slack_events.SECTION_LIMIT):
            parts.append("")  # the buttons, as a message of their own
        for index, part in enumerate(parts):
            if index < len(sent):
                continue
            ts = await self._post_part(out, part, first=index == 0, last=index == len(parts) - 1)
            sent.append(ts)
            await self._note_part(out.idempotency_key, ts)
        for index, attachment in enumerate(out.attachments):
            await self._upload(out, index, attachment)
        if out.ref.thread:
            await self._remember_thread(out.ref)
        self._state.sent()
        return SentRef(sent[0] if sent else "")

    async def _post_part(self, out: OutgoingMessage, text: str, *, first: bool, last: bool) -> str:
        ref = out.ref
        placeholder = await self._placeholder(out) if first else None
        blocks = slack_events.blocks(text, out.buttons) if last and out.buttons else None
        text = text or " · ".join(button.command for button in out.buttons)
        await self.pacer.wait_turn(ref.chat)
        try:
            if placeholder:
                await self.client.chat_update(
                    channel=ref.chat, ts=placeholder, text=text, blocks=blocks
                )
                return placeholder
            posted = await self.client.chat_postMessage(
                channel=ref.chat, thread_ts=ref.thread or None, text=text, blocks=blocks
            )
        except SlackApiError as exc:
            if ref.handle and exc.response.get("error") in NOT_POSTABLE:
                await AsyncWebhookClient(ref.handle).send(text=text, response_type="in_channel")
                return f"response_url:{out.idempotency_key}"
            raise
        return str(posted["ts"])

    async def _placeholder(self, out: OutgoingMessage) -> str | None:
        if out.in_reply_to is None:
            return None
        return await self.marks.take(f"placeholder:{out.in_reply_to}") or None

    async def _upload(self, out: OutgoingMessage, index: int, attachment: Attachment) -> None:
        key = f"file:{out.idempotency_key}:{index}"
        if await self.marks.get(key) is not None:
            return
        data = await self.content(attachment)
        await self.pacer.wait_turn(out.ref.chat)
        # Slack's three steps by hand: the SDK's files_upload_v2 hands aiohttp the whole file
        # as one bytes body, which aiohttp warns may block the event loop; a stream does not.
        slot = await self.client.files_getUploadURLExternal(
            filename=attachment.filename, length=len(data)
        )
        async with (
            aiohttp.ClientSession() as session,
            session.post(str(slot["upload_url"]), data=io.BytesIO(data)) as response,
        ):
            if response.status != 200:
                raise AdapterError(
                    f"Slack refused the file upload (HTTP {response.status})",
                    permanent=400 <= response.status < 500 and response.status != 429,
                )
        await self.client.files_completeUploadExternal(
            files=[{"id": str(slot["file_id"]), "title": attachment.filename}],
            channel_id=out.ref.chat,
            thread_ts=out.ref.thread or None,
        )
        await self.marks.put(key, str(slot["file_id"]), keep=KEEP_SECONDS)

    async def _sent_parts(self, key: str) -> list[str]:
        found = await self.marks.get(f"parts:{key}")
        return found.split("\n") if found else []

    async def _note_part(self, key: str, ts: str) -> None:
        await self.marks.append(f"parts:{key}", ts, keep=KEEP_SECONDS)


class _State:
    """What `switchboard status` tells of the connection."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.up = False
        self.last_event: float | None = None
        self.last_send: float | None = None
        self.last_error: str = ""

    def connected(self) -> None:
        self.since, self.up = time.time(), True

    def down(self, why: str) -> None:
        if self.up:
            self.since, self.up = time.time(), False
        self.last_error = why

    def received(self) -> None:
        self.last_event = time.time()

    def sent(self) -> None:
        self.last_send = time.time()

    def failed(self, error: str) -> None:
        self.last_error = error

    def now(self, how: str) -> ChannelState:
        return ChannelState(
            connected=self.up,
            since=self.since,
            last_event=self.last_event,
            last_send=self.last_send,
            last_error=self.last_error,
            detail=how,
        )


def _mapped(exc: SlackApiError) -> AdapterError:
    """Slack's answer as the outbox understands it: wait and retry, retry, or give up."""
    error = str(exc.response.get("error") or "")
    if exc.response.status_code == 429 or error == "ratelimited":
        wait = float(exc.response.headers.get("Retry-After", 1))
        return AdapterError(f"Slack asks to wait {wait:.0f} s (rate limited)", retry_after=wait)
    return AdapterError(f"Slack refused the message: {error}", permanent=error in PERMANENT)


def _unfetched(found: slack_events.SharedFile) -> Attachment:
    return Attachment(found.name, found.content_type, size=found.size, url=found.url)


def _log_late(storing: asyncio.Future[None]) -> None:
    if not storing.cancelled() and storing.exception() is not None:
        log.warning("slack: a command was not stored: %s", storing.exception())
