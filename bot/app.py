"""Composition root: settings → services → storage → queue → commands and personas."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from arq import Worker
from arq.connections import ArqRedis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.registry import build_channels
from bot import access, health, services, status
from bot.channels import Channels, Line, Reports, Wiring
from bot.commands import BUILTINS
from bot.config import Settings
from bot.core import Core
from bot.errors import ServiceUnavailable
from bot.messages import Attachment, ConversationRef, OutgoingMessage
from bot.queue import ArqQueue, connect
from bot.router import CommandRegistry
from bot.storage import db
from personas import store
from personas.commands import COMMANDS as PERSONA_COMMANDS
from personas.responder import PersonaResponder
from workflows import store as workflow_store
from workflows import webhook
from workflows.commands import COMMANDS as WORKFLOW_COMMANDS
from workflows.commands import workflow_command
from workflows.runs import take_answer

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What a Switchboard process holds open: the core, the Redis pool, the endpoints, and
    the health of what it depends on (its services; `up` adds its worker and channels)."""

    core: Core
    redis: ArqRedis
    endpoints: services.Endpoints
    health: health.Health


def build_commands() -> CommandRegistry:
    registry = CommandRegistry()
    registry.extend(BUILTINS)
    registry.extend(access.COMMANDS)
    registry.extend(PERSONA_COMMANDS)
    registry.extend(WORKFLOW_COMMANDS)
    registry.fallbacks.append(workflow_command)
    return registry


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings, *, prepare: bool = True, config: bool = True
) -> AsyncIterator[Runtime]:
    """Start or join the services; with ``prepare``, bring the schema up to date, and with
    ``config`` too, load the personas and workflows of the config dir (commands that only
    read what is stored leave that to the ones that start Switchboard)."""
    endpoints, embedded = await asyncio.to_thread(services.resolve, settings)
    engine = db.make_engine(endpoints.database_url, pool_size=settings.db_pool_size)
    # Health gets a connection of its own: a pool busy with long turns is not a database down.
    probe_engine = db.make_engine(endpoints.database_url, pool_size=1)
    keeper = _keep_alive(embedded)
    redis: ArqRedis | None = None
    try:
        redis = await connect(endpoints.redis_url)
        core = Core(
            settings=settings,
            engine=engine,
            sessions=db.make_sessions(engine),
            queue=ArqQueue(redis, settings.queue_name),
            commands=build_commands(),
            responder=PersonaResponder(),
            interceptors=[take_answer],
        )
        core.channels = channels_for(core, redis)
        async with contextlib.aclosing(core):
            if prepare:
                await prepare_storage(core, config=config)
            yield Runtime(
                core, redis, endpoints, _service_health(settings, probe_engine, redis, embedded)
            )
    finally:
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        if redis is not None:
            await redis.aclose()
        await engine.dispose()
        await probe_engine.dispose()
        if embedded is not None:
            await asyncio.to_thread(embedded.release)


def channels_for(core: Core, redis: ArqRedis) -> Channels:
    """The channels the settings enable, reading what they need through ``core``."""
    from bot import files
    from bot.conversation import message_file, transcript
    from bot.marks import StoredMarks

    async def history(ref: ConversationRef) -> list[Line]:
        return await transcript(core, ref)

    async def stored_file(ref: ConversationRef, message_id: int, index: int) -> Attachment | None:
        return await message_file(core, ref, message_id, index)

    async def content(attachment: Attachment) -> bytes:
        return await files.content(core.engine, attachment)

    def marks(channel: str) -> StoredMarks:
        return StoredMarks(core.engine, channel)

    return build_channels(Wiring(core.settings, redis, history, stored_file, content, marks))


def _keep_alive(embedded: services.EmbeddedServices | None) -> asyncio.Task[None] | None:
    if embedded is None:
        return None
    return asyncio.create_task(services.keep_alive(embedded), name="switchboard-keep-alive")


def _service_health(
    settings: Settings,
    probe_engine: AsyncEngine,
    redis: ArqRedis,
    embedded: services.EmbeddedServices | None,
) -> health.Health:
    return health.Health(
        [
            health.Probe(
                "database",
                "service",
                health.database(probe_engine),
                _comes_back(embedded, settings.database_url),
            ),
            health.Probe(
                "queue", "service", health.queue(redis), _comes_back(embedded, settings.redis_url)
            ),
        ]
    )


def _comes_back(
    embedded: services.EmbeddedServices | None, configured_url: str | None
) -> Callable[[], str]:
    """What /healthz adds to a service that is down: whether it comes back by itself."""

    def note() -> str:
        if configured_url or embedded is None:
            return "an external server: Switchboard does not restart it"
        return embedded.trouble or "embedded: Switchboard restarts it within seconds"

    return note


