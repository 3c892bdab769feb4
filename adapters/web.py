"""The local web chat: a page, an endpoint to post messages (JSON, or a form with files),
and server-sent events back.

Each browser gets a random chat id in a cookie; replies reach it through the chat's stream,
so whichever worker answers, the page hears it.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aiohttp import BodyPartReader, hdrs, web
from redis.asyncio import Redis

from adapters.base import Dispatch
from adapters.local import LocalStream
from bot.conversation import Line
from bot.errors import ServiceError, UserFacingError
from bot.files import MAX_FILE, MAX_FILE_TEXT, kind_of
from bot.messages import (
    Attachment,
    Author,
    ConversationRef,
    IncomingMessage,
    OutgoingMessage,
    SentRef,
)
from bot.netguard import decode

CHANNEL = "web"
COOKIE = "switchboard_chat"
PAGE = Path(__file__).parent / "static" / "chat.html"
# The app's request limit: JSON messages, and whatever the extra routes (webhooks) read whole.
# A form with files is streamed part by part (which that limit does not cover) and is held to
# the limits below instead.
MAX_BODY = 1024 * 1024
MAX_FILES = 5
# The files, the text and id fields, and the multipart framing around them.
MAX_UPLOAD = MAX_FILES * MAX_FILE + 2 * MAX_BODY
_CHUNK = 64 * 1024

TOO_LONG = "That message is over 1 MB; send a shorter one or split it."
TOO_MANY_FILES = f"Attach at most {MAX_FILES} files to one message."
UPLOAD_TOO_LARGE = (
    f"That upload is too large: attach at most {MAX_FILES} files of up to {MAX_FILE_TEXT} each."
)
EMPTY = "Type a message or attach a file."
BAD_JSON = 'Send JSON like {"text": "hello"}.'
BAD_FORM = "Send the form with a text field and file parts (multipart/form-data)."


History = Callable[[ConversationRef], Awaitable[list[Line]]]


class WebAdapter:
    channel = CHANNEL

    def __init__(
        self,
        redis: Redis,
        host: str,
        port: int,
        history: History,
        extra_routes: Sequence[web.RouteDef] = (),
    ) -> None:
        self.stream = LocalStream(redis, CHANNEL)
        self.host, self.port = host, port
        self.history = history
        self.extra_routes = extra_routes
        self._runner: web.AppRunner | None = None
        self._dispatch: Dispatch | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, dispatch: Dispatch) -> None:
        self._dispatch = dispatch
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/", self._page)
        app.router.add_post("/api/messages", self._post)
        app.router.add_get("/api/events", self._events)
        app.router.add_get("/api/history", self._history)
        app.router.add_routes(self.extra_routes)
        # An open event stream must not hold up shutdown.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ServiceError(
                f"The web chat cannot listen on {self.host}:{self.port} ({exc.strerror}). "
                "Is Switchboard already running? Choose another port with --port."
            ) from exc
        if self.port == 0:
            self.port = self._runner.addresses[0][1]

    async def send(self, out: OutgoingMessage) -> SentRef:
        return await self.stream.send(out)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _page(self, request: web.Request) -> web.StreamResponse:
        response = web.FileResponse(PAGE, headers={"Cache-Control": "no-store"})
        if COOKIE not in request.cookies:
            response.set_cookie(COOKIE, secrets.token_urlsafe(16), httponly=True, samesite="Strict")
        return response

    async def _post(self, request: web.Request) -> web.Response:
        chat = request.cookies.get(COOKIE)
        if not chat:
            return _problem(400, "Reload the page: this browser has no chat session yet.")
        try:
            if request.content_type == "multipart/form-data":
                text, external_id, attachments = await _read_form(request)
            else:
                text, external_id, attachments = await _read_json(request)
        except _Refused as exc:
            return _problem(exc.status, exc.text)
        assert self._dispatch is not None
        incoming = IncomingMessage(
            ref=ConversationRef(channel=CHANNEL, chat=chat),
            external_id=external_id or uuid.uuid4().hex,
            author=Author(f"web:{chat}", "web user"),
            text=text,
            attachments=attachments,
        )
        try:
            received = await self._dispatch(incoming)
        except UserFacingError as exc:
            return _problem(400, exc.text)
        return web.json_response(
            {"message_id": received.message_id, "duplicate": received.duplicate}
        )

    async def _history(self, request: web.Request) -> web.Response:
        chat = request.cookies.get(COOKIE)
        lines = await self.history(ConversationRef(channel=CHANNEL, chat=chat)) if chat else []
        return web.json_response(
            [
                {
                    "id": line.message_id,
                    "mine": line.direction == "in",
                    "text": line.text,
                    "files": list(line.files),
                }
                for line in lines
            ]
        )

    async def _events(self, request: web.Request) -> web.StreamResponse:
        chat = request.cookies.get(COOKIE)
        if not chat:
            return _problem(400, "Reload the page: this browser has no chat session yet.")
        after = request.headers.get("Last-Event-ID") or await self.stream.last_id(chat)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        while not request.transport or not request.transport.is_closing():
            for entry in await self.stream.read(chat, after, 5_000):
                after = entry.entry_id
                await response.write(_event(entry.entry_id, entry.kind, _page_payload(entry)))
            await response.write(b": keep-alive\n\n")
        return response


class _Refused(Exception):
    """A posted message this endpoint will not take, with the answer to give."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status, self.text = status, text


