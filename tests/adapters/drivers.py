"""One driver per channel for the contract suite (``test_contract.py``).

A driver plays one person on its channel the way that channel's people reach Switchboard —
the web chat over HTTP, the terminal as `switchboard chat` does, Slack through the fake
Slack's Socket Mode, the memory channel by calling it — and reads what that person sees.
Switchboard runs as `switchboard up` runs it: every enabled channel started, their routes on
one HTTP server, a worker in the same process.

Every driver has the few methods of ``Driver``. What a platform does that others cannot by
their nature is an optional protocol (``RateLimited``, ``Edits``, ``HearsItself``), so a
scenario that needs it is skipped for a driver without it, with the reason.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

import aiohttp
from yarl import URL

from adapters.http import HttpServer
from adapters.local import LocalStream
from adapters.memory import MemoryChannel
from adapters.slack import WRITING
from adapters.terminal import TerminalAdapter
from adapters.web import COOKIE, WebAdapter
from bot import files
from bot.app import Runtime, in_process_worker
from bot.channels import Capabilities, Channels
from bot.conversation import receive
from bot.errors import AdapterError
from bot.messages import Attachment, Button, ConversationRef, OutgoingMessage, SentRef
from bot.storage.models import ChannelAccount, User
from tests.adapters.test_slack import enable_slack
from tests.fakes import slack_payloads as slack
from tests.fakes.slack_server import FakeSlack

Json = dict[str, Any]


@dataclass(frozen=True)
class Shown:
    """One of the bot's messages as the person sees it; ``at`` is where it is on its
    platform (Slack: its ts), for a click on its buttons."""

    text: str
    files: tuple[tuple[str, bytes], ...] = ()
    buttons: tuple[Button, ...] = ()
    at: str = ""


class Driver(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def ref(self) -> ConversationRef:
        """The person's conversation with the bot."""

    @property
    def account(self) -> str:
        """The person as a workflow's ``approvers:`` names them."""

    @property
    def cannot(self) -> Mapping[str, str]:
        """Why the channel cannot have what an optional protocol below plays, by name:
        "rate limits" (RateLimited), "edits" (Edits), "echoes" (HearsItself)."""

    def running(self) -> contextlib.AbstractAsyncContextManager[None]: ...

    async def say(self, text: str, files: Mapping[str, bytes] = ...) -> None:
        """The person writes ``text`` with ``files``; returns once it is stored."""

    async def command(self, name: str, args: str = "") -> None:
        """The person runs ``/name args`` the way the channel has commands run."""

    async def seen(self) -> list[Shown]:
        """The bot's messages in the conversation, oldest first."""

    async def click(self, message: Shown, button: Button) -> None:
        """The person presses ``button`` under ``message`` (or types its command)."""


@runtime_checkable
class RateLimited(Protocol):
    def refuse(self, times: int) -> None:
        """The platform refuses the next ``times`` sends with a 429 and a Retry-After."""


@runtime_checkable
class Edits(Protocol):
    async def edit_and_delete(self) -> None:
        """The person edits the last message they wrote, then deletes it."""


@runtime_checkable
class HearsItself(Protocol):
    async def echo(self, message: Shown) -> None:
        """The platform tells the bot of a message the bot itself sent, as Slack does."""


@contextlib.asynccontextmanager
async def switchboard_up(runtime: Runtime) -> AsyncIterator[str]:
    """The runtime's channels listening, their routes served, a worker running; yields the
    server's URL."""
    channels = runtime.core.channels
    server = HttpServer("127.0.0.1", 0)
    server.add(channels.routes())
    await channels.start(functools.partial(receive, runtime.core))
    try:
        await server.start()
        async with in_process_worker(runtime):
            yield server.url
    finally:
        await channels.stop()  # open event streams end first
        await server.stop()


def _typed(message: Shown, button: Button) -> str:
    """The command a person reads under a message with no buttons, and types."""
    assert button.command in message.text, f"{message.text!r} does not say {button.command}"
    return button.command


def _pressed(message: Shown, button: Button) -> str:
    assert button in message.buttons, f"no {button} under {message.text!r}"
    return button.command


async def _stored(runtime: Runtime, attachment: Attachment) -> tuple[str, bytes]:
    return attachment.filename, await files.content(runtime.core.engine, attachment)


def _attachments(given: Mapping[str, bytes]) -> tuple[Attachment, ...]:
    return tuple(Attachment(name, files.kind_of(name), data=data) for name, data in given.items())


# What the two local channels (a Redis stream per chat) cannot have.
LOCAL_CANNOT: Mapping[str, str] = {
    "rate limits": "a local stream takes every reply: nothing rate-limits it",
    "edits": "a message sent here cannot be edited or deleted",
    "echoes": "replies reach the person through the stream, never back in as messages",
}


# --- the web chat: a browser over HTTP ---------------------------------------------------