async def prepare_storage(core: Core, *, config: bool = True) -> None:
    # Every `switchboard chat` comes here: load alembic only when there is something to do.
    if await db.current_revision(core.engine) != db.head_revision():
        await db.upgrade(core.engine)
    if not config:
        return
    config_dir = core.settings.resolved_config_dir
    async with core.sessions.begin() as session:
        loaded, problems = await store.sync(session, config_dir)
    for problem in problems:
        log.warning("persona skipped: %s", problem)
    log.info("personas loaded: %s", ", ".join(loaded))
    async with core.sessions.begin() as session:
        flows, problems = await workflow_store.sync(session, config_dir)
    for problem in problems:
        log.warning("workflow skipped: %s", problem)
    if flows:
        log.info("workflows loaded: %s", ", ".join(flows))


# --- the processes --------------------------------------------------------------------------


async def worker_alive(runtime: Runtime) -> bool:
    from worker.settings import health_check_key

    return bool(await runtime.redis.exists(health_check_key(runtime.core.settings.queue_name)))


def worker_check(runtime: Runtime) -> health.Check:
    """Some worker (ours or another process's) polled the queue within arq's health-check
    interval (6 s)."""

    async def check() -> str:
        if not await worker_alive(runtime):
            raise ServiceUnavailable("worker", "no worker has polled the queue in the last 6 s")
        return "a worker polled the queue in the last 6 s"

    return check


class WorkerLoop:
    """An arq worker in this event loop, built again whenever it stops by itself (its Redis
    went away, or would not answer at start): after RESTART_PAUSE, doubling while it keeps
    stopping, up to MAX_RESTART_PAUSE. A burst worker that finishes is not restarted."""

    def __init__(self, build: Callable[[], Worker]) -> None:
        self.build = build
        self.current = build()
        self.restarts = 0

    async def run(self) -> None:
        pause = RESTART_PAUSE
        while True:
            started = time.monotonic()
            try:
                await self.current.async_run()
                return
            except Exception as exc:
                if time.monotonic() - started > STEADY_SECONDS:
                    pause = RESTART_PAUSE
                log.error(
                    "the worker stopped (%s); starting a new one in %.1f s",
                    health.describe(exc),
                    pause,
                )
            await _abandon(self.current)
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_RESTART_PAUSE)
            self.current = self.build()
            self.restarts += 1


RESTART_PAUSE, MAX_RESTART_PAUSE = 0.5, 10.0
STEADY_SECONDS = 60.0  # a worker that ran this long before stopping starts the pauses over


@contextlib.asynccontextmanager
async def in_process_worker(runtime: Runtime, *, burst: bool = False) -> AsyncIterator[WorkerLoop]:
    from worker.settings import build_worker

    loop = WorkerLoop(
        lambda: build_worker(
            runtime.core, runtime.endpoints.redis_url, burst=burst, handle_signals=False
        )
    )
    task = asyncio.create_task(loop.run(), name="switchboard-worker")
    try:
        yield loop
    finally:
        await _finish_jobs(loop.current, FINISH_JOBS_SECONDS)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await _close(loop.current)


@contextlib.asynccontextmanager
async def running_worker(worker: Worker) -> AsyncIterator[Worker]:
    """Run a ready-made arq worker in this event loop (not restarted: see WorkerLoop); on
    leaving, let its running jobs end, then stop it (arq's own close() would cancel them)."""
    task = asyncio.create_task(worker.async_run(), name="switchboard-worker")
    task.add_done_callback(_worker_ended)
    try:
        yield worker
    finally:
        await _finish_jobs(worker, FINISH_JOBS_SECONDS)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await _close(worker)


def _worker_ended(task: asyncio.Task[None]) -> None:
    """A worker that stops by itself is a fault: say so loudly."""
    if not task.cancelled() and task.exception() is not None:
        log.error("the worker stopped: %r; messages wait for another worker", task.exception())


FINISH_JOBS_SECONDS = 10.0


async def _finish_jobs(worker: Worker, timeout: float) -> None:
    """Stop taking jobs and let the running ones end, so leaving never cuts a reply short."""
    worker.allow_pick_jobs = False
    running = [t for t in worker.tasks.values() if not t.done()]
    if running:
        await asyncio.wait(running, timeout=timeout)


async def _close(worker: Worker) -> None:
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await worker.close()
    except Exception:  # its Redis is gone: close() stopped half-way
        await _abandon(worker)


async def _abandon(worker: Worker) -> None:
    """What close() does, for a worker whose Redis is gone: its jobs are cancelled (they run
    again from the queue), its heartbeat stopped, its connections closed. Redis errors on the
    way are expected and ignored."""
    for task in worker.tasks.values():
        task.cancel()
    await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
    liveness, redis = worker.ctx.get("liveness"), worker.ctx.get("redis")
    with contextlib.suppress(Exception):
        if liveness is not None:
            await liveness.stop()
    with contextlib.suppress(Exception):
        if redis is not None:
            await redis.aclose()


