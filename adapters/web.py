"""The local web chat: a page, a JSON endpoint to post messages, and server-sent events back.

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

from aiohttp import web
from redis.asyncio import Redis

from adapters.base import Dispatch
from adapters.local import LocalStream
from bot.conversation import Line
from bot.errors import ServiceError, UserFacingError
from bot.messages import Author, ConversationRef, IncomingMessage, OutgoingMessage, SentRef

CHANNEL = "web"
COOKIE = "switchboard_chat"
PAGE = Path(__file__).parent / "static" / "chat.html"
MAX_BODY = 1024 * 1024


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
        app.router.add_get("/healthz", self._health)
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

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _post(self, request: web.Request) -> web.Response:
        chat = request.cookies.get(COOKIE)
        if not chat:
            return _problem(400, "Reload the page: this browser has no chat session yet.")
        try:
            body = await request.json()
            text = str(body["text"])
        except web.HTTPRequestEntityTooLarge:
            return _problem(413, "That message is over 1 MB; send a shorter one or split it.")
        except (ValueError, KeyError, TypeError):
            return _problem(400, 'Send JSON like {"text": "hello"}.')
        assert self._dispatch is not None
        incoming = IncomingMessage(
            ref=ConversationRef(channel=CHANNEL, chat=chat),
            external_id=str(body.get("id") or uuid.uuid4().hex),
            author=Author(f"web:{chat}", "web user"),
            text=text,
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
                {"id": line.message_id, "mine": line.direction == "in", "text": line.text}
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
