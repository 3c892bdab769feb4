"""The built-in tools, called directly: the clock, the calculator and the web page reader
(against a real HTTP server on loopback)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web

from bot.app import Runtime
from bot.core import Core
from bot.tools.base import ToolContext, ToolError
from bot.tools.calc import Calculate, CalculateParams
from bot.tools.clock import WEEKDAYS, CurrentTime, CurrentTimeParams
from bot.tools.registry import ToolRegistry
from bot.tools.web import ReadWebpage, ReadWebpageParams
from tests.support import serve

OFFLINE = ToolContext(core=None)

# --- current_time ----------------------------------------------------------------------------


async def _now(zone: str) -> Any:
    return (await CurrentTime().run(OFFLINE, CurrentTimeParams(zone=zone))).output


async def test_the_time_is_told_in_the_zone_asked_for() -> None:
    out = await _now("Asia/Kolkata")

    assert out["zone"] == "Asia/Kolkata" and out["iso"].endswith("+05:30")
    moment = datetime.fromisoformat(out["iso"])
    assert abs(moment - datetime.now(ZoneInfo("Asia/Kolkata"))) < timedelta(minutes=1)
    assert out["date"] == moment.strftime("%Y-%m-%d") and out["time"] == moment.strftime("%H:%M")
    assert out["weekday"] == WEEKDAYS[moment.weekday()]


async def test_utc_is_the_default_and_case_is_forgiven() -> None:
    assert (await CurrentTime().run(OFFLINE, CurrentTimeParams())).output["zone"] == "UTC"
    assert (await _now("europe/paris"))["zone"] == "Europe/Paris"


@pytest.mark.parametrize(
    ("zone", "suggested"), [("Europe/Berln", "Europe/Berlin"), ("Tokio", "Asia/Tokyo")]
)
async def test_an_unknown_zone_is_named_with_close_ones(zone: str, suggested: str) -> None:
    with pytest.raises(ToolError) as caught:
        await _now(zone)

    assert f"There is no time zone called {zone!r}." in caught.value.text
    assert repr(suggested) in caught.value.text


# --- calculate -------------------------------------------------------------------------------


async def _calc(expression: str) -> Any:
    result = await Calculate().run(OFFLINE, CalculateParams(expression=expression))
    assert result.output["expression"] == expression
    return result.output["result"]


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("-2 ** 2", -4),
        ("2 ** 3 ** 2", 512),
        ("7 / 2", 3.5),
        ("7 // 2 + 7 % 2", 4),
        ("sqrt(16) + abs(-1)", 5),
        ("max(1, 2.5, min(2, 4))", 2.5),
        ("round(pi, 2) + floor(e) + ceil(0.1)", 6.14),
        ("log(8, 2) + log10(1000) + exp(0)", 7),
        ("2 ** 100", 2**100),
    ],
)
async def test_arithmetic_follows_the_usual_rules(expression: str, value: float) -> None:
    result = await _calc(expression)

    assert result == pytest.approx(value) and type(result) is type(value)


async def test_functions_give_floats_where_the_answer_is_not_whole() -> None:
    assert await _calc("sin(pi / 2) + cos(0) + tan(0)") == 2
    assert await _calc("sqrt(2)") == pytest.approx(1.4142135623730951)


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("1 / 0", "division by zero in '1 / 0'"),
        ("5 % (3 - 3)", "division by zero in"),
        ("__import__('os')", "'__import__' cannot be called: only abs, round, min, max"),
        ("2 ** 99999999", "has an exponent above 1000"),
        ("10.0 ** 400", "is too large to compute"),
        (" * ".join(["9 ** 300"] * 17), "more than 4300 digits"),  # 4,865 digits
        ("round(5, -10 ** 9)", "rounds to more than 4300 digits"),
        ("(1).real", "'(1).real' is not allowed (no attribute access)"),
        ("x + 1", "'x' is an unknown name: the only constants are pi and e"),
        ("'a' * 3", "is not a number"),
        ("[n for n in (1, 2)]", "is not allowed"),
        ("2 ^ 8", "write ** for powers"),
        ("sqrt(-1)", "'sqrt(-1)' cannot be computed (math domain error)"),
        ("(-8) ** 0.5", "is not a real number"),
        ("1 +", "is not an arithmetic expression"),
    ],
)
async def test_what_cannot_be_computed_is_refused_by_name(expression: str, says: str) -> None:
    with pytest.raises(ToolError) as caught:
        await _calc(expression)

    assert says in caught.value.text


async def test_the_registry_checks_the_arguments_and_shows_their_schema() -> None:
    registry = ToolRegistry([CurrentTime(), Calculate(), ReadWebpage()])

    with pytest.raises(ToolError, match="at most 500 characters"):
        await registry.call(OFFLINE, "calculate", {"expression": "1+" * 250 + "1"})
    assert (await registry.call(OFFLINE, "calculate", {"expression": "6*7"})).output["result"] == 42
    for tool in registry.schemas(registry.names()):
        properties = tool["function"]["parameters"]["properties"]
        assert properties and all(p.get("description") for p in properties.values())


# --- read_webpage ----------------------------------------------------------------------------

PAGE = """<!doctype html>
<html><head><title>All about
  owls</title><style>body { color: red }</style>
