"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol, for tests of
the web page: a real browser running the page's own script under its own CSP.

No Playwright: one websocket (aiohttp) and a few protocol commands are enough to open tabs,
run script in them, reload, close them and take screenshots.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

CHROMIUM = "/usr/bin/chromium"
INSTALL = (
    "Debian's chromium is not installed: run scripts/install-system-deps.sh "
    "(or `apt-get install chromium`)"
)
# Kept in every tab before its page runs: what the page's CSP refused.
_WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__violations.push(e.violatedDirective + " " + e.blockedURI));
"""

Json = dict[str, Any]


class Browser:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Json]] = {}
        self.errors: list[str] = []  # exceptions and console errors of every tab
        self._reader = asyncio.create_task(self._read())

    async def call(self, method: str, params: Json | None = None, session: str = "") -> Json:
        message: Json = {"id": next(self._ids), "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        answer = self._waiting[message["id"]] = asyncio.get_running_loop().create_future()
        await self.ws.send_str(json.dumps(message))
        return await asyncio.wait_for(answer, 30)

    async def _read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw.data)
            if "id" in message:
                found = self._waiting.pop(message["id"])
                if "error" in message:
                    found.set_exception(AssertionError(f"DevTools: {message['error']}"))
                else:
                    found.set_result(message.get("result", {}))
            elif message.get("method") == "Runtime.exceptionThrown":
                self.errors.append(str(message["params"]["exceptionDetails"]))
            elif message.get("method") == "Log.entryAdded":
                entry = message["params"]["entry"]
                if entry["level"] == "error" and "favicon" not in entry.get("url", ""):
                    self.errors.append(f"{entry['source']}: {entry['text']}")

    async def tab(self, url: str, width: int = 1280, height: int = 800) -> Tab:
        target = await self.call("Target.createTarget", {"url": "about:blank"})
        attached = await self.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        tab = Tab(self, target["targetId"], attached["sessionId"])
        for domain in ("Page", "Runtime", "Log"):
            await tab.call(f"{domain}.enable")
        await tab.call("Page.addScriptToEvaluateOnNewDocument", {"source": _WATCH})
        await tab.resize(width, height)
        await tab.open(url)
        return tab

    async def cookies(self) -> list[Json]:
        found: list[Json] = (await self.call("Storage.getCookies"))["cookies"]
        return found


class Tab:
    def __init__(self, browser: Browser, target: str, session: str) -> None:
        self.browser, self.target, self.session = browser, target, session

    async def call(self, method: str, params: Json | None = None) -> Json:
        return await self.browser.call(method, params, self.session)

    async def resize(self, width: int, height: int) -> None:
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
        )

    async def open(self, url: str) -> None:
        await self.call("Page.navigate", {"url": url})
        await self.wait_for(
            "document.readyState === 'complete' && Array.isArray(window.__violations)"
        )

    async def reload(self) -> None:
        await self.evaluate("window.__reloading = true")
        await self.call("Page.reload")
        await self.wait_for("!window.__reloading && document.readyState === 'complete'")

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} failed in the page: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """The expression's value once it is truthy (checked every 50 ms)."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(AssertionError):  # a page still loading
                if value := await self.evaluate(expression):
                    return value
            if time.monotonic() > deadline:
                raise AssertionError(f"still false after {timeout} s: {expression}")
            await asyncio.sleep(0.05)

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", {"format": "png"})
        path.write_bytes(base64.b64decode(shot["data"]))

    async def close(self) -> None:
        await self.browser.call("Target.closeTarget", {"targetId": self.target})


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(INSTALL)
    # Its helper processes may still be writing into the profile as it goes.
    with tempfile.TemporaryDirectory(
        prefix="switchboard-chromium-", ignore_cleanup_errors=True
    ) as profile:
        output = open(Path(profile) / "chromium.log", "wb")  # noqa: SIM115 - closed below
        process = await asyncio.create_subprocess_exec(
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # tests run as root in CI containers
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
            stdout=output,
            stderr=output,
            start_new_session=True,  # its own process group: it and its helpers end together
        )
        try:
            async with aiohttp.ClientSession() as client:
                url = await _devtools_url(Path(profile), process)
                async with client.ws_connect(url, max_msg_size=0) as ws:
                    browser = Browser(ws)
                    yield browser
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(browser.call("Browser.close"), 5)
                    browser._reader.cancel()
        finally:
            await _end(process)
            output.close()


async def _end(process: asyncio.subprocess.Process) -> None:
    """Chromium closed by itself (Browser.close), or its process group killed."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(process.wait(), 10)
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


async def _devtools_url(profile: Path, process: asyncio.subprocess.Process) -> str:
    """Chromium writes its DevTools port and path to the profile once it listens."""
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while not port_file.is_file() or len(port_file.read_text().splitlines()) < 2:
        if process.returncode is not None or time.monotonic() > deadline:
            log = (profile / "chromium.log").read_text(errors="replace")
            raise AssertionError(f"chromium did not start:\n{log}")
        await asyncio.sleep(0.05)
    port, path = port_file.read_text().splitlines()[:2]
    return f"ws://127.0.0.1:{port}{path}"