async def run_worker(settings: Settings, *, burst: bool) -> None:
    from worker.settings import build_worker

    async with open_runtime(settings) as runtime:
        # Signals stop this process through the command (cli_support), not through the
        # worker: a worker being rebuilt has no handlers of its own.
        loop = WorkerLoop(
            lambda: build_worker(
                runtime.core, runtime.endpoints.redis_url, burst=burst, handle_signals=False
            )
        )
        try:
            await loop.run()
        finally:
            await _close(loop.current)


async def run_up(
    settings: Settings,
    *,
    host: str,
    port: int,
    ready: ReadyHook | None = None,
    worker: bool = True,
) -> None:
    """`switchboard up`: services, schema, personas, the HTTP server, every enabled channel
    and (unless ``worker`` is off: an ingress process, with workers elsewhere) a worker,
    until a signal; ``/healthz`` tells how each part is."""
    from adapters.http import HttpServer
    from bot.conversation import receive

    async with _stop_signals() as stopping, open_runtime(settings) as runtime:
        channels = runtime.core.channels
        server = HttpServer(host, port, settings.web_hosts)
        server.add(channels.routes())
        server.add([*webhook.routes(runtime.core), health.route(runtime.health)])
        runtime.health.add("worker", "worker", worker_check(runtime))
        runtime.health.add("web", "channel", health.listening(lambda: (server.host, server.port)))
        for name, adapter in channels.items():
            if isinstance(adapter, Reports):
                runtime.health.add(name, "channel", channel_check(name, adapter))
        try:
            await channels.start(lambda incoming: receive(runtime.core, incoming))
            await server.start()
            async with _worker_if(worker, runtime), _publishing(runtime):
                if ready is not None:
                    ready(server.url, runtime)
                await stopping.wait()
        finally:
            await channels.stop()  # first: the web chat's open event streams end
            await server.stop()


@contextlib.asynccontextmanager
async def _worker_if(wanted: bool, runtime: Runtime) -> AsyncIterator[None]:
    """A worker in this process, polling before "ready" is said; or none (ingress only)."""
    if not wanted:
        yield
        return
    async with in_process_worker(runtime):
        await _first_poll(runtime, FIRST_POLL_SECONDS)
        yield


