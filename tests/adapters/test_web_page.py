"""The web chat page in a real browser (headless Chromium) against the real server, worker,
database and queue: what a person sees, under the page's own CSP."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from adapters.local import LocalStream
from adapters.web import COOKIE
from bot import outbox
from bot.app import Runtime, in_process_worker
from bot.channels import Received
from bot.conversation import conversation_for, receive
from bot.errors import ServiceUnavailable
from bot.messages import ConversationRef, IncomingMessage, OutgoingMessage
from bot.storage.models import Message
from tests.adapters.chromium import Browser, Tab, chromium
from tests.fakes.llm_server import FakeLLM
from tests.support import ServedWeb, serving
from workflows import store as workflow_store


class Flaky:
    """The adapter's dispatch, failing first with whatever ``failures`` holds."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.failures: list[Exception] = []
        self.seen: list[IncomingMessage] = []

    async def __call__(self, incoming: IncomingMessage) -> Received:
        self.seen.append(incoming)
        if self.failures:
            raise self.failures.pop(0)
        return await receive(self.runtime.core, incoming)


@pytest.fixture
def dispatch(runtime: Runtime) -> Flaky:
    return Flaky(runtime)


@pytest.fixture
async def web(runtime: Runtime, dispatch: Flaky) -> AsyncIterator[ServedWeb]:
    async with serving(runtime, dispatch) as adapter, in_process_worker(runtime):
        yield adapter


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as opened:
        yield opened
        assert opened.errors == []  # no script error, nothing the CSP refused, no failed load


async def send(tab: Tab, text: str) -> None:
    await tab.evaluate(
        f"document.getElementById('text').value = {json.dumps(text)};"
        "document.getElementById('form').requestSubmit();"
    )


def texts(selector: str) -> str:
    """An expression: the text of every element ``selector`` finds in the log."""
    return f"[...document.querySelectorAll('#log {selector}')].map((e) => e.textContent.trim())"


async def chat_ref(browser: Browser) -> ConversationRef:
    (cookie,) = [c for c in await browser.cookies() if c["name"] == COOKIE]
    return ConversationRef(channel="web", chat=cookie["value"])


MARKDOWN = (
    "Here is **bold** and [a link](https://example.com/docs).\n\n"
    "<script>window.pwned = 1</script> <img src=x onerror='window.pwned = 2'>\n\n"
    "```\nprint('a fairly long line of code that would not fit on a phone screen at all')\n```\n\n"
    "- one\n- two"
)


async def test_a_reply_is_shown_as_safe_markdown_at_phone_and_desktop_width(
    web: ServedWeb, browser: Browser, llm: FakeLLM, tmp_path: Path
) -> None:
    llm.script(MARKDOWN)
    tab = await browser.tab(web.url, 390, 844)
    await send(tab, "show me some markdown")

    assert await tab.wait_for("document.querySelector('#log .bot.html strong')?.textContent") == (
        "bold"
    )
    link = await tab.evaluate(
        "(({href, target, rel}) => ({href, target, rel}))(document.querySelector('#log .bot a'))"
    )
    assert link == {
        "href": "https://example.com/docs",
        "target": "_blank",
        "rel": "noopener noreferrer nofollow",
    }
    assert await tab.evaluate(texts(".bot li")) == ["one", "two"]
    assert await tab.evaluate("document.querySelectorAll('#log script, #log img').length") == 0
    assert await tab.evaluate("window.pwned === undefined && window.__violations.length") == 0
    assert "<script>window.pwned = 1</script>" in (await tab.evaluate(texts(".bot")))[0]
    # Readable on a phone: nothing wider than the screen but the code block, which scrolls.
    assert await tab.evaluate("document.documentElement.scrollWidth") <= 390
    assert await tab.evaluate("(({scrollWidth, clientWidth}) => scrollWidth <= clientWidth)(log)")
    assert await tab.evaluate("getComputedStyle(document.querySelector('#log pre')).overflowX") == (
        "auto"
    )
    await tab.screenshot(tmp_path / "chat-390.png")
    await tab.resize(1280, 800)
    await tab.screenshot(tmp_path / "chat-1280.png")
    assert (tmp_path / "chat-390.png").read_bytes().startswith(b"\x89PNG")


async def test_another_tab_sees_messages_replies_workflow_posts_and_status_lines(
    runtime: Runtime, web: ServedWeb, browser: Browser
) -> None:
    first = await browser.tab(web.url)
    second = await browser.tab(web.url)  # same browser: the same chat
    await send(first, "hello from the first tab")

    for tab in (first, second):
        await tab.wait_for(f"{texts('.bot')}.includes('echo: hello from the first tab')")
        assert await tab.evaluate(texts(".me")) == ["hello from the first tab"]

    ref = await chat_ref(browser)
    conversation_id = await conversation_for(runtime.core, ref)
    result = OutgoingMessage(ref, "Run #1 of *digest* finished.", idempotency_key="run:1:done")
    await outbox.post(runtime.core, conversation_id, result)
    live = LocalStream(runtime.redis, "web")
    await live.status(ref, "run:2", "Run #2: step 1 of 2")
    await live.status(ref, "run:2", "Run #2: step 2 of 2")

    for tab in (first, second):
        await tab.wait_for(f"{texts('.bot em')}.includes('digest')")
        await tab.wait_for(f"{texts('.status')}.includes('Run #2: step 2 of 2')")
        assert await tab.evaluate(texts(".status")) == ["Run #2: step 2 of 2"]
        assert len(await tab.evaluate(texts(".bot"))) == 2


