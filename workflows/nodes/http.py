"""Call an HTTP API. Requests to loopback, private, link-local and other internal addresses
are refused (a workflow must not reach into the machine or the LAN it runs on) unless the
address is listed in SWITCHBOARD_WORKFLOW_HTTP_ALLOW."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import socket
from collections.abc import Sequence
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from pydantic import Field

from workflows.errors import NodeFailed
from workflows.nodes.base import NodeContext, NodeResult, Params

MAX_BODY = 5 * 1024 * 1024

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Auth(Params):
    """Credentials from the secret store, named here and read only when the request is made,
    so the value never appears in a run's recorded input."""

    secret: str
    scheme: Literal["bearer", "basic", "header"] = "bearer"
    header: str = "X-Api-Key"  # for scheme: header


class HTTPParams(Params):
    url: str
    auth: Auth | None = None
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    json_: Any = Field(default=None, alias="json")
    expect: list[int] = Field(default_factory=lambda: list(range(200, 300)))


class HTTP:
    name: ClassVar[str] = "http"
    params: ClassVar[type[Params]] = HTTPParams
    raw: ClassVar[tuple[str, ...]] = ()
    pure: ClassVar[bool] = False

    async def run(self, ctx: NodeContext, params: HTTPParams) -> NodeResult:
        if ctx.core is None:
            raise NodeFailed("this node calls the network: give it a mock in the test")
        allowed = ctx.core.settings.workflow_http_allow
        resolver = GuardedResolver(allowed)
        host = _host(params.url)
        await resolver.resolve(host)  # refuse before connecting, with a clear message
        timeout = aiohttp.ClientTimeout(total=ctx.timeout)
        headers = {**params.headers, **await _auth_headers(ctx, params.auth)}
        connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                return await _request(session, params, headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NodeFailed(f"{params.method} {params.url} failed: {exc}", retryable=True) from exc


async def _auth_headers(ctx: NodeContext, auth: Auth | None) -> dict[str, str]:
    if auth is None or ctx.core is None:
        return {}
    from bot import credentials
    from bot.errors import UserFacingError

    async with ctx.core.sessions() as session:
        try:
            value = await credentials.reveal(
                session, credentials.box(ctx.core.settings), auth.secret
            )
        except UserFacingError as exc:
            raise NodeFailed(exc.text) from exc
    if auth.scheme == "bearer":
        return {"Authorization": f"Bearer {value}"}
    if auth.scheme == "basic":
        return {"Authorization": "Basic " + base64.b64encode(value.encode()).decode()}
    return {auth.header: value}


async def _request(
    session: aiohttp.ClientSession, params: HTTPParams, headers: dict[str, str]
) -> NodeResult:
    async with session.request(
        params.method,
        params.url,
        headers=headers,
        params=params.query,
        data=params.body,
        json=params.json_,
        allow_redirects=False,
    ) as response:
        raw = await response.content.read(MAX_BODY)
        text = raw.decode(response.charset or "utf-8", errors="replace")
        output = {"status": response.status, "headers": dict(response.headers), "body": _body(text)}
        if response.status not in params.expect:
            retryable = response.status == 429 or response.status >= 500
            raise NodeFailed(
                f"{params.method} {params.url} answered HTTP {response.status}: {text[:200]}",
                retryable=retryable,
            )
        return NodeResult(output=output)


def _body(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _host(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NodeFailed(f"{url!r} is not an http(s) URL")
    return parts.hostname


class GuardedResolver(AbstractResolver):
    """Resolves like the system does, then refuses internal addresses (SSRF guard).

    Connections use exactly the addresses checked here, so a name that resolves to a
    public address when checked and a private one when connecting cannot slip through.
    """

    def __init__(self, allowed: Sequence[str]) -> None:
        self.allowed = [ipaddress.ip_network(entry, strict=False) for entry in allowed]

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, family=socket.AF_UNSPEC
        )
        results = []
        for fam, _, proto, _, sockaddr in infos:
            address = ipaddress.ip_address(sockaddr[0])
            self._check(host, address)
            results.append(
                ResolveResult(
                    hostname=host,
                    host=str(address),
                    port=port,
                    family=fam,
                    proto=proto,
                    flags=socket.AI_NUMERICHOST,
                )
            )
        return results

    def _check(self, host: str, address: Address) -> None:
        if any(address in network for network in self.allowed):
            return
        if not address.is_global or address.is_multicast:
            raise NodeFailed(
                f"refusing to call {host} ({address}): it is an internal address. "
                "Allow it with SWITCHBOARD_WORKFLOW_HTTP_ALLOW if this is intended."
            )

    async def close(self) -> None:
        return None
