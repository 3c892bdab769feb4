"""The local web chat over real HTTP: the page, posting a message (with files), the reply as
an event, the transcript with its files, and every event of the conversation."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from redis.exceptions import RedisError
from sqlalchemy import select
from yarl import URL

from adapters.web import COOKIE, QUEUE_DOWN
from bot.app import Runtime, in_process_worker
from bot.channels import Received
from bot.conversation import receive
from bot.errors import ServiceUnavailable
from bot.messages import ConversationRef, IncomingMessage
from bot.storage.models import Message
from tests.fakes.llm_server import FakeLLM
from tests.support import (
    BINARY_FILES,
    FILES_WORKFLOW,
    ServedWeb,
    drain,
    files_command,
    left_in_run_folder,
    save_workflow,
    serving,
)
from workflows import runs


@pytest.fixture
def dispatched() -> list[IncomingMessage]:
    """Every message the adapter handed on, as it handed it on."""
    return []


@pytest.fixture
async def web(runtime: Runtime, dispatched: list[IncomingMessage]) -> AsyncIterator[ServedWeb]:
    async def dispatch(incoming: IncomingMessage) -> Received:
        dispatched.append(incoming)
        return await receive(runtime.core, incoming)

    async with serving(runtime, dispatch) as adapter:
        yield adapter


def browser(web: ServedWeb, jar: aiohttp.CookieJar | None = None) -> aiohttp.ClientSession:
    """A client as the page is one: it keeps the chat cookie and says where it comes from."""
    return aiohttp.ClientSession(
        cookie_jar=jar or aiohttp.CookieJar(unsafe=True), headers={"Origin": web.url}
    )


def chat_of(client: aiohttp.ClientSession, web: ServedWeb) -> str:
    return client.cookie_jar.filter_cookies(URL(web.url))[COOKIE].value


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


async def test_page_post_and_reply_event(runtime: Runtime, web: ServedWeb) -> None:
    async with browser(web) as client:
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
    async with browser(web, client.cookie_jar) as again_client:
        past = (await (await again_client.get(f"{web.url}/api/history")).json())["lines"]
    assert [(line["mine"], line["text"]) for line in past] == [
        (True, "hi web"),
        (False, "echo: hi web"),
    ]


async def _reply_event(
    runtime: Runtime, client: aiohttp.ClientSession, web: ServedWeb, text: str
) -> dict[str, Any]:
    """The reply event the page gets for ``text``, posted with its event stream open."""
    async with client.get(f"{web.url}/api/events") as events:
        await client.post(f"{web.url}/api/messages", json={"text": text})
        await drain(runtime)
        return await asyncio.wait_for(_next_reply(events), 10)


async def _downloads(
    client: aiohttp.ClientSession, web: ServedWeb, reply: dict[str, Any]
) -> dict[str, bytes]:
    """Each file of a reply event, downloaded by its link; the links stay after a reload."""
    lines = (await (await client.get(f"{web.url}/api/history")).json())["lines"]
    assert lines[-1]["files"] == reply["files"]
    found = {}
    for link in reply["files"]:
        download = await client.get(f"{web.url}{link['url']}")
        assert download.status == 200
        found[link["name"]] = await download.read()
    return found


async def test_export_arrives_as_a_downloadable_attachment(
    runtime: Runtime, web: ServedWeb
) -> None:
    async with browser(web) as client:
        await client.get(f"{web.url}/")
        reply = await _reply_event(runtime, client, web, "/export")
        (exported,) = (await _downloads(client, web, reply)).items()
    assert exported[0].endswith(".md") and exported[1].startswith(b"# Conversation")


async def test_binary_files_of_a_reply_download_byte_for_byte(
    runtime: Runtime, web: ServedWeb
) -> None:
    runtime.core.commands.add(files_command("draw"))
    async with browser(web) as client:
        await client.get(f"{web.url}/")
        reply = await _reply_event(runtime, client, web, "/draw")
        assert reply["text"] == "Made 2 files."
        assert await _downloads(client, web, reply) == BINARY_FILES


async def test_binary_files_a_run_replies_with_download_byte_for_byte(
    runtime: Runtime, web: ServedWeb
) -> None:
    await save_workflow(runtime, FILES_WORKFLOW)
    async with browser(web) as client:
        await client.get(f"{web.url}/")
        ref = ConversationRef(channel="web", chat=chat_of(client, web))
        async with client.get(f"{web.url}/api/events") as events:
            run_id, _ = await runs.start(runtime.core, "blobs", {}, trigger="shell", ref=ref)
            with left_in_run_folder(runtime, run_id):
                await drain(runtime)
            reply = await asyncio.wait_for(_next_reply(events), 10)
        assert reply["text"] == "Your files."
        assert await _downloads(client, web, reply) == BINARY_FILES


async def test_bad_requests_get_clear_errors(web: ServedWeb) -> None:
    async with browser(web) as client:
        no_session = await client.post(f"{web.url}/api/messages", json={"text": "hi"})
        assert no_session.status == 400
        assert "Reload the page" in (await no_session.json())["error"]

        await client.get(f"{web.url}/")
        broken = await client.post(f"{web.url}/api/messages", data=b"not json")
        assert broken.status == 400
        assert (await broken.json())["error"] == 'Send JSON like {"text": "hello"}.'
        deep = b'{"text": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
        nested = await client.post(f"{web.url}/api/messages", data=deep)
        assert nested.status == 400
        assert (await nested.json())["error"] == 'Send JSON like {"text": "hello"}.'
        huge = await client.post(
            f"{web.url}/api/messages",
            data=io.BytesIO(json.dumps({"text": "x" * 2_000_000}).encode()),
        )
        assert huge.status == 413
        assert "over 1 MB" in (await huge.json())["error"]


async def test_a_file_posted_with_the_form_reaches_the_conversation(
    runtime: Runtime, web: ServedWeb, dispatched: list[IncomingMessage]
) -> None:
    notes = "Meeting notes: ship the web upload. Café ☕\n".encode()
    async with browser(web) as client:
        await client.get(f"{web.url}/")
        form = _form("/t summarize attachment", ("notes.txt", notes, "text/plain"))
        form.add_field("id", "f1")
        posted = await client.post(f"{web.url}/api/messages", data=form)
        assert posted.status == 200, await posted.text()
        assert (await posted.json())["duplicate"] is False
        chat = chat_of(client, web)

    (incoming,) = dispatched
    assert incoming.external_id == f"{chat}:f1"
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
    runtime: Runtime, web: ServedWeb, dispatched: list[IncomingMessage]
) -> None:
    async with browser(web) as client:
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
    web: ServedWeb, dispatched: list[IncomingMessage]
) -> None:
    limit = 25 * 1024 * 1024
    async with browser(web) as client:
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


async def test_an_empty_form_is_refused(web: ServedWeb, dispatched: list[IncomingMessage]) -> None:
    async with browser(web) as client:
        await client.get(f"{web.url}/")
        for form in (_form(""), _form("  \n"), _form(None)):
            form.add_field("id", "e1")
            empty = await client.post(f"{web.url}/api/messages", data=form)
            assert empty.status == 400
            assert (await empty.json())["error"] == "Type a message or attach a file."
    assert dispatched == []


async def _events(events: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
    """(kind, stream id, data) of each event, as a browser's EventSource parses them."""
    kind = entry_id = ""
    async for raw in events.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("id: "):
            entry_id = line.removeprefix("id: ")
        elif line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield kind, entry_id, json.loads(line.removeprefix("data: "))


