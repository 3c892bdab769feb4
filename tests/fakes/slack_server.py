"""A fake Slack on 127.0.0.1 that the real slack_sdk and slack_bolt reach over HTTP and WebSocket.

Point the SDK at it with ``AsyncWebClient(token=BOT_TOKEN, base_url=fake.api_url)``.

- **Web API** (``/api/<method>``, query, form or JSON bodies, Bearer token): ``auth.test``,
  ``chat.postMessage``/``update``/``delete``/``postEphemeral``, ``users.info``,
  ``conversations.info``/``open``, ``files.getUploadURLExternal`` + the upload URL +
  ``files.completeUploadExternal``, ``apps.connections.open`` (app-level token only).
  Every call lands in ``calls``; what a channel would show is ``messages(channel)``.
- **Slack's refusals**: ``msg_too_long`` above 40,000 characters, ``no_text``,
  ``invalid_blocks`` (over 50 blocks, a section over 3,000), ``channel_not_found`` for
  ``missing_channels``, ``not_in_channel`` for ``outside_channels``; scripted with
  ``rate_limit()`` (429 + ``Retry-After``), ``server_error()`` (5xx) and ``fail()``.
  An outage is ``stop()``; ``start()`` comes back on the same port.
- **Files people share**: ``share_file(bytes, name)`` gives the ``files`` entry of a
  ``file_share`` event; its ``url_private`` answers only to the bot token (otherwise an HTML
  sign-in page with status 200, as Slack does). ``downloads`` records every attempt.
- **response_url**: ``response_url()`` mints one; posts land in ``responses``.
- **Socket Mode** (``fake.socket``): a one-use ticket from ``apps.connections.open`` opens
  ``/link/``, which says hello; ``send_event``/``send_command``/``send_action``/``push`` deliver
  envelopes to the newest live connection (waiting for one while there is none),
  ``wait_for_ack`` returns the client's ack, ``redeliver`` is Slack's retry (same event_id),
  ``disconnect()`` asks the client to reconnect, ``go_deaf()`` keeps a socket open but delivers
  nothing and answers no ping, ``open_connections`` shows what the client left open; past
  Slack's cap of 10 connections a new one is told ``too_many_websockets``.
- **Waiting**: ``await fake.wait_for(predicate)`` wakes on every record, with a deadline.
- **From another process** (benchmarks): ``GET /_records?calls=N&acks=M`` gives the Web API
  calls from the N-th on and the Socket Mode acks from the M-th on (each with ``at``, the
  fake's ``time.monotonic()``: the same clock in every process of the machine);
  ``POST /_socket/events`` with ``{"events": [...]}`` delivers each inner event as
  ``send_event`` does and answers their envelope ids.

Run it by hand: ``python -m tests.fakes.slack_server --port 8098``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import BodyPartReader, WSCloseCode, WSMsgType, web

from tests.fakes.slack_payloads import (
    APP_ID,
    APP_TOKEN,
    BOT_ID,
    BOT_TOKEN,
    BOT_USER_ID,
    PERSON,
    TEAM_DOMAIN,
    TEAM_ID,
    Json,
    block_actions,
    disconnect,
    envelope,
    event_callback,
    hello,
    new_ts,
    shared_file,
    slash_command,
)

_T = TypeVar("_T")

TEXT_LIMIT = 40_000
SECTION_TEXT_LIMIT = 3_000
BLOCKS_LIMIT = 50
MAX_CONNECTIONS = 10  # Slack's cap on one app's Socket Mode connections
SCOPES = (
    "app_mentions:read,channels:history,chat:write,files:read,files:write,im:history,users:read"
)
_SIGN_IN_PAGE = "<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in</body></html>"
_OUTAGE_PAGE = "<html><body><h1>Service Unavailable</h1></body></html>"


MAX_UPLOAD = 1024**3  # Slack takes files up to 1 GB


class SlackError(Exception):
    """A Web API refusal: answered as ``{"ok": false, "error": error}``."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


@dataclass
class Call:
    """One Web API request as the fake answered it."""

    method: str
    params: Json
    at: float  # time.monotonic()
    token: str | None
    status: int = 200
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None

    @property
    def channel(self) -> str | None:
        value = self.params.get("channel") or self.params.get("channel_id")
        return str(value) if value is not None else None


