"""What keeps the local web server from being an open door, for every route it serves (the
chat's own and the extra ones, such as webhooks).

In order, outermost first:

1. security headers on every response, refusals included (``on_response_prepare``, which
   also reaches responses streamed before their handler returns);
2. the ``Host`` header must name this Switchboard: loopback names, the address it listens
   on, and ``SWITCHBOARD_WEB_HOSTS``. A page on another site that rebinds its own name to
   127.0.0.1 (DNS rebinding) is answered 421 and never gets a chat cookie;
3. a request that changes something through the chat's cookie (POST, PUT, PATCH, DELETE
   under ``/api/``) must come from the chat's own page: its ``Origin`` (or, lacking one, its
   ``Referer``) names the address it was sent to. Browsers send ``Origin`` on every POST;
   one with neither header is refused (403). Webhooks carry their own secret and are not
   checked here.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
# Listening on every interface names no host.
ANY_ADDRESS = ("", "0.0.0.0", "::")
API_PREFIX = "/api/"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# The page loads its script and style from this server and talks only to it; nothing may
# frame it. A file served for download gets ``sandbox`` on top (see ``FILE_POLICY``).
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
FILE_POLICY = "sandbox; default-src 'none'; frame-ancestors 'none'"
SECURITY_HEADERS = {
    "Content-Security-Policy": PAGE_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: under that policy a browser sends "Origin: null" even on the page's
    # own POSTs, and the origin check below could not tell them from a foreign page's.
    "Referrer-Policy": "same-origin",
}


def host_name(authority: str) -> str:
    """The name in a ``Host`` header or a configured host, without port, lower case:
    ``[::1]:8765`` → ``::1``, ``Chat.Example.com.:443`` → ``chat.example.com``."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        return authority[1:].split("]", 1)[0]
    if authority.count(":") == 1:
        authority = authority.split(":", 1)[0]
    return authority.rstrip(".")


def allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The names the server answers to: loopback, the address it listens on (unless that is
    every interface), and the configured extra names."""
    names = {*LOOPBACK_HOSTS, *(host_name(name) for name in extra)}
    if host_name(bind_host) not in ANY_ADDRESS:
        names.add(host_name(bind_host))
    return frozenset(names - {""})


def wrong_host(name: str) -> str:
    return (
        f"This Switchboard does not answer to the host name {name!r}. If you reach it "
        "through a reverse proxy under that name, add the name to SWITCHBOARD_WEB_HOSTS."
    )


FOREIGN_ORIGIN = (
    "This request did not come from the Switchboard page at this address, so it was refused "
    "(its Origin or Referer header names another address, or neither is sent). Reload the "
    "page and send again."
)


def guards(app: web.Application, hosts: frozenset[str]) -> None:
    """Install the three guards on ``app`` (before any route is added)."""
    app.on_response_prepare.append(_security_headers)
    app.middlewares.extend([_host_check(hosts), _same_origin])


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def _host_check(hosts: frozenset[str]) -> Middleware:
    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        name = host_name(request.headers.get(hdrs.HOST, ""))
        if name not in hosts:
            return web.json_response({"error": wrong_host(name)}, status=421)
        return await handler(request)

    return check_host


@web.middleware
async def _same_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method in UNSAFE_METHODS and request.path.startswith(API_PREFIX):
        source = request.headers.get(hdrs.ORIGIN) or request.headers.get(hdrs.REFERER) or ""
        if _authority(urlsplit(source).netloc) != _authority(request.headers.get(hdrs.HOST, "")):
            return web.json_response({"error": FOREIGN_ORIGIN}, status=403)
    return await handler(request)


def _authority(value: str) -> str:
    """Host and port as sent, without a default port (a proxy may add it to ``Host``)."""
    value = value.strip().lower()
    for default in (":80", ":443"):
        value = value.removesuffix(default)
    return value
