"""Read a web page as plain text, so a model can quote and summarise it.

Every hop (the address asked for and each redirect) goes through the SSRF guard in
``bot.netguard``: internal addresses are refused unless SWITCHBOARD_WORKFLOW_HTTP_ALLOW
lists them. Redirects are followed here rather than by aiohttp because aiohttp does not ask
the resolver about an address written as an IP, so each hop is checked before it is made.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import ClassVar
from urllib.parse import urljoin

import aiohttp
from pydantic import Field

from bot.netguard import GuardedResolver, Refused, check_url, decode, read_limited
from bot.tools.base import ToolContext, ToolError, ToolParams, ToolResult

MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
TEXT_TYPES = HTML_TYPES | {"text/plain", "application/json"}
HEADERS = {
    "User-Agent": "Mozilla/5.0 (compatible; Switchboard read_webpage)",
    "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,application/json;q=0.8",
}
META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.I)


class ReadWebpageParams(ToolParams):
    url: str = Field(description="The page's full http(s) address.")
    max_chars: int = Field(
        default=20000, ge=1, le=200000, description="The most characters of text to return."
    )


@dataclass(frozen=True)
class _Page:
    url: str
    status: int
    content_type: str
    body: str
    cut: bool  # the body was longer than netguard.MAX_BODY


class ReadWebpage:
    name: ClassVar[str] = "read_webpage"
    description: ClassVar[str] = (
        "Fetch a web page (HTML, plain text or JSON) and return its title and readable text."
    )
    params: ClassVar[type[ToolParams]] = ReadWebpageParams
    effects: ClassVar[bool] = False
    offline: ClassVar[bool] = False

    async def run(self, ctx: ToolContext, params: ReadWebpageParams) -> ToolResult:
        if ctx.core is None:
            raise ToolError("read_webpage needs the network: give it a mock in the test")
        resolver = GuardedResolver(ctx.core.settings.workflow_http_allow)
        try:
            async with asyncio.timeout(ctx.timeout):
                page = await _fetch(resolver, params.url, ctx.timeout)
        except Refused as exc:
            raise ToolError(exc.text) from exc
        except TimeoutError as exc:
            raise ToolError(
                f"reading {params.url} took longer than {ctx.timeout:g} s", retryable=True
            ) from exc
        except aiohttp.InvalidURL as exc:
            raise ToolError(f"{params.url!r} is not a valid address: {exc}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise ToolError(f"could not read {params.url}: {reason}", retryable=True) from exc
        return ToolResult(output=await _output(page, params.max_chars))


async def _fetch(resolver: GuardedResolver, url: str, timeout: float) -> _Page:
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
    async with aiohttp.ClientSession(
        connector=connector, headers=HEADERS, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as session:
        for _ in range(MAX_REDIRECTS + 1):
            await resolver.resolve(check_url(url))
            async with session.get(url, allow_redirects=False) as response:
                location = response.headers.get("Location")
                if response.status not in REDIRECTS or not location:
                    return await _read(response)
                url = urljoin(str(response.url), location)
    raise ToolError(
        f"the page redirected more than {MAX_REDIRECTS} times (last to {url}); "
        "open the final address directly if you know it."
    )


async def _read(response: aiohttp.ClientResponse) -> _Page:
    url, status, content_type = str(response.url), response.status, response.content_type
    if status >= 400:
        retryable = status == 429 or status >= 500
        hint = "try again later" if retryable else "check the address"
        raise ToolError(
            f"{url} answered HTTP {status} {response.reason}: {hint}.", retryable=retryable
        )
    if content_type not in TEXT_TYPES:
        raise ToolError(
            f"{url} is {content_type}, not a web page: "
            "read_webpage reads HTML, plain text and JSON only."
        )
    raw, cut = await read_limited(response)
    return _Page(url, status, content_type, _decode(raw, response.charset, content_type), cut)


def _decode(raw: bytes, charset: str | None, content_type: str) -> str:
    """Text in the page's own encoding: the header's, else an HTML page's <meta>, else UTF-8."""
    if charset is None and content_type in HTML_TYPES:
        found = META_CHARSET.search(raw[:4096])
        charset = found.group(1).decode("ascii") if found else None
    return decode(raw, charset)


async def _output(page: _Page, max_chars: int) -> dict[str, object]:
    if page.content_type in HTML_TYPES:
        # Parsing megabytes of HTML takes a while: not on the event loop.
        title, text = await asyncio.to_thread(html_text, page.body)
    else:
        title, text = "", page.body
    return {
        "url": page.url,
        "status": page.status,
        "title": title,
        "text": text[:max_chars],
        "truncated": page.cut or len(text) > max_chars,
    }


def html_text(html: str) -> tuple[str, str]:
    """An HTML page's title and readable text: one line per block, no scripts or styles."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).split("\n"))
    return " ".join("".join(parser.title).split()), "\n".join(line for line in lines if line)


SKIPPED = frozenset({"script", "style", "noscript", "template", "svg"})
CELLS = frozenset({"td", "th"})
BLOCKS = frozenset(
    {
        *("address", "article", "aside", "blockquote", "br", "caption", "dd", "details"),
        *("div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form"),
        *("h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav"),
        *("ol", "p", "pre", "section", "summary", "table", "tr", "ul"),
    }
)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self.skipping = 0  # depth inside elements whose text is not for reading
        self.in_title = False
        self.titled = False  # only the first <title>
        self.pre = 0  # depth inside <pre>, where line breaks are the text's own

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in SKIPPED:
            self.skipping += 1
        elif self.skipping:
            return
        elif tag == "title":
            self.in_title = not self.titled
        elif tag in BLOCKS:
            self.pre += 1 if tag == "pre" else 0
            self.parts.append("\n")
        elif tag in CELLS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIPPED:
            self.skipping = max(0, self.skipping - 1)
        elif self.skipping:
            return
        elif tag == "title" and self.in_title:
            self.in_title, self.titled = False, True
        elif tag in BLOCKS:
            self.pre -= 1 if tag == "pre" and self.pre else 0
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        if self.in_title:
            self.title.append(data)
        else:
            self.parts.append(data if self.pre else data.replace("\n", " "))