class WebDriver:
    name = "web"
    cannot = LOCAL_CANNOT

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        adapter = runtime.core.channels["web"]
        assert isinstance(adapter, WebAdapter)
        adapter.keepalive = 0.2  # an idle event stream answers soon: seen() reads to its end
        self.capabilities = adapter.capabilities
        self.url = ""
        self.client: aiohttp.ClientSession | None = None

    @property
    def ref(self) -> ConversationRef:
        return ConversationRef(channel="web", chat=self._chat)

    @property
    def account(self) -> str:
        return f"web:web:{self._chat}"

    @property
    def _chat(self) -> str:
        assert self.client is not None
        return self.client.cookie_jar.filter_cookies(URL(self.url))[COOKIE].value

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with switchboard_up(self.runtime) as url:
            self.url = url
            jar = aiohttp.CookieJar(unsafe=True)
            async with aiohttp.ClientSession(cookie_jar=jar, headers={"Origin": url}) as client:
                self.client = client
                async with client.get(f"{url}/") as page:  # the page gives the chat cookie
                    assert page.status == 200
                yield

    async def say(self, text: str, files: Mapping[str, bytes] = {}) -> None:
        form = aiohttp.FormData(default_to_multipart=True)
        form.add_field("text", text)
        for attachment in _attachments(files):
            form.add_field(
                "file",
                io.BytesIO(attachment.data),
                filename=attachment.filename,
                content_type=attachment.content_type,
            )
        async with self._client.post(f"{self.url}/api/messages", data=form) as posted:
            assert posted.status == 200, await posted.text()

    async def command(self, name: str, args: str = "") -> None:
        await self.say(f"/{name} {args}".strip())

    async def seen(self) -> list[Shown]:
        """The replies an event stream opened at the chat's start shows, read up to the
        keep-alive that follows what is there now. Events are parsed by hand: a reply's
        line may be longer than aiohttp reads as one line."""
        found: list[Shown] = []
        async with self._client.get(f"{self.url}/api/events", params={"after": "0-0"}) as events:
            buffer = bytearray()
            async for chunk in events.content.iter_any():
                buffer += chunk
                while (end := buffer.find(b"\n\n")) >= 0:
                    block = buffer[:end].decode()
                    del buffer[: end + 2]
                    if block.startswith(":"):
                        return found
                    fields = dict(line.split(": ", 1) for line in block.split("\n"))
                    if fields.get("event") == "reply":
                        found.append(await self._shown(json.loads(fields["data"])))
        raise AssertionError("the event stream ended before its keep-alive")

    async def _shown(self, reply: Json) -> Shown:
        downloads = []
        for link in reply["files"]:
            async with self._client.get(f"{self.url}{link['url']}") as download:
                assert download.status == 200
                downloads.append((str(link["name"]), await download.read()))
        buttons = tuple(Button(b["label"], b["command"]) for b in reply.get("buttons", ()))
        return Shown(str(reply["text"]), tuple(downloads), buttons)

    async def click(self, message: Shown, button: Button) -> None:
        await self.say(_pressed(message, button))  # the page sends the button's command

    @property
    def _client(self) -> aiohttp.ClientSession:
        assert self.client is not None
        return self.client


# --- the terminal: `switchboard chat` ------------------------------------------------------


class TerminalDriver:
    name = "terminal"
    account = "terminal:alice"
    cannot = LOCAL_CANNOT

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.capabilities = runtime.core.channels["terminal"].capabilities
        self.client = TerminalAdapter(runtime.redis, user="alice")
        self.ref = self.client.ref

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with switchboard_up(self.runtime):
            yield

    async def say(self, text: str, files: Mapping[str, bytes] = {}) -> None:
        await receive(self.runtime.core, self.client.incoming(text, _attachments(files)))

    async def command(self, name: str, args: str = "") -> None:
        await self.say(f"/{name} {args}".strip())

    async def seen(self) -> list[Shown]:
        """What `switchboard chat` prints, and the files it saves, from the chat's stream."""
        entries = await LocalStream(self.runtime.redis, "terminal").history(self.ref.chat)
        return [await self._shown(entry.out) for entry in entries if entry.out is not None]

    async def _shown(self, out: OutgoingMessage) -> Shown:
        saved = [await _stored(self.runtime, attachment) for attachment in out.attachments]
        return Shown(out.text, tuple(saved))

    async def click(self, message: Shown, button: Button) -> None:
        await self.say(_typed(message, button))


# --- the memory channel ----------------------------------------------------------------------