@dataclass
class Fault:
    """The next ``times`` calls of ``method`` ("*" for any) fail this way."""

    method: str
    times: int
    status: int
    error: str
    channel: str | None = None
    retry_after: int | None = None

    def matches(self, call: Call) -> bool:
        if self.times <= 0 or self.method not in ("*", call.method):
            return False
        return self.channel is None or self.channel == call.channel


@dataclass
class Upload:
    """A file the bot uploads: declared by getUploadURLExternal, completed with its bytes."""

    file_id: str
    filename: str
    length: int
    data: bytes | None = None
    title: str | None = None
    channel_id: str | None = None
    thread_ts: str | None = None
    initial_comment: str | None = None
    completed: bool = False


@dataclass
class Download:
    file_id: str
    authorized: bool
    at: float


@dataclass
class ResponsePost:
    """A post to a ``response_url`` (``text``, ``response_type``, ``replace_original``…)."""

    url: str
    body: Json
    at: float


@dataclass
class Connection:
    number: int
    ws: web.WebSocketResponse
    opened_at: float
    closed_at: float | None = None
    deaf: bool = False
    refreshing: bool = False  # told to reconnect: new envelopes wait for its successor
    broken: bool = False  # a send failed before the close was noticed
    pings: int = 0

    @property
    def open(self) -> bool:
        return self.closed_at is None and not self.ws.closed

    @property
    def live(self) -> bool:
        return self.open and not (self.deaf or self.refreshing or self.broken)


@dataclass
class Delivery:
    envelope_id: str
    frame: Json
    connection: int
    sent_at: float


@dataclass
class Ack:
    envelope_id: str
    payload: Json | None
    connection: int
    at: float
    sent_at: float | None = None

    @property
    def latency(self) -> float | None:
        return None if self.sent_at is None else self.at - self.sent_at


