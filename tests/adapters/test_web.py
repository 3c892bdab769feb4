"""The local web chat over real HTTP: the page, posting a message (with files), the reply as
an event."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from sqlalchemy import select

from adapters.web import WebAdapter
from bot.app import Runtime
from bot.conversation import Received, receive, transcript
from bot.messages import IncomingMessage
from bot.storage.models import Message
from tests.support import drain


@pytest.fixture
def dispatched() -> list[IncomingMessage]:
    """Every message the adapter handed on, as it handed it on."""
    return []


@pytest.fixture
async def web(runtime: Runtime, dispatched: list[IncomingMessage]) -> AsyncIterator[WebAdapter]:
    async def dispatch(incoming: IncomingMessage) -> Received:
        dispatched.append(incoming)
        return await receive(runtime.core, incoming)

    adapter = WebAdapter(runtime.redis, "127.0.0.1", 0, lambda ref: transcript(runtime.core, ref))
    await adapter.start(dispatch)
    yield adapter
    await adapter.stop()


def _form(text: str | None, *files: tuple[str, bytes, str]) -> aiohttp.FormData:
    # Multipart even without files, as a browser's FormData is.
    form = aiohttp.FormData(default_to_multipart=True)
    if text is not None:
        form.add_field("text", text)
    for filename, data, content_type in files:
        form.add_field("file", io.BytesIO(data), filename=filename, content_type=content_type)
    return form


async def _stored_attachments(runtime: Runtime) -> list[dict[str, object]]:
    async with runtime.core.sessions() as session:
        stored = await session.scalar(select(Message).where(Message.direction == "in"))
    assert stored is not None
    return stored.attachments


async def _next_reply(events: aiohttp.ClientResponse) -> dict[str, object]:
    kind = ""
    async for raw in events.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: ") and kind == "reply":
            result: dict[str, object] = json.loads(line.removeprefix("data: "))
            return result
    raise AssertionError("the event stream ended without a reply")


async def test_page_post_and_reply_event(runtime: Runtime, web: WebAdapter) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        page = await client.get(f"{web.url}/")
        assert page.status == 200 and "<title>Switchboard</title>" in await page.text()

        async with client.get(f"{web.url}/api/events") as events:
            posted = await client.post(
                f"{web.url}/api/messages", json={"text": "hi web", "id": "w1"}
            )
            body = await posted.json()
            assert posted.status == 200 and body["duplicate"] is False
            again = await (
                await client.post(f"{web.url}/api/messages", json={"text": "hi web", "id": "w1"})
            ).json()
            assert again == {"message_id": body["message_id"], "duplicate": True}

            await drain(runtime)
            reply = await asyncio.wait_for(_next_reply(events), 10)
    assert reply["in_reply_to"] == body["message_id"]
    assert reply["text"] == "echo: hi web"

    # A reload shows the conversation so far.
    async with aiohttp.ClientSession(cookie_jar=client.cookie_jar) as again_client:
        past = await (await again_client.get(f"{web.url}/api/history")).json()
    assert [(line["mine"], line["text"]) for line in past] == [
        (True, "hi web"),
        (False, "echo: hi web"),
    ]


async def test_export_arrives_as_a_downloadable_attachment(
    runtime: Runtime, web: WebAdapter
) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        await client.get(f"{web.url}/")
        async with client.get(f"{web.url}/api/events") as events:
            await client.post(f"{web.url}/api/messages", json={"text": "/export"})
            await drain(runtime)
            reply = await asyncio.wait_for(_next_reply(events), 10)
    (attachment,) = reply["attachments"]  # type: ignore[misc]
    assert attachment["filename"].endswith(".md")
    assert attachment["content_type"] == "text/markdown"


async def test_bad_requests_get_clear_errors(web: WebAdapter) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        no_session = await client.post(f"{web.url}/api/messages", json={"text": "hi"})
        assert no_session.status == 400
        assert "Reload the page" in (await no_session.json())["error"]

        await client.get(f"{web.url}/")
        broken = await client.post(f"{web.url}/api/messages", data=b"not json")
        assert broken.status == 400
        assert (await broken.json())["error"] == 'Send JSON like {"text": "hello"}.'
        huge = await client.post(
            f"{web.url}/api/messages",
            data=io.BytesIO(json.dumps({"text": "x" * 2_000_000}).encode()),
        )
        assert huge.status == 413
        assert "over 1 MB" in (await huge.json())["error"]


async def test_a_file_posted_with_the_form_reaches_the_conversation(
    runtime: Runtime, web: WebAdapter, dispatched: list[IncomingMessage]
) -> None:
    notes = "Meeting notes: ship the web upload. Café ☕\n".encode()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        await client.get(f"{web.url}/")
        form = _form("/t summarize attachment", ("notes.txt", notes, "text/plain"))
        form.add_field("id", "f1")
        posted = await client.post(f"{web.url}/api/messages", data=form)
        assert posted.status == 200, await posted.text()
        assert (await posted.json())["duplicate"] is False

    (incoming,) = dispatched
    assert incoming.external_id == "f1"
    assert incoming.text == "/t summarize attachment"
    (attachment,) = incoming.attachments
    assert (attachment.filename, attachment.content_type) == ("notes.txt", "text/plain")
    assert (attachment.data, attachment.size) == (notes, len(notes))

    (stored,) = await _stored_attachments(runtime)
    assert {k: stored[k] for k in ("filename", "content_type", "size")} == {
        "filename": "notes.txt",
        "content_type": "text/plain",
        "size": len(notes),
    }


async def test_a_file_alone_is_a_message(
    runtime: Runtime, web: WebAdapter, dispatched: list[IncomingMessage]
) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        await client.get(f"{web.url}/")
        # No text field at all, an empty one, and a type left for the server to guess.
        for text in (None, ""):
            posted = await client.post(
                f"{web.url}/api/messages",
                data=_form(text, ("plan.md", b"# Plan\n", "application/octet-stream")),
            )
            assert posted.status == 200, await posted.text()

    assert [m.text for m in dispatched] == ["", ""]
    assert [(a.filename, a.content_type) for m in dispatched for a in m.attachments] == [
        ("plan.md", "text/markdown"),
        ("plan.md", "text/markdown"),
    ]


async def test_files_up_to_25_mb_and_5_to_a_message(
    web: WebAdapter, dispatched: list[IncomingMessage]
) -> None:
    limit = 25 * 1024 * 1024
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        await client.get(f"{web.url}/")
        # Over the 1 MB a JSON message may be, yet within a file's limit.
        fits = await client.post(
            f"{web.url}/api/messages",
            data=_form("big", ("exactly.bin", b"x" * limit, "application/octet-stream")),
        )
        assert fits.status == 200, await fits.text()
        assert dispatched[-1].attachments[0].size == limit

        over = await client.post(
            f"{web.url}/api/messages",
            data=_form("bigger", ("huge.log", b"x" * (limit + 1), "text/plain")),
        )
        assert over.status == 413
        assert (await over.json())["error"] == (
            "huge.log is over 25 MB; each attached file can be at most 25 MB."
        )

        six = [(f"{n}.txt", b"hi", "text/plain") for n in range(6)]
        too_many = await client.post(f"{web.url}/api/messages", data=_form("six", *six))
        assert too_many.status == 400
        assert (await too_many.json())["error"] == "Attach at most 5 files to one message."
    assert [m.text for m in dispatched] == ["big"]


async def test_an_empty_form_is_refused(web: WebAdapter, dispatched: list[IncomingMessage]) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        await client.get(f"{web.url}/")
        for form in (_form(""), _form("  \n"), _form(None)):
            form.add_field("id", "e1")
            empty = await client.post(f"{web.url}/api/messages", data=form)
            assert empty.status == 400
            assert (await empty.json())["error"] == "Type a message or attach a file."
    assert dispatched == []
