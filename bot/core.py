"""The running parts one process shares, built by a composition root and passed down."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.channels import Channels
from bot.config import Settings
from bot.queue import Queue
from bot.router import CommandRegistry
from bot.turns import Reply, Turn

if TYPE_CHECKING:
    from bot.llm import LLMGateway
    from bot.sandbox import Sandbox
    from bot.tools import ToolRegistry


# Looks at a message before the persona does (an answer a workflow waits for); None: not mine.
Interceptor = Callable[["Core", Turn], Awaitable[Reply | None]]


class Responder(Protocol):
    """Answers a turn that is not a command (the persona layer implements this)."""

    async def respond(self, core: Core, turn: Turn) -> Reply: ...


@dataclass
class Core:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    queue: Queue
    commands: CommandRegistry = field(default_factory=CommandRegistry)
    responder: Responder | None = None
    # The channels replies go out through (composition roots fill it from the settings).
    channels: Channels = field(default_factory=lambda: Channels(()))
    interceptors: list[Interceptor] = field(default_factory=list)
    _llm: LLMGateway | None = None
    _tools: ToolRegistry | None = None
    _sandbox: Sandbox | None = None
    _gateway_import: asyncio.Future[None] | None = field(default=None, repr=False)

    @functools.cached_property
    def autocommit(self) -> AsyncEngine:
        """The same pool, each statement its own transaction: one round trip, no BEGIN."""
        return self.engine.execution_options(isolation_level="AUTOCOMMIT")

    @property
    def llm(self) -> LLMGateway:
        """The gateway, built on first use: importing litellm takes seconds, and the ack
        path never needs it."""
        if self._llm is None:
            from bot.llm import LLMGateway
            from bot.usage import StoredCalls

            self._llm = LLMGateway(self.settings, StoredCalls(self.autocommit))
        return self._llm

    async def load_llm(self) -> None:
        """Import litellm (seconds of work) once, in a thread, so the event loop that serves
        everyone never stops for it: jobs that may call a model await this before they start."""
        if self._gateway_import is None:
            self._gateway_import = asyncio.ensure_future(asyncio.to_thread(_load_gateway))
        await asyncio.shield(self._gateway_import)

    @property
    def sandbox(self) -> Sandbox:
        """Where templates people and workflows supply are rendered, within the settings'
        bounds; its child processes start when a template first needs one."""
        if self._sandbox is None:
            from bot.sandbox import Sandbox

            self._sandbox = Sandbox(self.settings.template_bounds)
        return self._sandbox

    async def aclose(self) -> None:
        """Stop what the core started for itself (the sandbox's child processes)."""
        if self._sandbox is not None:
            await self._sandbox.aclose()

    @property
    def tools(self) -> ToolRegistry:
        """What personas and workflows may call: the shipped tools unless given others."""
        if self._tools is None:
            from bot.tools import catalog

            self._tools = catalog()
        return self._tools


def _load_gateway() -> None:
    from bot import llm

    llm.load()