class _Changes:
    """Wakes whoever waits on the fake each time it records something."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], _T | None], timeout: float, what: str) -> _T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (result := predicate()):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"fake Slack: waited {timeout} s for {what or predicate}")
            # The cap also notices conditions that change outside the fake.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), min(remaining, 0.05))
        return result


class FakeSlack:
    """Slack for one workspace and one bot; every id and token defaults to ``slack_payloads``'."""

    def __init__(
        self,
        *,
        port: int = 0,
        bot_token: str = BOT_TOKEN,
        app_token: str = APP_TOKEN,
        team_id: str = TEAM_ID,
        bot_user_id: str = BOT_USER_ID,
        bot_id: str = BOT_ID,
        app_id: str = APP_ID,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.port = port
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self._runner: web.AppRunner | None = None
        self._changes = _Changes()
        self._numbers = itertools.count(1)
        self.socket = SocketMode(self, self._changes, max_connections)
        self.reset()

    def reset(self) -> None:
        """Forget records, scripts and workspace set-up; open sockets stay open."""
        self.calls: list[Call] = []
        self.uploads: dict[str, Upload] = {}  # by file id, completed or not
        self.ephemeral: list[Json] = []
        self.downloads: list[Download] = []
        self.responses: list[ResponsePost] = []
        self.users: dict[str, Json] = {}
        self.channels: dict[str, Json] = {}
        self.missing_channels: set[str] = set()
        self.outside_channels: set[str] = set()
        self._faults: list[Fault] = []
        self._messages: dict[str, list[Json]] = {}
        self._shared: dict[str, tuple[str, str, bytes]] = {}  # file id: name, mimetype, bytes
        self.socket.reset()
        self.add_user(self.bot_user_id, "switchboard", is_bot=True)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """The ``base_url`` for slack_sdk (its default is ``https://slack.com/api/``)."""
        return f"{self.url}/api/"

    async def start(self) -> None:
        """Listen (again): a restart keeps the port, so clients see an outage end."""
        app = web.Application(client_max_size=MAX_UPLOAD)
        app.router.add_route("*", "/api/{method}", self._web_api)
        app.router.add_post("/upload/v1/{file_id}", self._upload)
        app.router.add_get("/files-pri/{team_file}/{name}", self._download)
        app.router.add_get("/files-pri/{team_file}/download/{name}", self._download)
        app.router.add_post("/commands/{rest:.*}", self._response_url)
        app.router.add_get("/link/", self.socket.serve)
        app.router.add_get("/_records", self._records)
        app.router.add_post("/_socket/events", self._push_events)
        app.on_shutdown.append(self.socket.close_all)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Close every socket and stop listening: clients now meet "connection refused"."""
        self.socket.cancel_timers()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._notify()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- workspace set-up and scripting ------------------------------------------------------

    def add_user(
        self,
        user_id: str,
        display_name: str,
        *,
        real_name: str | None = None,
        is_bot: bool = False,
        team_id: str | None = None,
    ) -> Json:
        real = real_name or display_name
        profile = {
            "display_name": display_name,
            "display_name_normalized": display_name,
            "real_name": real,
            "real_name_normalized": real,
        }
        user = {
            "id": user_id,
            "team_id": team_id or self.team_id,
            "name": display_name.lower().replace(" ", "."),
            "real_name": real,
            "deleted": False,
            "is_bot": is_bot,
            "is_app_user": False,
            "tz": "UTC",
            "profile": profile,
        }
        self.users[user_id] = user
        return user

    def add_channel(
        self, channel_id: str, name: str, *, is_private: bool = False, is_member: bool = True
    ) -> Json:
        info = {**_channel_info(channel_id), "name": name, "is_private": is_private}
        info["is_member"] = is_member
        self.channels[channel_id] = info
        if not is_member:
            self.outside_channels.add(channel_id)
        return info

    def rate_limit(
        self, method: str, *, times: int = 1, retry_after: int = 1, channel: str | None = None
    ) -> None:
        """The next ``times`` calls (in ``channel`` only, if given) answer 429 ``ratelimited``."""
        self._faults.append(Fault(method, times, 429, "ratelimited", channel, retry_after))

    def server_error(self, method: str = "*", *, times: int = 1, status: int = 503) -> None:
        """The next ``times`` calls answer a 5xx with an HTML page, as a failing edge does."""
        self._faults.append(Fault(method, times, status, f"http_{status}"))

    def fail(self, method: str, error: str, *, times: int = 1, channel: str | None = None) -> None:
        """The next ``times`` calls answer ``{"ok": false, "error": error}``."""
        self._faults.append(Fault(method, times, 200, error, channel))

    def share_file(
        self,
        data: bytes,
        name: str,
        *,
        mimetype: str = "application/octet-stream",
        user: str = PERSON,
    ) -> Json:
        """A file a person shared: the entry for ``slack_payloads.file_share([...])``."""
        file_id = f"F0SHARED{next(self._numbers):04d}"
        self._shared[file_id] = (name, mimetype, data)
        url = f"{self.url}/files-pri/{self.team_id}-{file_id}/{name}"
        return shared_file(
            file_id, name=name, url_private=url, size=len(data), mimetype=mimetype, user=user
        )

    def response_url(self) -> str:
        token = uuid.uuid4().hex[:24]
        return f"{self.url}/commands/{self.team_id}/{next(self._numbers)}/{token}"

    # -- records ---------------------------------------------------------------------------

    @property
    def files(self) -> list[Upload]:
        """Files the bot uploaded and completed, in order."""
        return [u for u in self.uploads.values() if u.completed]

    def calls_to(self, method: str, *, channel: str | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.method == method and (channel is None or c.channel == channel)
        ]

    def messages(self, channel: str) -> list[Json]:
        """What the channel shows now: posts in order, edits applied, deletions gone."""
        return list(self._messages.get(channel, []))

    def thread(self, channel: str, thread_ts: str) -> list[Json]:
        """The replies under ``thread_ts`` (not the parent)."""
        return [m for m in self.messages(channel) if m.get("thread_ts") == thread_ts]

    async def wait_for(
        self, predicate: Callable[[], _T | None], timeout: float = 5.0, *, what: str = ""
    ) -> _T:
        """Return ``predicate()`` as soon as it is truthy; ``TimeoutError`` at the deadline."""
        return await self._changes.wait_for(predicate, timeout, what)

    def _notify(self) -> None:
        self._changes.notify()

    # -- Web API ---------------------------------------------------------------------------

    async def _web_api(self, request: web.Request) -> web.Response:
        params = await _params(request)
        token = _bearer(request) or params.pop("token", None)
        call = Call(request.match_info["method"], params, time.monotonic(), token)
        response = self._answer(call)
        call.status = response.status
        self.calls.append(call)
        self._notify()
        return response

    def _answer(self, call: Call) -> web.Response:
        try:
            self._authorize(call)
            fault = next((f for f in self._faults if f.matches(call)), None)
            if fault is not None:
                return self._faulted(call, fault)
            handler = _METHODS.get(call.method)
            if handler is None:
                raise SlackError("unknown_method")
            return _reply({"ok": True, **handler(self, call.params)})
        except SlackError as refusal:
            call.error = refusal.error
            return _reply({"ok": False, "error": refusal.error})

    def _authorize(self, call: Call) -> None:
        if not call.token:
            raise SlackError("not_authed")
        wanted = self.app_token if call.method == "apps.connections.open" else self.bot_token
        if call.token == wanted:
            return
        known = call.token in (self.bot_token, self.app_token)
        raise SlackError("not_allowed_token_type" if known else "invalid_auth")

    def _faulted(self, call: Call, fault: Fault) -> web.Response:
        fault.times -= 1
        call.error = fault.error
        if fault.status >= 500:
            return web.Response(status=fault.status, text=_OUTAGE_PAGE, content_type="text/html")
        response = _reply({"ok": False, "error": fault.error}, status=fault.status)
        if fault.retry_after is not None:
            response.headers["Retry-After"] = str(fault.retry_after)
        return response

    def _channel(self, params: Json, key: str = "channel") -> str:
        """The target channel, refused the way Slack refuses it; a user id means their DM."""
        channel = str(params.get(key) or "")
        if not channel or channel in self.missing_channels:
            raise SlackError("channel_not_found")
        if channel in self.outside_channels:
            raise SlackError("not_in_channel")
        return _dm_of(channel) if channel.startswith(("U", "W")) else channel

    def _find(self, channel: str, ts: str) -> Json:
        found = next((m for m in self._messages.get(channel, []) if m["ts"] == ts), None)
        if found is None:
            raise SlackError("message_not_found")
        return found

    def _bot_message(self, params: Json, ts: str | None = None) -> Json:
        text, blocks = _content(params)
        return self._posted(text, blocks, _opt(params.get("thread_ts")), ts)

    def _posted(
        self, text: str, blocks: list[Json], thread_ts: str | None, ts: str | None = None
    ) -> Json:
        posted: Json = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "text": text,
            "ts": ts or new_ts(),
            "team": self.team_id,
        }
        if blocks:
            posted["blocks"] = blocks
        if thread_ts:
            posted["thread_ts"] = thread_ts
        return posted

    def auth_test(self, params: Json) -> Json:
        return {
            "url": f"https://{TEAM_DOMAIN}.slack.com/",
            "team": "Fake Team",
            "user": "switchboard",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def chat_post_message(self, params: Json) -> Json:
        channel = self._channel(params)
        posted = self._bot_message(params)
        self._messages.setdefault(channel, []).append(posted)
        return {"channel": channel, "ts": posted["ts"], "message": posted}

    def chat_update(self, params: Json) -> Json:
        channel = self._channel(params)
        old = self._find(channel, str(params.get("ts")))
        new = self._bot_message({**params, "thread_ts": old.get("thread_ts")}, ts=old["ts"])
        new["edited"] = {"user": self.bot_user_id, "ts": new_ts()}
        old.clear()
        old.update(new)
        return {"channel": channel, "ts": new["ts"], "text": new["text"], "message": new}

    def chat_delete(self, params: Json) -> Json:
        channel = self._channel(params)
        self._messages[channel].remove(self._find(channel, str(params.get("ts"))))
        return {"channel": channel, "ts": params["ts"]}

    def chat_post_ephemeral(self, params: Json) -> Json:
        channel = self._channel(params)
        if not params.get("user"):
            raise SlackError("user_not_found")
        posted = {**self._bot_message(params), "channel": channel, "to": params["user"]}
        self.ephemeral.append(posted)
        return {"message_ts": posted["ts"]}

    def users_info(self, params: Json) -> Json:
        user = self.users.get(str(params.get("user")))
        if user is None:
            raise SlackError("user_not_found")
        return {"user": user}

    def conversations_info(self, params: Json) -> Json:
        channel = str(params.get("channel") or "")
        if not channel or channel in self.missing_channels:
            raise SlackError("channel_not_found")
        return {"channel": self.channels.get(channel) or _channel_info(channel)}

    def conversations_open(self, params: Json) -> Json:
        users = str(params.get("users") or "").split(",")
        if not users[0]:
            raise SlackError("users_list_not_supplied")
        channel = _dm_of(users[0])
        return {"no_op": True, "already_open": True, "channel": {"id": channel}}

    def files_get_upload_url(self, params: Json) -> Json:
        if not params.get("filename") or not str(params.get("length", "")).isdigit():
            raise SlackError("invalid_arguments")
        file_id = f"F0UPLOAD{next(self._numbers):04d}"
        length = int(params["length"])
        self.uploads[file_id] = Upload(file_id, str(params["filename"]), length)
        return {"upload_url": f"{self.url}/upload/v1/{file_id}", "file_id": file_id}

    def files_complete_upload(self, params: Json) -> Json:
        channel = self._channel(params, "channel_id") if params.get("channel_id") else None
        listed = params.get("files")
        entries = json.loads(listed) if isinstance(listed, str) else listed
        if not entries:
            raise SlackError("invalid_arguments")
        uploads = [self._uploaded(entry) for entry in entries]
        for upload in uploads:
            upload.channel_id = channel
            upload.thread_ts = _opt(params.get("thread_ts"))
            upload.initial_comment = _opt(params.get("initial_comment"))
            upload.completed = True
        ts = self._post_files(channel, uploads, params) if channel else None
        return {"files": [self._file_object(u, ts) for u in uploads]}

    def _uploaded(self, entry: Json) -> Upload:
        upload = self.uploads.get(str(entry.get("id")))
        if upload is None or upload.data is None:
            raise SlackError("file_not_found")
        upload.title = entry.get("title") or upload.filename
        return upload

    def _post_files(self, channel: str, uploads: list[Upload], params: Json) -> str:
        """Slack shows completed files as a message from the bot carrying the comment."""
        text = str(params.get("initial_comment") or "")
        posted = self._posted(text, [], _opt(params.get("thread_ts")))
        posted.update({"files": [self._file_object(u, None) for u in uploads], "upload": True})
        self._messages.setdefault(channel, []).append(posted)
        return str(posted["ts"])

    def _file_object(self, upload: Upload, ts: str | None) -> Json:
        url = f"{self.url}/files-pri/{self.team_id}-{upload.file_id}/{upload.filename}"
        entry = shared_file(
            upload.file_id,
            name=upload.filename,
            url_private=url,
            size=len(upload.data or b""),
            user=self.bot_user_id,
        )
        entry["title"] = upload.title or upload.filename
        if ts is not None and upload.channel_id is not None:
            scope = "public" if upload.channel_id.startswith("C") else "private"
            share = {"ts": ts, "team_id": self.team_id, "reply_count": 0}
            if upload.thread_ts:
                share["thread_ts"] = upload.thread_ts
            entry["shares"] = {scope: {upload.channel_id: [share]}}
        return entry

    def apps_connections_open(self, params: Json) -> Json:
        return {"url": self.socket.new_url()}

    # -- plain HTTP endpoints --------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.Response:
        upload = self.uploads.get(request.match_info["file_id"])
        if upload is None:
            return web.Response(status=404, text="unknown upload", content_type="text/plain")
        upload.data = await _upload_bytes(request)
        self._notify()
        return web.Response(text=f"OK - {len(upload.data)}", content_type="text/plain")

    async def _download(self, request: web.Request) -> web.Response:
        file_id = request.match_info["team_file"].rsplit("-", 1)[-1]
        authorized = _bearer(request) == self.bot_token
        self.downloads.append(Download(file_id, authorized, time.monotonic()))
        self._notify()
        if not authorized:
            return web.Response(text=_SIGN_IN_PAGE, content_type="text/html")
        found = self._shared.get(file_id) or self._own_file(file_id)
        if found is None:
            return web.Response(status=404, text="file_not_found", content_type="text/plain")
        _name, mimetype, data = found
        return web.Response(body=data, content_type=mimetype)

    def _own_file(self, file_id: str) -> tuple[str, str, bytes] | None:
        upload = self.uploads.get(file_id)
        if upload is None or upload.data is None:
            return None
        return upload.filename, "application/octet-stream", upload.data

    async def _response_url(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = json.loads(raw) if raw else {}
        self.responses.append(ResponsePost(str(request.url), body, time.monotonic()))
        self._notify()
        return _reply({"ok": True})

    async def _records(self, request: web.Request) -> web.Response:
        calls = self.calls[int(request.query.get("calls", 0)) :]
        acks = self.socket.acks[int(request.query.get("acks", 0)) :]
        return web.json_response(
            {
                "calls": [_call_record(call) for call in calls],
                "next_call": len(self.calls),
                "acks": [_ack_record(ack) for ack in acks],
                "next_ack": len(self.socket.acks),
            }
        )

    async def _push_events(self, request: web.Request) -> web.Response:
        events = (await request.json())["events"]
        sent = [await self.socket.send_event(event) for event in events]
        return web.json_response({"envelope_ids": sent})


class SocketMode:
    """The Socket Mode side of the fake, ``fake.socket``.

    Envelopes go to the newest live connection (one neither deaf nor told to reconnect),
    waiting for one while there is none, the way Slack holds events for a reconnecting app.
    """

    def __init__(self, fake: FakeSlack, changes: _Changes, max_connections: int) -> None:
        self._fake = fake
        self._changes = changes
        self.max_connections = max_connections
        self.connections: list[Connection] = []
        self._numbers = itertools.count(1)
        self._timers: set[asyncio.Task[None]] = set()
        self.reset()

    def reset(self) -> None:
        """Forget tickets, deliveries and acks; open sockets stay open."""
        self.deliveries: list[Delivery] = []
        self.acks: list[Ack] = []
        self._tickets: set[str] = set()
        self._sent: dict[str, Delivery] = {}
        self.connections = [c for c in self.connections if c.open]

    @property
    def open_connections(self) -> list[Connection]:
        return [c for c in self.connections if c.open]

    def new_url(self) -> str:
        """A one-use WebSocket URL, as ``apps.connections.open`` issues them."""
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return f"ws://127.0.0.1:{self._fake.port}/link/?ticket={ticket}&app_id={self._fake.app_id}"

    def cancel_timers(self) -> None:
        for task in list(self._timers):
            task.cancel()

    async def serve(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid or used ticket")
        self._tickets.discard(ticket)
        # Pings are answered by hand so that a connection can be made deaf.
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        connection = Connection(next(self._numbers), ws, time.monotonic())
        self.connections.append(connection)
        self._changes.notify()
        try:
            if await self._greet(connection):
                await self._read(connection)
        finally:
            connection.closed_at = time.monotonic()
            self._changes.notify()
        return ws

    async def _greet(self, connection: Connection) -> bool:
        count = len(self.open_connections)
        if count > self.max_connections:
            await connection.ws.send_json(disconnect("too_many_websockets"))
            await connection.ws.close(code=WSCloseCode.POLICY_VIOLATION)
            return False
        await connection.ws.send_json(hello(num_connections=count, app_id=self._fake.app_id))
        return True

    async def _read(self, connection: Connection) -> None:
        async for frame in connection.ws:
            if frame.type is WSMsgType.PING:
                connection.pings += 1
                if not connection.deaf:
                    await connection.ws.pong(frame.data)
            elif frame.type is WSMsgType.TEXT:
                self._acked(connection, frame.data)

    def _acked(self, connection: Connection, text: str) -> None:
        answer = json.loads(text)
        envelope_id = answer.get("envelope_id")
        if not envelope_id:
            return
        sent = self._sent.get(envelope_id)
        ack = Ack(
            envelope_id,
            answer.get("payload"),
            connection.number,
            time.monotonic(),
            sent.sent_at if sent else None,
        )
        self.acks.append(ack)
        self._changes.notify()

    async def close_all(self, app: web.Application) -> None:
        for connection in self.open_connections:
            await connection.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    def _live(self) -> Connection | None:
        return next((c for c in reversed(self.connections) if c.live), None)

    async def push(self, frame: Json, *, timeout: float = 5.0) -> Delivery:
        """Send an envelope to the newest live connection, waiting for one if there is none."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            connection = await self._changes.wait_for(
                self._live, max(deadline - loop.time(), 0.0), what="a live Socket Mode connection"
            )
            try:
                await connection.ws.send_json(frame)
                break
            except ConnectionError:
                connection.broken = True
        delivery = Delivery(frame["envelope_id"], frame, connection.number, time.monotonic())
        self._sent[delivery.envelope_id] = delivery
        self.deliveries.append(delivery)
        return delivery

    async def send_event(
        self,
        event: Json,
        *,
        event_id: str | None = None,
        retry_attempt: int = 0,
        retry_reason: str = "",
        timeout: float = 5.0,
    ) -> str:
        """Deliver an Events API event (from ``slack_payloads``); returns the envelope id."""
        payload = event_callback(
            event,
            team_id=self._fake.team_id,
            api_app_id=self._fake.app_id,
            event_id=event_id,
            bot_user_id=self._fake.bot_user_id,
        )
        frame = envelope(
            "events_api", payload, retry_attempt=retry_attempt, retry_reason=retry_reason
        )
        return (await self.push(frame, timeout=timeout)).envelope_id

    async def send_command(self, command: str, text: str = "", **fields: Any) -> str:
        """Deliver a slash command; its ``response_url`` points at this fake unless given."""
        fields.setdefault("response_url", self._fake.response_url())
        form = slash_command(
            command, text, team_id=self._fake.team_id, api_app_id=self._fake.app_id, **fields
        )
        return (await self.push(envelope("slash_commands", form))).envelope_id

    async def send_action(self, action_id: str, value: str, **fields: Any) -> str:
        """Deliver a button click (``message_ts=`` is required)."""
        fields.setdefault("response_url", self._fake.response_url())
        payload = block_actions(
            action_id, value, team_id=self._fake.team_id, api_app_id=self._fake.app_id, **fields
        )
        return (await self.push(envelope("interactive", payload))).envelope_id

    async def redeliver(self, envelope_id: str, *, reason: str = "timeout") -> str:
        """Slack's retry of an unacknowledged event: same payload, new envelope, attempt + 1."""
        first = self._sent[envelope_id].frame
        frame = envelope(
            first["type"],
            first["payload"],
            retry_attempt=int(first.get("retry_attempt", 0)) + 1,
            retry_reason=reason,
        )
        return (await self.push(frame)).envelope_id

    async def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> Ack:
        def acked() -> Ack | None:
            return next((a for a in self.acks if a.envelope_id == envelope_id), None)

        return await self._changes.wait_for(acked, timeout, what=f"the ack of {envelope_id}")

    async def disconnect(
        self,
        reason: str = "refresh_requested",
        *,
        connection: Connection | None = None,
        close_after: float | None = None,
    ) -> Connection:
        """Ask a client to reconnect (the newest open connection unless given); with
        ``close_after`` the server also drops it then, as Slack does after a ``warning``."""
        target = connection or self._newest_open()
        target.refreshing = True
        await target.ws.send_json(disconnect(reason))
        if close_after is not None:
            self._spawn(self._close_later(target, close_after))
        return target

    def go_deaf(self, connection: Connection | None = None) -> Connection:
        """The socket stays open but delivers nothing and answers no ping."""
        target = connection or self._newest_open()
        target.deaf = True
        return target

    def _newest_open(self) -> Connection:
        opened = self.open_connections
        if not opened:
            raise LookupError("fake Slack: no open Socket Mode connection")
        return opened[-1]

    async def _close_later(self, connection: Connection, delay: float) -> None:
        await asyncio.sleep(delay)
        await connection.ws.close(code=WSCloseCode.GOING_AWAY)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work)
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)