Posted = tuple[str, str, tuple[Attachment, ...]]


async def _read_json(request: web.Request) -> Posted:
    """``{"text": ..., "id": ...}``, at most MAX_BODY (the app's limit)."""
    try:
        body = await request.json()
        text = str(body["text"])
    except web.HTTPRequestEntityTooLarge:
        raise _Refused(413, TOO_LONG) from None
    except (ValueError, KeyError, TypeError):
        raise _Refused(400, BAD_JSON) from None
    return text, str(body.get("id") or ""), ()


async def _read_form(request: web.Request) -> Posted:
    """Fields ``text`` and ``id`` and up to MAX_FILES ``file`` parts, read as they stream in:
    nothing over a limit is held in memory beyond that limit."""
    if (request.content_length or 0) > MAX_UPLOAD:
        raise _Refused(413, UPLOAD_TOO_LARGE)
    text, external_id, files = "", "", list[Attachment]()
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            _check_total(request)
            if not isinstance(part, BodyPartReader):
                raise _Refused(400, BAD_FORM)
            if part.name == "file":
                filename = part.filename or ""
                if len(files) == MAX_FILES:
                    raise _Refused(400, TOO_MANY_FILES)
                too_large = (
                    f"{Attachment(filename).filename} is over {MAX_FILE_TEXT}; "
                    f"each attached file can be at most {MAX_FILE_TEXT}."
                )
                data = await _read_part(request, part, MAX_FILE, too_large)
                if not filename and not data:
                    continue  # a form's empty file input
                files.append(
                    Attachment(
                        filename,
                        content_type=kind_of(filename, part.headers.get(hdrs.CONTENT_TYPE, "")),
                        data=data,
                    )
                )
            elif part.name == "text":
                text = _decode(part, await _read_part(request, part, MAX_BODY, TOO_LONG))
            elif part.name == "id":
                external_id = _decode(part, await _read_part(request, part, MAX_BODY, BAD_FORM))
            else:
                await _read_part(request, part, MAX_BODY, BAD_FORM)  # not ours: read past it
        _check_total(request)
    except ValueError:  # a missing boundary, a malformed part
        raise _Refused(400, BAD_FORM) from None
    if not text.strip() and not files:
        raise _Refused(400, EMPTY)
    return text, external_id, tuple(files)


async def _read_part(
    request: web.Request, part: BodyPartReader, limit: int, too_large: str
) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(_CHUNK):
        if len(data) + len(chunk) > limit:
            raise _Refused(413, too_large)
        data += chunk
        _check_total(request)
    return bytes(data)


def _check_total(request: web.Request) -> None:
    """Many small parts add up too: the whole body stays within MAX_UPLOAD."""
    if request.content.total_bytes > MAX_UPLOAD:
        raise _Refused(413, UPLOAD_TOO_LARGE)


def _decode(part: BodyPartReader, data: bytes) -> str:
    return decode(data, part.get_charset("utf-8"))


def _page_payload(entry: object) -> dict[str, object]:
    from adapters.local import StreamEntry

    assert isinstance(entry, StreamEntry)
    if entry.out is None:
        return entry.data
    return {
        "in_reply_to": entry.out.in_reply_to,
        "text": entry.out.text,
        "attachments": [
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "data": base64.b64encode(a.data).decode(),
            }
            for a in entry.out.attachments
        ],
    }


def _event(entry_id: str, kind: str, data: dict[str, object]) -> bytes:
    return f"id: {entry_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def _problem(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)
