"""The local web chat: a page, an endpoint to post messages (JSON, or a form with files),
server-sent events back, the stored transcript and its files.

Each browser gets a random chat id in a cookie; replies reach it through the chat's stream,
so whichever worker answers, the page hears it, and so does every other tab of the chat.
The guards every route passes (host names, same origin, security headers) are in
``adapters.webguard``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.typedefs import Handler
from redis.asyncio import Redis
from redis.exceptions import RedisError

from adapters.http import MAX_BODY
from adapters.local import WATCHED_SECONDS, LocalStream, Resume, StreamEntry
from adapters.markdown import to_html
from adapters.webguard import API_PREFIX, FILE_POLICY
from bot import replies
from bot.channels import (
    MAX_FILE,
    MAX_FILE_TEXT,
    Capabilities,
    Dispatch,
    History,
    Line,
    MessageFile,
)
from bot.errors import ServiceUnavailable, UserFacingError
from bot.health import outage
from bot.messages import (
    Attachment,
    Author,
    ConversationRef,
    IncomingMessage,
    OutgoingMessage,
    SentRef,
    kind_of,
)
from bot.netguard import decode
from bot.values import read_json

log = logging.getLogger(__name__)

CHANNEL = "web"
COOKIE = "switchboard_chat"
STATIC = Path(__file__).parent / "static"
PAGE = STATIC / "chat.html"
# What this server hands out (secrets.token_urlsafe(16)), with room to spare; anything else
# in the cookie is not a chat of ours and gets a new one.
_CHAT_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
MAX_ID = 128  # characters of a message id the page chooses
KEEPALIVE = 5.0  # seconds between comments on an idle event stream
# A form with files is streamed part by part (which the server's MAX_BODY does not cover)
# and is held to the limits below instead.
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
BAD_ID = f"A message id is at most {MAX_ID} characters; the page makes one for you."
NO_SESSION = "Reload the page: this browser has no chat session yet."
BAD_POSITION = "Read events after a stream id like 1700000000000-0."
NO_FILE = "That file is not in this conversation (or no longer kept)."
UNEXPECTED = (
    "Switchboard failed on this request with an unexpected error; the details are in the "
    "output of `switchboard up`."
)
STOPPING = "Switchboard is stopping; the page sends the message again by itself."
QUEUE_DOWN = "The queue (Redis) is not reachable right now; the page tries again by itself."


def unavailable(exc: ServiceUnavailable) -> str:
    return (
        f"Switchboard's {exc.service} is not available right now, so the message was not "
        "stored. The page sends it again by itself; nothing is stored twice."
    )


class WebAdapter:
    """The web chat: its routes join the process's HTTP server (``adapters.http``), its
    replies go through the chat's stream. Without ``files`` there are no download links
    for past messages."""

    channel = CHANNEL
    capabilities = Capabilities(text_limit=None, dialect="markdown", buttons=True)

    def __init__(
        self,
        redis: Redis,
        history: History,
        *,
        files: MessageFile | None = None,
        keepalive: float = KEEPALIVE,
    ) -> None:
        self.stream = LocalStream(redis, CHANNEL)
        self.history = history
        self.files = files
        self.keepalive = keepalive
        self.listeners = 0  # event streams open now
        self._dispatch: Dispatch | None = None
        self._stopping = asyncio.Event()  # open event streams end when it is set

    async def start(self, dispatch: Dispatch) -> None:
        self._dispatch = dispatch
        self._stopping.clear()

    async def send(self, out: OutgoingMessage) -> SentRef:
        return await self.stream.send(out)

    async def delta(self, ref: ConversationRef, in_reply_to: int, text: str) -> None:
        await self.stream.delta(ref, in_reply_to, text)

    async def watching(self, ref: ConversationRef) -> bool:
        return await self.stream.watching(ref)

    async def status(self, ref: ConversationRef, key: str, text: str) -> None:
        await self.stream.status(ref, key, text)

    async def stop(self) -> None:
        self._stopping.set()
        self._dispatch = None

    def routes(self) -> list[web.RouteDef]:
        routes = [
            web.get("/", self._page),
            web.get("/healthz", self._health),
            web.post("/api/messages", _api_errors(self._post)),
            web.get("/api/events", _api_errors(self._events)),
            web.get("/api/history", _api_errors(self._history)),
        ]
        if self.files is not None:
            routes.append(
                web.get(r"/api/files/{message:\d{1,18}}/{index:\d{1,3}}", _api_errors(self._file))
            )
        return [*routes, *(web.get(f"/static/{p.name}", _static(p)) for p in _assets())]

    async def _page(self, request: web.Request) -> web.StreamResponse:
        response = web.FileResponse(PAGE, headers={"Cache-Control": "no-store"})
        if _chat(request) is None:
            response.set_cookie(COOKIE, secrets.token_urlsafe(16), httponly=True, samesite="Strict")
        return response

    async def _health(self, request: web.Request) -> web.Response:
        """Alive, as far as the chat alone knows; `switchboard up` mounts the whole check
        (bot.health) at this path instead."""
        return web.json_response({"ok": True})

    async def _post(self, request: web.Request) -> web.Response:
        chat = _chat(request)
        if chat is None:
            return _problem(400, NO_SESSION)
        try:
            if request.content_type == "multipart/form-data":
                text, external_id, attachments = await _read_form(request)
            else:
                text, external_id, attachments = await _read_json(request)
        except _Refused as exc:
            return _problem(exc.status, exc.text)
        if len(external_id) > MAX_ID:
            return _problem(400, BAD_ID)
        if self._dispatch is None:
            return _problem(503, STOPPING, retry=True)
        incoming = IncomingMessage(
            ref=ConversationRef(channel=CHANNEL, chat=chat),
            # Unique in the channel, as receive() deduplicates: a page's retry is recognised,
            # another chat's message with the same id is not.
            external_id=f"{chat}:{external_id or uuid.uuid4().hex}",
            author=Author(f"web:{chat}", "web user"),
            text=text,
            attachments=attachments,
        )
        try:
            received = await self._dispatch(incoming)
        except UserFacingError as exc:
            return _problem(400, exc.text)
        if not received.duplicate:
            await self._tell_other_tabs(incoming, received.message_id, external_id)
        return web.json_response(
            {"message_id": received.message_id, "duplicate": received.duplicate}
        )

    async def _tell_other_tabs(
        self, incoming: IncomingMessage, message_id: int, client_id: str
    ) -> None:
        """The stored message, for the chat's other tabs. The message is stored whatever
        happens here: a stream that cannot be written costs the other tabs a reload."""
        names = tuple(a.filename for a in incoming.attachments)
        shown = {"id": message_id, "client_id": client_id, "text": incoming.text}
        try:
            await self.stream.message(
                incoming.ref, {**shown, "files": self._links(message_id, names)}
            )
        except RedisError as exc:
            log.warning("message %s stored, but not shown to other tabs: %s", message_id, exc)

    def _links(self, message_id: int | None, names: Sequence[str]) -> list[dict[str, str]]:
        """Each file's name, and where to download it when this server keeps files."""
        return [
            {"name": name}
            if self.files is None or message_id is None
            else {"name": name, "url": f"{API_PREFIX}files/{message_id}/{index}"}
            for index, name in enumerate(names)
        ]

    async def _history(self, request: web.Request) -> web.Response:
        """The stored transcript, and where in the stream the page continues from (taken
        first: what is written meanwhile comes again as events, and the page drops what it
        already shows)."""
        chat = _chat(request)
        if chat is None:
            return web.json_response({"lines": [], "resume": None})
        resume = await self.stream.resume(chat)
        lines = await self.history(ConversationRef(channel=CHANNEL, chat=chat))
        return web.json_response(
            {"lines": [self._line(line) for line in lines], "resume": _resume(resume)}
        )

    def _line(self, line: Line) -> dict[str, object]:
        mine = line.direction == "in"
        return {
            "id": line.message_id,
            "mine": mine,
            "in_reply_to": line.in_reply_to,
            "key": line.key,
            "text": line.text,
            "html": None if mine else to_html(line.text),
            "files": self._links(line.message_id, line.files),
        }

    def _shown(self, entry: StreamEntry) -> dict[str, object]:
        """A stream entry as the page takes it; a reply's files as links to download them
        (the entry carries their ids, never their bytes)."""
        out = entry.out
        if out is None:
            return entry.data
        return {
            "key": out.idempotency_key,
            "in_reply_to": out.in_reply_to,
            "text": out.text,
            "html": to_html(out.text),
            "files": self._links(out.message_id, [a.filename for a in out.attachments]),
            "buttons": [{"label": b.label, "command": b.command} for b in out.buttons],
        }

    async def _file(self, request: web.Request) -> web.Response:
        chat = _chat(request)
        if chat is None or self.files is None:
            return _problem(404, NO_FILE)
        ref = ConversationRef(channel=CHANNEL, chat=chat)
        message_id, index = int(request.match_info["message"]), int(request.match_info["index"])
        try:
            found = await self.files(ref, message_id, index)
        except UserFacingError as exc:  # known, but its content was not kept
            return _problem(404, exc.text)
        if found is None:
            return _problem(404, NO_FILE)
        return web.Response(
            body=found.data,
            headers={
                hdrs.CONTENT_TYPE: found.content_type,
                hdrs.CONTENT_DISPOSITION: _download_as(found.filename),
                "Content-Security-Policy": FILE_POLICY,
                "Cache-Control": "private, no-store",
            },
        )

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """The chat's stream from a position (the browser's Last-Event-ID when it reconnects,
        ``?after=`` from the transcript, else from now), until the page goes away."""
        chat = _chat(request)
        if chat is None:
            return _problem(400, NO_SESSION)
        after = request.headers.get("Last-Event-ID") or request.query.get("after") or ""
        if after and not _STREAM_ID.fullmatch(after):
            return _problem(400, BAD_POSITION)
        try:
            after = after or await self.stream.last_id(chat)
        except RedisError:
            return _problem(503, QUEUE_DOWN)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        self.listeners += 1
        try:
            await response.prepare(request)
            await self._follow(request, response, chat, after)
        except ConnectionResetError:
            pass  # the tab was closed: nothing to say
        except RedisError as exc:
            log.warning("an event stream ended: the queue's Redis failed (%s)", exc)
        finally:
            self.listeners -= 1
        return response

    async def _follow(
        self, request: web.Request, response: web.StreamResponse, chat: str, after: str
    ) -> None:
        watched = max(WATCHED_SECONDS, 3 * self.keepalive)
        while request.transport is not None and not request.transport.is_closing():
            await self.stream.watched(chat, watched)
            entries = await self._read(chat, after)
            if entries is None:
                return
            for entry in entries:
                after = entry.entry_id
                await response.write(_event(entry.entry_id, entry.kind, self._shown(entry)))
            await response.write(b": keep-alive\n\n")

    async def _read(self, chat: str, after: str) -> list[StreamEntry] | None:
        """The chat's next entries (none after ``keepalive``), or None when the server stops.
        A read cut short is awaited to its end here, so its Redis connection is closed before
        the server (and then the pool) is, rather than left to the garbage collector."""
        block_ms = max(1, int(self.keepalive * 1000))
        reading = asyncio.ensure_future(self.stream.read(chat, after, block_ms))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait((reading, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            reading.cancel()
            stopping.cancel()
            entries, _ = await asyncio.gather(reading, stopping, return_exceptions=True)
        if isinstance(entries, asyncio.CancelledError):
            return None
        if isinstance(entries, BaseException):
            raise entries
        return entries


class _Refused(Exception):
    """A posted message this endpoint will not take, with the answer to give."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status, self.text = status, text


Posted = tuple[str, str, tuple[Attachment, ...]]


async def _read_json(request: web.Request) -> Posted:
    """``{"text": ..., "id": ...}``, at most MAX_BODY (the app's limit)."""
    try:
        body = read_json(await request.read())
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


def _event(entry_id: str, kind: str, data: dict[str, object]) -> bytes:
    return f"id: {entry_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def _problem(status: int, text: str, **more: object) -> web.Response:
    return web.json_response({"error": text, **more}, status=status)


def _chat(request: web.Request) -> str | None:
    chat = request.cookies.get(COOKIE, "")
    return chat if _CHAT_ID.fullmatch(chat) else None


def _resume(resume: Resume) -> dict[str, object]:
    return {"after": resume.after, "until": resume.until, "writing": list(resume.writing)}


def _download_as(filename: str) -> str:
    plain = filename.encode("ascii", "replace").decode().replace('"', "'").replace("?", "_")
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename)}"


def _assets() -> list[Path]:
    return sorted(p for p in STATIC.iterdir() if p.suffix in (".js", ".css"))


def _static(path: Path) -> Handler:
    async def serve(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    return serve


def _api_errors(handler: Handler) -> Handler:
    """The chat's API answers in JSON whatever fails: 503 with ``retry`` for a service that
    is down (nothing was stored), 500 with a sentence, never a traceback, for the rest."""

    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except ServiceUnavailable as exc:
            log.warning(
                "%s %s refused: %s is down (%s)", request.method, request.path, exc.service, exc
            )
            return _problem(503, unavailable(exc), retry=True)
        except RedisError as exc:  # a message stored but not queued is queued by the sweep
            log.warning("%s %s refused: the queue failed (%s)", request.method, request.path, exc)
            return _problem(503, QUEUE_DOWN, retry=True)
        except Exception as exc:
            if outage(exc) == "database":  # nothing was stored: the page sends it again
                log.warning(
                    "%s %s refused: the database failed (%s)", request.method, request.path, exc
                )
                return _problem(503, replies.database_down(), retry=True)
            log.exception("%s %s failed", request.method, request.path)
            return _problem(500, UNEXPECTED, retry=False)

    return answer
