"""The one HTTP server of a Switchboard process: the web chat, workflow webhooks, platform
callbacks (Slack's `/slack/events`) and the health check, behind the guards of
``adapters.webguard``. Routes are added before it starts; a later route replaces an
earlier one with the same method and path (so `switchboard up` mounts its whole health
check over the chat's own)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from aiohttp import web

from adapters.webguard import allowed_hosts, guards
from bot.errors import ServiceError

# What any route reads whole (JSON messages, webhook bodies, Slack's payloads); the web
# chat streams its file uploads part by part under limits of its own.
MAX_BODY = 1024 * 1024


class HttpServer:
    """Listens on ``host``:``port`` (0: any free port) and answers to loopback names, the
    address it listens on, and ``hosts`` (the names a reverse proxy forwards)."""

    def __init__(self, host: str, port: int, hosts: Sequence[str] = ()) -> None:
        self.host, self.port = host, port
        self.hosts = allowed_hosts(host, hosts)
        self._routes: dict[tuple[str, str], web.RouteDef] = {}
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def add(self, routes: Iterable[web.RouteDef]) -> None:
        for route in routes:
            self._routes[route.method, route.path] = route

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        guards(app, self.hosts)
        app.router.add_routes(list(self._routes.values()))
        # An open event stream (the web chat's) must not hold up shutdown.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ServiceError(
                f"Switchboard cannot listen on {self.host}:{self.port} ({exc.strerror}). "
                "Is it already running? Choose another port with --port."
            ) from exc
        if self.port == 0:
            self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
