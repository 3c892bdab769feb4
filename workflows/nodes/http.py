"""Call an HTTP API. Requests to loopback, private, link-local and other internal addresses
are refused (a workflow must not reach into the machine or the LAN it runs on) unless the
address is listed in SWITCHBOARD_WORKFLOW_HTTP_ALLOW."""

from __future__ import annotations

import base64
import json
import time
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import aiohttp
from pydantic import Field

from bot import audit
from bot.netguard import GuardedResolver, Refused, check_url, decode, read_limited
from workflows.errors import NodeFailed
from workflows.nodes.base import NodeContext, NodeResult, Params


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
        """Make the request; each attempt is written to the audit log."""
        if ctx.core is None:
            raise NodeFailed("this node calls the network: give it a mock in the test")
        started = time.perf_counter()
        try:
            result = await _call(ctx, params)
        except NodeFailed as exc:
            await _audit(ctx, params, started, {"error": exc.text}, "error")
            raise
        await _audit(ctx, params, started, {"status": result.output["status"]}, "ok")
        return result


async def _audit(
    ctx: NodeContext, params: HTTPParams, started: float, data: dict[str, Any], status: str
) -> None:
    """Where the request went (without its query string, headers or body, which may carry
    credentials), how it ended and how long it took."""
    assert ctx.core is not None
    parts = urlsplit(params.url)
    await audit.record(
        ctx.core.autocommit,
        actor=f"run:{ctx.run_id}/{ctx.node_id}",
        action="http",
        subject=f"{params.method} {parts.scheme}://{parts.netloc}{parts.path}",
        status=status,
        data={
            **data,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            "run_id": ctx.run_id,
            "node_id": ctx.node_id,
            "attempt": ctx.attempt,
        },
    )


async def _call(ctx: NodeContext, params: HTTPParams) -> NodeResult:
    assert ctx.core is not None
    allowed = ctx.core.settings.workflow_http_allow
    resolver = GuardedResolver(allowed)
    try:
        # Refuse before connecting, with a clear message: aiohttp does not ask the
        # resolver about a URL whose host is an IP address.
        await resolver.resolve(host := check_url(params.url))
    except Refused as exc:
        raise NodeFailed(exc.text) from exc
    except OSError as exc:  # the name does not resolve (now)
        raise NodeFailed(f"cannot find {host}: {exc}", retryable=True) from exc
    timeout = aiohttp.ClientTimeout(total=ctx.timeout)
    headers = {
        **_idempotency(ctx, params),
        **params.headers,
        **await _auth_headers(ctx, params.auth),
    }
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            return await _request(session, params, headers)
    except Refused as exc:  # the name resolved to an internal address when connecting
        raise NodeFailed(exc.text) from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise NodeFailed(f"{params.method} {params.url} failed: {exc}", retryable=True) from exc


def _idempotency(ctx: NodeContext, params: HTTPParams) -> dict[str, str]:
    """A request that changes something carries the same ``Idempotency-Key`` each time this
    node of this run sends it (a retry, or a run resumed after a crash), so an API that
    honours the header acts once. A key given in ``headers`` wins."""
    if params.method in ("GET", "HEAD"):
        return {}
    return {"Idempotency-Key": f"switchboard-{ctx.call_key}"}


async def _auth_headers(ctx: NodeContext, auth: Auth | None) -> dict[str, str]:
    if auth is None:
        return {}
    assert ctx.core is not None  # run() refuses to call without one
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
        raw, cut = await read_limited(response)
        text = decode(raw, response.charset)
        output = {
            "status": response.status,
            "headers": dict(response.headers),
            "body": text if cut else _body(text),  # a cut JSON document is no longer JSON
            "truncated": cut,  # the body was longer than 5 MB: only its start is here
        }
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