<script>document.write("<p>scripted</p>")</script></head>
<body><h1>Owls</h1><p>Owls are <b>birds</b>.<br>They hoot at&nbsp;night.</p>
<noscript>Turn on JavaScript</noscript><svg><title>icon</title><text>drawn</text></svg>
<ul><li>Barn owl</li><li>Snowy owl</li></ul></body></html>"""


@pytest.fixture
async def site() -> AsyncIterator[str]:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/page")

    async def elsewhere(request: web.Request) -> web.Response:  # an internal address, as an IP
        raise web.HTTPFound(f"http://127.0.0.2:{request.url.port}/page")

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"/loop/{int(request.match_info['n']) + 1}")

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG\r\n\x1a\n", content_type="image/png")

    async def busy(request: web.Request) -> web.Response:
        return web.Response(status=503, text="busy")

    async with serve(
        web.get("/page", page),
        web.get("/moved", moved),
        web.get("/elsewhere", elsewhere),
        web.get("/loop/{n}", loop),
        web.get("/image.png", image),
        web.get("/busy", busy),
    ) as url:
        yield url


def _allowing_loopback(core: Core) -> Core:
    settings = core.settings.model_copy(update={"workflow_http_allow": ["127.0.0.1/32"]})
    return dataclasses.replace(core, settings=settings)


async def _read(core: Core | None, url: str, **params: Any) -> Any:
    ctx = ToolContext(core=core, timeout=10)
    return (await ReadWebpage().run(ctx, ReadWebpageParams(url=url, **params))).output


async def test_loopback_is_refused_unless_allowed(runtime: Runtime, site: str) -> None:
    with pytest.raises(ToolError) as caught:
        await _read(runtime.core, f"{site}/page")

    assert "refusing to call 127.0.0.1 (127.0.0.1): it is an internal address." in caught.value.text
    assert "SWITCHBOARD_WORKFLOW_HTTP_ALLOW" in caught.value.text


async def test_a_page_is_read_as_text_after_redirects(runtime: Runtime, site: str) -> None:
    out = await _read(_allowing_loopback(runtime.core), f"{site}/moved")

    assert out == {
        "url": f"{site}/page",
        "status": 200,
        "title": "All about owls",
        "text": "Owls\nOwls are birds.\nThey hoot at night.\nBarn owl\nSnowy owl",
        "truncated": False,
    }


async def test_long_text_is_cut_and_says_so(runtime: Runtime, site: str) -> None:
    out = await _read(_allowing_loopback(runtime.core), f"{site}/page", max_chars=4)

    assert out["text"] == "Owls" and out["truncated"] is True


async def test_every_redirect_is_checked_by_the_guard(runtime: Runtime, site: str) -> None:
    with pytest.raises(ToolError, match=r"refusing to call 127\.0\.0\.2 \(127\.0\.0\.2\)"):
        await _read(_allowing_loopback(runtime.core), f"{site}/elsewhere")


async def test_endless_redirects_stop(runtime: Runtime, site: str) -> None:
    with pytest.raises(ToolError, match="redirected more than 5 times"):
        await _read(_allowing_loopback(runtime.core), f"{site}/loop/0")


async def test_binary_content_is_refused(runtime: Runtime, site: str) -> None:
    with pytest.raises(ToolError) as caught:
        await _read(_allowing_loopback(runtime.core), f"{site}/image.png")

    assert "/image.png is image/png, not a web page" in caught.value.text
    assert not caught.value.retryable


async def test_server_errors_may_be_retried(runtime: Runtime, site: str) -> None:
    with pytest.raises(ToolError, match="answered HTTP 503") as caught:
        await _read(_allowing_loopback(runtime.core), f"{site}/busy")

    assert caught.value.retryable


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/", "example.com"])
async def test_only_http_urls_are_read(runtime: Runtime, url: str) -> None:
    with pytest.raises(ToolError, match="is not an http\\(s\\) URL"):
        await _read(runtime.core, url)


async def test_without_the_core_there_is_no_network() -> None:
    with pytest.raises(ToolError, match="needs the network"):
        await _read(None, "https://example.com/")


def test_text_comes_from_blocks_not_scripts() -> None:
    from bot.tools.web import html_text

    title, text = html_text("<title>T</title><pre>a\n  b</pre><table><tr><td>1</td><td>2</td>")
    assert (title, text) == ("T", "a\nb\n1 2")
    assert re.fullmatch(r"\s*", html_text("<script>x</script><style>y</style>")[1])
