"""The SSRF guard every outgoing request of a workflow or a tool goes through.

Loopback, private, link-local and other internal addresses are refused (a workflow or a
model must not reach into the machine or the LAN Switchboard runs on) unless the address is
listed in SWITCHBOARD_WORKFLOW_HTTP_ALLOW.

aiohttp skips the resolver for a URL whose host is an IP address, so a caller checks every
URL it requests (``check_url``, then ``GuardedResolver.resolve``) before connecting, and
also passes the resolver to the connector, which then connects only to addresses it checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from bot.errors import UserFacingError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(UserFacingError):
    """A request the guard will not make; ``text`` says why and how to allow it."""


def check_url(url: str) -> str:
    """The host an http(s) URL names; anything else is refused."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # a malformed IPv6 literal, say
        host = None
    if not host or parts.scheme not in ("http", "https"):
        raise Refused(f"{url!r} is not an http(s) URL")
    return host


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
            raise Refused(
                f"refusing to call {host} ({address}): it is an internal address. "
                "Allow it with SWITCHBOARD_WORKFLOW_HTTP_ALLOW if this is intended."
            )

    async def close(self) -> None:
        return None


MAX_BODY = 5 * 1024 * 1024  # of a response read by a workflow or a tool


def decode(raw: bytes, charset: str | None) -> str:
    """Text in the charset given, or UTF-8 when none is given or Python does not know it."""
    try:
        return raw.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return raw.decode("utf-8", errors="replace")


async def read_limited(
    response: aiohttp.ClientResponse, limit: int = MAX_BODY
) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of a body, and whether there was more (``content.read(n)``
    would stop at the first chunk that arrives)."""
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            return bytes(body[:limit]), True
    return bytes(body), False
