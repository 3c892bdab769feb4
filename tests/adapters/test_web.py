"""The local web chat over real HTTP: the page, posting a message, the reply as an event."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from adapters.web import WebAdapter
from bot.app import Runtime
from bot.conversation import receive, transcript
from tests.support import drain


@pytest.fixture
async def web(runtime: Runtime) -> AsyncIterator[WebAdapter]:
    adapter = WebAdapter(runtime.redis, "127.0.0.1", 0, lambda ref: transcript(runtime.core, ref))
    await adapter.start(lambda incoming: receive(runtime.core, incoming))
    yield adapter
    await adapter.stop()


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
