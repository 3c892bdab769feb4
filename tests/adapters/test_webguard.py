"""The web server's guards over real HTTP: host names (DNS rebinding), the page's own origin
for changes (CSRF), security headers on every response."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web as aioweb

from adapters.web import COOKIE
from adapters.webguard import allowed_hosts, host_name
from bot.app import Runtime
from bot.channels import Received
from bot.conversation import receive
from bot.messages import IncomingMessage
from tests.support import ServedWeb, serving

HOOK_ANSWER = {"run_id": 1}


async def _hook(request: aioweb.Request) -> aioweb.Response:
    """A webhook as workflows serve one: its own secret, no cookie, no Origin."""
    if request.headers.get("X-Secret") != "s3cret":
        return aioweb.json_response({"error": "wrong secret"}, status=401)
    return aioweb.json_response(HOOK_ANSWER, status=202)


async def _busy(request: aioweb.Request) -> aioweb.Response:
    return aioweb.json_response({"ok": False, "down": ["database"]}, status=503)


@pytest.fixture
async def web(runtime: Runtime) -> AsyncIterator[ServedWeb]:
    async def dispatch(incoming: IncomingMessage) -> Received:
        return await receive(runtime.core, incoming)

    routes = [aioweb.post("/hooks/ping", _hook), aioweb.get("/healthz", _busy)]
    async with serving(runtime, dispatch, routes=routes, hosts=["chat.example.com"]) as served:
        yield served


def test_the_names_answered_to() -> None:
    loopback = {"localhost", "127.0.0.1", "::1"}
    assert allowed_hosts("0.0.0.0") == loopback
    assert allowed_hosts("::") == loopback
    assert allowed_hosts("127.0.0.1") == loopback
    assert allowed_hosts("192.168.1.5", ["Chat.Example.com:443", " "]) == loopback | {
        "192.168.1.5",
        "chat.example.com",
    }
    assert [host_name(h) for h in ("[::1]:8765", "LOCALHOST.", "a.b:80", "::1")] == [
        "::1",
        "localhost",
        "a.b",
        "::1",
    ]


async def test_a_request_for_another_host_name_is_refused_everywhere(web: ServedWeb) -> None:
    port = web.server.port
    async with aiohttp.ClientSession() as client:
        for path in ("/", "/api/history", "/healthz", "/static/chat.js"):
            rebound = await client.get(
                f"{web.url}{path}", headers={"Host": f"attacker.example:{port}"}
            )
            assert rebound.status == 421, path
            assert COOKIE not in rebound.cookies
            assert (await rebound.json())["error"] == (
                "This Switchboard does not answer to the host name 'attacker.example'. If you "
                "reach it through a reverse proxy under that name, add the name to "
                "SWITCHBOARD_WEB_HOSTS."
            )
        hook = await client.post(
            f"{web.url}/hooks/ping",
            headers={"Host": "attacker.example", "X-Secret": "s3cret"},
        )
        assert hook.status == 421

        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost"):
            page = await client.get(f"{web.url}/", headers={"Host": host})
            assert page.status == 200, host
        # A reverse proxy passes its public name (SWITCHBOARD_WEB_HOSTS), with or without port.
        for host in ("chat.example.com", "CHAT.example.com:443"):
            proxied = await client.post(
                f"{web.url}/hooks/ping", headers={"Host": host, "X-Secret": "s3cret"}
            )
            assert (proxied.status, await proxied.json()) == (202, HOOK_ANSWER)


async def test_changes_through_the_cookie_must_come_from_the_page(web: ServedWeb) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        await client.get(f"{web.url}/")
        other_port = re.sub(r":\d+$", ":1", web.url)
        for headers in (
            {},
            {"Origin": "http://attacker.example"},
            {"Origin": "null"},
            {"Origin": other_port},  # another local server: same site, another origin
            {"Referer": "http://attacker.example/page"},
        ):
            refused = await client.post(
                f"{web.url}/api/messages", json={"text": "hi"}, headers=headers
            )
            assert refused.status == 403, headers
            assert "did not come from the Switchboard page" in (await refused.json())["error"]

        for headers in (
            {"Origin": web.url},
            {"Referer": f"{web.url}/"},
            # Behind a TLS proxy that names the default port in Host.
            {"Origin": "https://chat.example.com", "Host": "chat.example.com:443"},
        ):
            taken = await client.post(
                f"{web.url}/api/messages", json={"text": "hi"}, headers=headers
            )
            assert taken.status == 200, headers
        # Reading needs no Origin; a webhook has its own secret and needs none either.
        assert (await client.get(f"{web.url}/api/history")).status == 200
        hook = await client.post(f"{web.url}/hooks/ping", headers={"X-Secret": "s3cret"})
        assert hook.status == 202


async def test_every_response_carries_the_security_headers(web: ServedWeb) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        responses = [
            await client.get(f"{web.url}/"),
            await client.get(f"{web.url}/static/chat.js"),
            await client.get(f"{web.url}/static/chat.css"),
            await client.get(f"{web.url}/api/history"),
            await client.get(f"{web.url}/nowhere"),
            await client.get(f"{web.url}/", headers={"Host": "attacker.example"}),
            await client.post(f"{web.url}/api/messages", json={"text": "no origin"}),
            await client.post(f"{web.url}/hooks/ping"),
        ]
        async with client.get(f"{web.url}/api/events") as events:
            responses.append(events)
        for response in responses:
            headers = response.headers
            policy = headers["Content-Security-Policy"]
            assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
            assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["X-Frame-Options"] == "DENY"
            assert headers["Referrer-Policy"] == "same-origin"

        page = await responses[0].text()
        assert "<style" not in page and "style=" not in page
        assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/chat.js" defer>']
        assert responses[1].content_type in ("application/javascript", "text/javascript")
        assert responses[2].content_type == "text/css"


async def test_an_extra_route_replaces_the_chats_own_at_its_path(web: ServedWeb) -> None:
    async with aiohttp.ClientSession() as client:
        health = await client.get(f"{web.url}/healthz")
    assert (health.status, await health.json()) == (503, {"ok": False, "down": ["database"]})