async def _until(
    events: aiohttp.ClientResponse, kind: str, timeout: float = 20
) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]]:
    """The events before the first of ``kind`` (kind, data), and that one's data."""
    seen: list[tuple[str, dict[str, Any]]] = []

    async def read() -> dict[str, Any]:
        async for found, _, data in _events(events):
            if found == kind:
                return data
            seen.append((found, data))
        raise AssertionError(f"the event stream ended before a {kind} event; saw {seen}")

    return seen, await asyncio.wait_for(read(), timeout)


async def _post(
    client: aiohttp.ClientSession, web: ServedWeb, text: str, message_id: str = ""
) -> dict[str, Any]:
    posted = await client.post(f"{web.url}/api/messages", json={"text": text, "id": message_id})
    assert posted.status == 200, await posted.text()
    body: dict[str, Any] = await posted.json()
    return body


async def _stored_in(runtime: Runtime) -> list[tuple[str | None, str]]:
    async with runtime.core.sessions() as session:
        rows = await session.execute(
            select(Message.external_id, Message.text)
            .where(Message.direction == "in")
            .order_by(Message.id)
        )
    return [(external, text) for external, text in rows]


async def test_the_same_id_in_two_chats_is_two_messages_and_a_retry_is_one(
    runtime: Runtime, web: ServedWeb
) -> None:
    async with browser(web) as alice, browser(web) as bob:
        for client in (alice, bob):
            await client.get(f"{web.url}/")
        first = await _post(alice, web, "from alice", "m-1")
        other = await _post(bob, web, "from bob", "m-1")
        again = await _post(alice, web, "from alice", "m-1")
        chats = chat_of(alice, web), chat_of(bob, web)

    assert (first["duplicate"], other["duplicate"]) == (False, False)
    assert other["message_id"] != first["message_id"]
    assert again == {"message_id": first["message_id"], "duplicate": True}
    assert await _stored_in(runtime) == [
        (f"{chats[0]}:m-1", "from alice"),
        (f"{chats[1]}:m-1", "from bob"),
    ]