class MemoryDriver:
    name = "memory"
    account = "memory:person"
    ref = ConversationRef(channel="memory", chat="person")
    RETRY_AFTER = 0.2
    cannot: ClassVar[Mapping[str, str]] = {
        "edits": "the channel seam carries no edits: a platform's adapter drops them",
        "echoes": "the channel hands on only what a test says",
    }

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.channel = MemoryChannel(
            handler=self._decide, content=functools.partial(files.content, runtime.core.engine)
        )
        self.capabilities = self.channel.capabilities
        self.refusals = 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        core = self.runtime.core
        core.channels = Channels([*core.channels.values(), self.channel])
        await self._let_in()
        async with switchboard_up(self.runtime):
            yield

    async def _let_in(self) -> None:
        """A channel no setting names pairs strangers: the person is one the owner let in."""
        async with self.runtime.core.sessions.begin() as session:
            person = User(display_name="person", approved_at=datetime.now(UTC))
            session.add(person)
            await session.flush()
            session.add(ChannelAccount(channel="memory", external_id="person", user_id=person.id))

    def _decide(self, out: OutgoingMessage) -> SentRef | None:
        if self.refusals > 0:
            self.refusals -= 1
            raise AdapterError("too many messages", retry_after=self.RETRY_AFTER)
        return None

    def refuse(self, times: int) -> None:
        self.refusals += times

    async def say(self, text: str, files: Mapping[str, bytes] = {}) -> None:
        await self.channel.say(text, chat=self.ref.chat, attachments=_attachments(files))

    async def command(self, name: str, args: str = "") -> None:
        await self.say(f"/{name} {args}".strip())

    async def seen(self) -> list[Shown]:
        return [
            Shown(out.text, tuple((a.filename, a.data) for a in out.attachments), out.buttons)
            for out in self.channel.sent
            if out.ref.chat == self.ref.chat
        ]

    async def click(self, message: Shown, button: Button) -> None:
        await self.say(_pressed(message, button))


# --- Slack, through the fake Slack -----------------------------------------------------------


class SlackDriver:
    name = "slack"
    account = f"slack:{slack.PERSON}"
    ref = ConversationRef(channel="slack", workspace=slack.TEAM_ID, chat=slack.DM_CHANNEL)
    cannot: ClassVar[Mapping[str, str]] = {}

    def __init__(self, runtime: Runtime, fake: FakeSlack) -> None:
        self.runtime = runtime
        self.fake = fake
        enable_slack(runtime, fake)
        self.capabilities = runtime.core.channels["slack"].capabilities
        self.said: Json = {}  # the person's last message event

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with switchboard_up(self.runtime):
            yield

    async def say(self, text: str, files: Mapping[str, bytes] = {}) -> None:
        shared = [self._shared(name, data) for name, data in files.items()]
        self.said = slack.file_share(shared, text) if shared else slack.dm(text)
        await self._acked(await self.fake.socket.send_event(self.said))

    def _shared(self, name: str, data: bytes) -> Json:
        return self.fake.share_file(data, name, mimetype=files.kind_of(name))

    async def command(self, name: str, args: str = "") -> None:
        """A real slash command, typed in the DM."""
        envelope = await self.fake.socket.send_command(
            f"/{name}", args, channel_id=slack.DM_CHANNEL, channel_name="directmessage"
        )
        await self._acked(envelope)

    async def seen(self) -> list[Shown]:
        """The bot's messages in the DM (a placeholder the answer will replace left out)."""
        return [
            self._shown(m)
            for m in self.fake.messages(slack.DM_CHANNEL)
            if m.get("bot_id") and m["text"] != WRITING and not m.get("thread_ts")
        ]

    def _shown(self, message: Json) -> Shown:
        uploads = [self.fake.uploads[str(f["id"])] for f in message.get("files") or ()]
        shared = tuple((u.filename, u.data or b"") for u in uploads)
        buttons = tuple(
            Button(str(e["text"]["text"]), str(e["value"]))
            for block in message.get("blocks") or ()
            if block["type"] == "actions"
            for e in block["elements"]
        )
        return Shown(str(message["text"]), shared, buttons, str(message["ts"]))

    async def click(self, message: Shown, button: Button) -> None:
        """A block_actions click on the button, from the message it is under."""
        _pressed(message, button)
        posted = next(m for m in self.fake.messages(slack.DM_CHANNEL) if m["ts"] == message.at)
        (element,) = [
            e
            for block in posted["blocks"]
            if block["type"] == "actions"
            for e in block["elements"]
            if e["value"] == button.command
        ]
        envelope = await self.fake.socket.send_action(
            element["action_id"],
            element["value"],
            message_ts=message.at,
            channel_id=slack.DM_CHANNEL,
            channel_name="directmessage",
        )
        await self._acked(envelope)

    def refuse(self, times: int) -> None:
        self.fake.rate_limit("chat.postMessage", times=times, retry_after=1)

    async def edit_and_delete(self) -> None:
        ts, text = str(self.said["ts"]), str(self.said["text"])
        await self._acked(
            await self.fake.socket.send_event(
                slack.message_changed(ts=ts, text=f"{text} (edited)", previous_text=text)
            )
        )
        await self._acked(
            await self.fake.socket.send_event(slack.message_deleted(ts=ts, previous_text=text))
        )

    async def echo(self, message: Shown) -> None:
        await self._acked(await self.fake.socket.send_event(slack.own_message(message.text)))

    async def _acked(self, envelope: str) -> None:
        """Slack is acknowledged once the message is stored: then it has arrived."""
        ack = await self.fake.socket.wait_for_ack(envelope, timeout=10)
        assert not ack.payload, f"Slack was told: {ack.payload}"