_METHODS: dict[str, Callable[[FakeSlack, Json], Json]] = {
    "auth.test": FakeSlack.auth_test,
    "chat.postMessage": FakeSlack.chat_post_message,
    "chat.update": FakeSlack.chat_update,
    "chat.delete": FakeSlack.chat_delete,
    "chat.postEphemeral": FakeSlack.chat_post_ephemeral,
    "users.info": FakeSlack.users_info,
    "conversations.info": FakeSlack.conversations_info,
    "conversations.open": FakeSlack.conversations_open,
    "files.getUploadURLExternal": FakeSlack.files_get_upload_url,
    "files.completeUploadExternal": FakeSlack.files_complete_upload,
    "apps.connections.open": FakeSlack.apps_connections_open,
}


def _reply(body: Json, status: int = 200) -> web.Response:
    response = web.json_response(body, status=status)
    response.headers["X-OAuth-Scopes"] = SCOPES
    return response


async def _params(request: web.Request) -> Json:
    """Slack takes arguments from the query string, a form, or a JSON body, merged."""
    params: Json = dict(request.query)
    if request.content_type == "application/json":
        params.update(await request.json())
    elif request.method == "POST":
        form = await request.post()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
    return params


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def _upload_bytes(request: web.Request) -> bytes:
    """The raw body (what slack_sdk sends), or the first part of a multipart form."""
    if not request.content_type.startswith("multipart/"):
        return await request.read()
    reader = await request.multipart()
    part = await reader.next()
    if not isinstance(part, BodyPartReader):
        return b""
    return bytes(await part.read(decode=False))