async def test_a_message_id_or_chat_cookie_of_the_wrong_shape_is_refused(
    runtime: Runtime, web: ServedWeb
) -> None:
    async with browser(web) as client:
        await client.get(f"{web.url}/")
        long_id = await client.post(f"{web.url}/api/messages", json={"text": "hi", "id": "x" * 129})
        assert long_id.status == 400
        assert "at most 128 characters" in (await long_id.json())["error"]

        client.cookie_jar.update_cookies({COOKIE: "x" * 300}, URL(web.url))
        forged = await client.post(f"{web.url}/api/messages", json={"text": "hi"})
        assert forged.status == 400
        page = await client.get(f"{web.url}/")  # the page hands out a new chat instead
        assert len(page.cookies[COOKIE].value) < 64
    assert await _stored_in(runtime) == []


async def test_a_service_down_is_a_503_to_retry_and_a_failure_leaks_nothing(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    failures: list[Exception] = [
        ServiceUnavailable("database", "connection refused by 127.0.0.1:5432"),
        RedisError("Connection closed by server."),
        RuntimeError("internal detail: password=hunter2"),
    ]

    async def dispatch(incoming: IncomingMessage) -> Received:
        if failures:
            raise failures.pop(0)
        return await receive(runtime.core, incoming)

    async with serving(runtime, dispatch) as web, browser(web) as client:
        await client.get(f"{web.url}/")
        down = await client.post(f"{web.url}/api/messages", json={"text": "hi", "id": "r1"})
        queue = await client.post(f"{web.url}/api/messages", json={"text": "hi", "id": "r1"})
        broken = await client.post(f"{web.url}/api/messages", json={"text": "hi", "id": "r1"})
        stored = await _post(client, web, "hi", "r1")

    assert down.status == 503
    assert await down.json() == {
        "error": "Switchboard's database is not available right now, so the message was not "
        "stored. The page sends it again by itself; nothing is stored twice.",
        "retry": True,
    }
    assert (queue.status, await queue.json()) == (503, {"error": QUEUE_DOWN, "retry": True})
    assert broken.status == 500
    body = await broken.text()
    assert "hunter2" not in body and "Traceback" not in body
    assert (await broken.json())["retry"] is False
    assert stored["duplicate"] is False
    assert len(await _stored_in(runtime)) == 1
    assert "hunter2" in caplog.text  # the details are in the server's log


async def test_closing_the_page_ends_its_event_stream_quietly(
    web: ServedWeb, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with browser(web) as client:
        await client.get(f"{web.url}/")
        events = await client.get(f"{web.url}/api/events")
        await events.content.readline()  # the first keep-alive: the stream is open
        assert web.listeners == 1
        events.close()  # the tab is closed
        await asyncio.wait_for(_no_listeners(web), 10)
        # One left open while the server stops.
        await (await client.get(f"{web.url}/api/events")).content.readline()
        await web.stop()
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == [], [r.getMessage() for r in problems]


async def _no_listeners(web: ServedWeb) -> None:
    while web.listeners:
        await asyncio.sleep(0.05)


async def test_every_event_of_the_conversation_reaches_every_tab(
    runtime: Runtime, web: ServedWeb
) -> None:
    async with browser(web) as tab_a:
        await tab_a.get(f"{web.url}/")
        async with (
            browser(web, tab_a.cookie_jar) as tab_b,
            tab_b.get(f"{web.url}/api/events") as events,
        ):
            sent = await _post(tab_a, web, "**hello** <b>there</b> [x](javascript:alert(1))", "c1")
            await drain(runtime)
            before, reply = await _until(events, "reply")

    (message,) = [data for kind, data in before if kind == "message"]
    assert message == {
        "id": sent["message_id"],
        "client_id": "c1",
        "text": "**hello** <b>there</b> [x](javascript:alert(1))",
        "files": [],
    }
    assert reply["in_reply_to"] == sent["message_id"]
    assert reply["key"] == f"reply:{sent['message_id']}:0"
    assert reply["html"] == (
        "<p>echo: <strong>hello</strong> &lt;b&gt;there&lt;/b&gt; [x](javascript:alert(1))</p>\n"
    )


async def test_a_reply_being_written_resumes_after_a_reload(
    runtime: Runtime, web: ServedWeb, llm: FakeLLM
) -> None:
    llm.chunk_delay = 0.25
    words = "one two three four five six seven eight nine ten"
    async with browser(web) as client, in_process_worker(runtime):
        await client.get(f"{web.url}/")
        async with client.get(f"{web.url}/api/events") as first_tab:
            sent = await _post(client, web, words)
            await _until(first_tab, "delta")  # the reply is being written
        # Reloaded: the transcript, then the stream from before the reply's first piece.
        loaded = await (await client.get(f"{web.url}/api/history")).json()
        resume = loaded["resume"]
        assert resume["writing"] == [sent["message_id"]]
        assert [line["text"] for line in loaded["lines"]] == [words]
        after = f"{web.url}/api/events?after={resume['after']}"
        async with client.get(after) as second_tab:
            pieces, reply = await _until(second_tab, "reply")

    assert reply["text"] == f"echo: {words}"
    assert reply["text"].startswith("".join(data["text"] for kind, data in pieces))
    assert {data["in_reply_to"] for kind, data in pieces} == {sent["message_id"]}


async def test_files_download_after_a_reload_from_their_own_chat_only(
    runtime: Runtime, web: ServedWeb
) -> None:
    notes = "Notes ☕\n".encode()
    async with browser(web) as client, browser(web) as stranger:
        for who in (client, stranger):
            await who.get(f"{web.url}/")
        form = _form("keep this", ("notes.txt", notes, "text/plain"))
        assert (await client.post(f"{web.url}/api/messages", data=form)).status == 200
        await _post(client, web, "/export")
        await drain(runtime)

        lines = (await (await client.get(f"{web.url}/api/history")).json())["lines"]
        (sent,) = lines[0]["files"]
        assert sent["name"] == "notes.txt"
        download = await client.get(f"{web.url}{sent['url']}")
        assert (download.status, await download.read()) == (200, notes)
        assert download.headers["Content-Disposition"].startswith("attachment;")
        assert "sandbox" in download.headers["Content-Security-Policy"]

        (exported,) = [line for line in lines if line["files"] and not line["mine"]]
        assert exported["key"] and exported["html"].startswith("<p>")
        export = await client.get(f"{web.url}{exported['files'][0]['url']}")
        assert export.status == 200
        assert "keep this" in (await export.read()).decode()

        for url in (sent["url"], exported["files"][0]["url"], "/api/files/1/9"):
            refused = await stranger.get(f"{web.url}{url}")
            assert refused.status == 404
            assert (await refused.json())["error"] == (
                "That file is not in this conversation (or no longer kept)."
            )