async def test_a_reload_while_a_reply_is_written_shows_it_whole_and_once(
    runtime: Runtime, web: ServedWeb, browser: Browser, llm: FakeLLM
) -> None:
    llm.chunk_delay = 0.2
    words = "one two three four five six seven eight nine ten eleven twelve"
    tab = await browser.tab(web.url)
    await send(tab, words)
    await tab.wait_for("document.querySelector('#log .bot.writing')?.textContent.length > 6")

    await tab.reload()
    being_written = await tab.wait_for(
        "document.querySelector('#log .bot.writing')?.textContent", timeout=10
    )
    assert being_written.startswith("echo: one")  # from its first piece, not from the reload
    await tab.wait_for("!!document.querySelector('#log .bot.html')")
    assert await tab.evaluate(texts(".me")) == [words]
    assert await tab.evaluate(texts(".bot")) == [f"echo: {words}"]


async def test_download_links_stay_after_a_reload(
    runtime: Runtime, web: ServedWeb, browser: Browser
) -> None:
    tab = await browser.tab(web.url)
    await send(tab, "/export")
    link = "document.querySelector('#log .bot .files a')"
    assert (await tab.wait_for(f"{link}?.getAttribute('href')")).startswith("/api/files/")

    await tab.reload()
    href = await tab.wait_for(f"{link}?.getAttribute('href')")
    assert href.startswith("/api/files/")
    exported = await tab.evaluate(f"fetch({json.dumps(href)}).then((r) => r.text())")
    assert exported.startswith("# Conversation")
    assert (await tab.evaluate(f"{link}.textContent")).startswith("Download ")


async def test_a_message_refused_while_the_database_is_down_is_sent_again_once(
    runtime: Runtime, web: ServedWeb, browser: Browser, dispatch: Flaky
) -> None:
    dispatch.failures.append(ServiceUnavailable("database", "connection refused"))
    tab = await browser.tab(web.url)
    await send(tab, "are you there?")

    waiting = await tab.wait_for(f"{texts('.bot.pending')}[0]?.includes('Sending again')")
    assert waiting
    await tab.wait_for(f"{texts('.bot')}.includes('echo: are you there?')")
    assert len({m.external_id for m in dispatch.seen}) == 1 and len(dispatch.seen) == 2
    async with runtime.core.sessions() as session:
        stored = await session.scalar(
            select(func.count()).select_from(Message).where(Message.direction == "in")
        )
    assert stored == 1
    refused = [e for e in browser.errors if "status of 503" in e]
    assert len(refused) == 1  # the browser's own console line for the refused POST
    browser.errors.remove(refused[0])


async def test_closing_a_tab_prints_nothing_on_the_server(
    web: ServedWeb, browser: Browser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tab = await browser.tab(web.url)
    await _listeners(web, 1)  # the page follows its events
    await tab.close()
    await _listeners(web, 0)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def _listeners(web: ServedWeb, count: int) -> None:
    async def wait() -> None:
        while web.listeners != count:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(wait(), 10)


APPROVE = """
name: publish
command: /publish
inputs:
  text: {type: string, description: what to publish}
nodes:
  check: {type: approval, message: "Publish '{{ text }}'?"}
  go: {type: reply, needs: [check], when: "check.approved", text: "Published: {{ text }}"}
"""


async def test_an_approval_is_answered_by_its_button(
    runtime: Runtime, web: ServedWeb, browser: Browser, tmp_path: Path
) -> None:
    async with runtime.core.sessions.begin() as session:
        await workflow_store.save(session, APPROVE, origin="test")
    tab = await browser.tab(web.url, 390, 844)
    await send(tab, "/publish text=hello")

    labels = await tab.wait_for(
        "[...document.querySelectorAll('#log .buttons button')].map((b) => b.textContent)"
        ".join() || null"
    )
    await tab.screenshot(tmp_path / "approval.png")
    await tab.evaluate("document.querySelector('#log .buttons button').click()")
    done = await tab.wait_for(f"{texts('.bot')}.find((t) => t === 'Published: hello') || null")

    assert labels == "Approve,Reject"
    assert done == "Published: hello"
    assert await tab.evaluate(texts(".me")) == ["/publish text=hello", "/approve 1"]
    assert await tab.evaluate("document.querySelectorAll('#log .buttons').length") == 0