def _content(params: Json) -> tuple[str, list[Json]]:
    """Text and blocks of a message, refused where Slack refuses them."""
    text = str(params.get("text") or "")
    blocks = params.get("blocks") or []
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    if len(text) > TEXT_LIMIT:
        raise SlackError("msg_too_long")
    if not text.strip() and not blocks and not params.get("attachments"):
        raise SlackError("no_text")
    if len(blocks) > BLOCKS_LIMIT or any(_section_too_long(b) for b in blocks):
        raise SlackError("invalid_blocks")
    return text, blocks


def _section_too_long(block: Json) -> bool:
    text = block.get("text") if block.get("type") == "section" else None
    return isinstance(text, dict) and len(str(text.get("text", ""))) > SECTION_TEXT_LIMIT


def _dm_of(user: str) -> str:
    return "D" + user[1:]


def _channel_info(channel: str) -> Json:
    """What conversations.info says of a channel nobody set up: its kind from its prefix."""
    is_im = channel.startswith("D")
    info: Json = {
        "id": channel,
        "name": channel.lower(),
        "is_channel": channel.startswith("C"),
        "is_group": channel.startswith("G"),
        "is_im": is_im,
        "is_mpim": False,
        "is_private": not channel.startswith("C"),
        "is_archived": False,
        "is_ext_shared": False,
        "is_member": True,
        "context_team_id": TEAM_ID,
    }
    if is_im:
        info["user"] = "U" + channel[1:]
    return info


def _call_record(call: Call) -> Json:
    text = call.params.get("text")
    return {
        "method": call.method,
        "channel": call.channel,
        "text": str(text) if text is not None else None,
        "at": call.at,
        "ok": call.ok,
        "error": call.error,
    }


def _ack_record(ack: Ack) -> Json:
    return {"envelope_id": ack.envelope_id, "at": ack.at, "latency": ack.latency}


def _opt(value: Any) -> str | None:
    return str(value) if value else None


async def _serve(port: int) -> None:
    async with FakeSlack(port=port) as fake:
        print(fake.api_url, flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a fake Slack (Web API + Socket Mode).")
    parser.add_argument("--port", type=int, default=8098)
    port = parser.parse_args().port
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(port))


if __name__ == "__main__":
    main()
