"""What is up and what is down, told quickly and truthfully.

A ``Health`` holds named probes: the services (database, queue), the workers, and each
enabled channel. A probe's check returns a short detail when its part answers and raises
when it does not; it gets ``TIMEOUT`` seconds. The checks of one round run together, and
callers arriving while a round is under way share it, so a busy prober costs one round at a
time and never holds up the event loop. ``route`` serves the result as ``GET /healthz``: 200
when every part is ok, 503 naming the parts that are down.

``outage`` tells a service being down from any other failure, for the boundaries that turn
it into ``ServiceUnavailable`` (the inbound path) or a later retry (the jobs).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import asyncpg
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, PendingRollbackError
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.errors import chain

TIMEOUT = 0.5  # seconds each check may take before its part counts as down

Kind = Literal["service", "worker", "channel"]
Check = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class Probe:
    name: str
    kind: Kind
    check: Check
    note: Callable[[], str] | None = None  # added to the detail when down (will it heal?)


@dataclass(frozen=True)
class Part:
    name: str
    kind: Kind
    ok: bool
    detail: str


class Health:
    def __init__(self, probes: Sequence[Probe] = (), timeout: float = TIMEOUT) -> None:
        self.probes = list(probes)
        self.timeout = timeout
        self._round: asyncio.Task[list[Part]] | None = None

    def add(self, name: str, kind: Kind, check: Check) -> None:
        self.probes.append(Probe(name, kind, check))

    async def report(self) -> list[Part]:
        if self._round is None or self._round.done():
            self._round = asyncio.create_task(self._check_all(), name="switchboard-health")
        # Shielded: a prober that hangs up must not cancel the round others wait for.
        return await asyncio.shield(self._round)

    async def _check_all(self) -> list[Part]:
        return list(await asyncio.gather(*(self._check(probe) for probe in self.probes)))

    async def _check(self, probe: Probe) -> Part:
        try:
            detail = await asyncio.wait_for(probe.check(), self.timeout)
        except TimeoutError:
            return self._down(probe, f"no answer within {self.timeout:g} s")
        except Exception as exc:
            return self._down(probe, describe(exc))
        return Part(probe.name, probe.kind, True, detail)

    def _down(self, probe: Probe, detail: str) -> Part:
        note = probe.note() if probe.note is not None else ""
        return Part(probe.name, probe.kind, False, f"{detail} ({note})" if note else detail)


def summary(parts: Sequence[Part]) -> dict[str, Any]:
    return {
        "ok": all(part.ok for part in parts),
        "down": [part.name for part in parts if not part.ok],
        "parts": [asdict(part) for part in parts],
    }


def route(health: Health) -> web.RouteDef:
    """``GET /healthz`` for a web listener (Docker healthchecks, load balancers, people)."""

    async def healthz(request: web.Request) -> web.Response:
        found = summary(await health.report())
        return web.json_response(found, status=200 if found["ok"] else 503)

    return web.get("/healthz", healthz)


def describe(exc: BaseException) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line}"[:300].rstrip(": ")


# --- checks ---------------------------------------------------------------------------------


def database(engine: AsyncEngine) -> Check:
    async def check() -> str:
        started = time.perf_counter()
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return f"answered in {_ms_since(started)} ms"

    return check


def queue(redis: Redis) -> Check:
    async def check() -> str:
        started = time.perf_counter()
        await redis.ping()
        return f"answered in {_ms_since(started)} ms"

    return check


def listening(address: Callable[[], tuple[str, int]]) -> Check:
    """A listener that accepts connections at ``address()`` (read when checked: a port
    chosen by the system is known only once it listens)."""

    async def check() -> str:
        host, port = address()
        reachable = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        _, writer = await asyncio.open_connection(reachable, port)
        writer.close()
        await writer.wait_closed()
        return f"listening on {host}:{port}"

    return check


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


# --- outages --------------------------------------------------------------------------------

# SQLSTATE classes meaning the server is out of reach or going away: connection exceptions,
# shut down by an administrator or a crash, not accepting connections yet (starting up).
_DATABASE_DOWN = ("08", "57P01", "57P02", "57P03")
# SQLAlchemy's code for a connection used again after it was lost inside a transaction.
LOST_IN_TRANSACTION = "8s2b"


def outage(exc: BaseException) -> Literal["database", "queue"] | None:
    """Which service ``exc`` (or what caused it) says is unreachable or restarting, or None
    for any other failure (a bad statement, a broken rule, a bug)."""
    for cause in chain(exc):
        if isinstance(cause, RedisConnectionError | RedisTimeoutError):
            return "queue"
        if _database_down(cause):
            return "database"
    return None


def _database_down(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, PendingRollbackError) and exc.code == LOST_IN_TRANSACTION:
        return True
    if isinstance(exc, asyncpg.ConnectionDoesNotExistError | ConnectionError | socket.gaierror):
        return True
    # asyncpg reports a Unix socket that is not there (a stopped server) without a file name,
    # unlike a file that is missing.
    if isinstance(exc, FileNotFoundError) and exc.filename is None:
        return True
    state = getattr(exc, "sqlstate", None)
    return isinstance(state, str) and state.startswith(_DATABASE_DOWN)