@contextlib.asynccontextmanager
async def _publishing(runtime: Runtime) -> AsyncIterator[None]:
    """This process's health in Redis for `switchboard status`, while it runs."""
    await status.publish_once(runtime.redis, runtime.health, runtime.core.channels)
    task = asyncio.create_task(
        status.publish_forever(runtime.redis, runtime.health, runtime.core.channels),
        name="switchboard-status",
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def undelivered(core: Core, hours: float = 24) -> list[status.Undelivered]:
    """Replies of the last ``hours`` that failed or expired, newest first."""
    from sqlalchemy import select, text

    from bot.storage.models import Outbox

    query = (
        select(Outbox)
        .where(
            Outbox.status.in_(("failed", "expired")),
            Outbox.created_at > text(f"now() - interval '{float(hours)} hours'"),
        )
        .order_by(Outbox.id.desc())
        .limit(100)
    )
    async with core.sessions() as session:
        rows = list(await session.scalars(query))
    return [
        status.Undelivered(
            row.id,
            row.channel,
            row.status,
            row.created_at.timestamp(),
            row.last_error or "",
            str(row.payload.get("text", "")),
        )
        for row in rows
    ]


def channel_check(name: str, adapter: Reports) -> health.Check:
    """A channel with a connection of its own is up while that connection is."""

    async def check() -> str:
        state = adapter.state()
        if not state.connected:
            raise ServiceUnavailable(name, state.last_error or f"{name} is not connected")
        return state.detail or "connected"

    return check


FIRST_POLL_SECONDS = 10.0


async def _first_poll(runtime: Runtime, timeout: float) -> None:
    """Wait (a bounded time) until a worker polls the queue, so "ready" means messages are
    answered; past the bound, /healthz says what is wrong."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(RedisError):
            if await worker_alive(runtime):
                return
        await asyncio.sleep(0.02)


ReadyHook = Callable[[str, Runtime], None]
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.asynccontextmanager
async def _stop_signals() -> AsyncIterator[asyncio.Event]:
    """An event set by SIGINT, SIGTERM or SIGHUP, installed before anything starts."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stopping.set)
    try:
        yield stopping
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


DeltaPrinter = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class ChatOutcome:
    text: str
    ok: bool
    saved: tuple[str, ...] = ()

    def then(self, later: ChatOutcome) -> ChatOutcome:
        """This outcome followed by a later one (a run's result after its start)."""
        return ChatOutcome(
            f"{self.text}\n{later.text}", self.ok and later.ok, self.saved + later.saved
        )


class LocalChat:
    """`switchboard chat`: the terminal channel, joined to a worker (someone else's or ours)."""

    def __init__(self, runtime: Runtime, save_dir: Path) -> None:
        from adapters.terminal import TerminalAdapter

        self.runtime = runtime
        self.terminal = TerminalAdapter(runtime.redis)
        self.save_dir = save_dir

    @property
    def core(self) -> Core:
        return self.runtime.core

    async def select_persona(self, name: str) -> str:
        from bot.conversation import conversation_for
        from personas.commands import set_active

        conversation_id = await conversation_for(self.core, self.terminal.ref)
        async with self.core.sessions.begin() as session:
            persona = await store.by_name(session, name)
            await set_active(session, conversation_id, persona.id)
        return persona.name

    async def fresh_context(self) -> None:
        from bot.conversation import conversation_for, reset_context

        await reset_context(self.core, await conversation_for(self.core, self.terminal.ref))

    async def say(
        self,
        text: str,
        on_delta: DeltaPrinter | None = None,
        attachments: tuple[Attachment, ...] = (),
        *,
        follow_runs: bool = False,
    ) -> ChatOutcome:
        """Send ``text`` and wait for its reply; with ``follow_runs``, also for the result of
        each workflow run it started (until the reply timeout)."""
        from bot.conversation import message_status, receive
        from workflows.runs import started_by

        after = await self.terminal.mark()
        received = await receive(self.core, self.terminal.incoming(text, attachments))
        reply = await self.terminal.wait_reply(
            received.message_id, after, self.core.settings.reply_timeout, on_delta
        )
        status = await message_status(self.core, received.message_id)
        outcome = ChatOutcome(reply.text, status != "failed", await self._kept(reply))
        for run_id in await started_by(self.core, received.message_id) if follow_runs else []:
            outcome = outcome.then(await self._follow(run_id, after))
        return outcome

    async def _follow(self, run_id: int, after: str) -> ChatOutcome:
        """The messages run ``run_id`` sends here, until it stops (ends, or waits for
        someone) and its last message has come, or the reply timeout passes."""
        from workflows.runs import last_message_key
        from workflows.store import PostgresRunStore

        runs, prefix = PostgresRunStore(self.core.autocommit), f"run:{run_id}:"
        deadline = time.monotonic() + self.core.settings.reply_timeout
        shown: list[OutgoingMessage] = []
        while True:
            run = await runs.load(run_id)
            stopped = run.status not in ("queued", "running")
            for entry in await self.terminal.stream.read(self.terminal.user, after, 200):
                after = entry.entry_id
                if entry.out is not None and entry.out.idempotency_key.startswith(prefix):
                    shown.append(entry.out)
            last = last_message_key(run) if stopped else None
            if stopped and (last is None or last in {out.idempotency_key for out in shown}):
                return await self._run_outcome(run_id, run.status, shown, None)
            if time.monotonic() > deadline:
                waited = self.core.settings.reply_timeout
                return await self._run_outcome(run_id, run.status, shown, waited)

    async def _run_outcome(
        self, run_id: int, status: str, shown: list[OutgoingMessage], waited: float | None
    ) -> ChatOutcome:
        from bot import replies

        texts = [out.text for out in shown]
        if waited is not None or status in ("waiting", "cancelled"):
            texts.append(replies.run_goes_on(run_id, status, waited))
        saved = tuple([path for out in shown for path in await self._kept(out)])
        ok = waited is None and status in ("succeeded", "waiting")
        return ChatOutcome("\n".join(texts), ok, saved)

    async def _kept(self, out: OutgoingMessage) -> tuple[str, ...]:
        """The files a message carries, read from the database (a stream entry has only
        their ids) and saved in the chat's folder."""
        from bot.files import content

        kept = [a for a in out.attachments if a.data or a.file_id is not None]
        return tuple(
            [await self._save(a.filename, await content(self.core.engine, a)) for a in kept]
        )

    async def unprompted(self) -> AsyncIterator[str]:
        """Replies that answer no message of ours (workflow posts) and status lines."""
        after = await self.terminal.mark()
        while True:
            for entry in await self.terminal.stream.read(self.terminal.user, after, 5_000):
                after = entry.entry_id
                if entry.out is not None and entry.out.in_reply_to is None:
                    yield entry.out.text
                elif entry.kind == "status":
                    yield str(entry.data["text"])

    async def _save(self, filename: str, data: bytes) -> str:
        path = self.save_dir / filename
        await asyncio.to_thread(path.write_bytes, data)  # up to 25 MB: off the event loop
        return str(path)
