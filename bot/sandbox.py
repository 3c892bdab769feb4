"""Templates a person or a workflow supplies, rendered within bounds, away from the event loop.

``Sandbox`` renders in this process only templates that bot/templating.py proves cheap:
``{{ draft }}`` or ``{{ fetch.body.items|length }}`` cost microseconds and are linear in
their input. Anything else (loops, calls, arithmetic, other filters) goes to one of a few
long-lived child processes (bot/sandbox_child.py), whose memory and CPU time the kernel
caps (RLIMIT_AS, RLIMIT_CPU) and which the parent kills, and replaces, once the wall-clock
deadline passes: a template that loops for hours costs its deadline and one process start,
and the event loop serving everyone else never runs it. Requests go to a child pickled (it
trusts its parent); replies come back as JSON, so nothing a child says is ever unpickled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pickle
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot import replies
from bot.errors import BadTemplate, LimitExceeded, UserFacingError
from bot.sandbox_child import frame
from bot.templating import BoundedEnvironment, Kind, attempt, compiler, render_here, shape

if TYPE_CHECKING:
    from bot.config import TemplateBounds

PROCESSES = 2  # children rendering at once; more requests wait for one
START_SECONDS = 30.0  # for a child to import what it needs (not counted against a template)


class Sandbox:
    """Renders templates within ``bounds``: cheap ones here, the rest in child processes
    started when first needed. Use it as an async context manager, or ``aclose`` it."""

    def __init__(self, bounds: TemplateBounds, processes: int = PROCESSES) -> None:
        self.bounds = bounds
        self._compiled = compiler(BoundedEnvironment(bounds.max_output))
        self._slots = asyncio.Semaphore(processes)
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()

    async def render(self, template: str, variables: Mapping[str, Any]) -> str:
        """The text ``template`` makes; ``BadTemplate`` or ``LimitExceeded`` otherwise."""
        return str(await self._run("text", template, variables))

    async def evaluate(self, expression: str, variables: Mapping[str, Any]) -> Any:
        """The value of a bare expression (``score > 3``); from a child, as JSON holds it."""
        return await self._run("expression", expression, variables)

    async def _run(self, kind: Kind, source: str, variables: Mapping[str, Any]) -> Any:
        found = shape(kind, source)
        if found.cheap:
            compiled = attempt(lambda: self._compiled(kind, source))
            return render_here(compiled, variables, self.bounds.max_output)
        needed = {name: variables[name] for name in found.names if name in variables}
        return _answer(await self._ask(pickle.dumps((kind, source, needed))))

    async def _ask(self, request: bytes) -> dict[str, Any]:
        async with self._slots:
            child = self._idle.pop() if self._idle else await _Child.start(self.bounds)
            self._busy.add(child)
            try:
                reply = await child.ask(request, self.bounds)
            finally:
                self._busy.discard(child)
            if reply.get("leaving"):
                await child.stop()
            else:
                self._idle.append(child)
            return reply

    async def aclose(self) -> None:
        """Stop every child (one in the middle of a render is killed)."""
        children = [*self._idle, *self._busy]
        self._idle.clear()
        await asyncio.gather(*(child.stop() for child in children))

    async def __aenter__(self) -> Sandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _answer(reply: dict[str, Any]) -> Any:
    if "refused" in reply:
        raise LimitExceeded(str(reply["refused"]))
    if "failed" in reply:
        raise BadTemplate(str(reply["failed"]))
    return reply["value"]


# --- the children ---------------------------------------------------------------------------

_ROOT = str(Path(__file__).resolve().parents[1])
_CHILD = f"import sys; sys.path.insert(0, {_ROOT!r}); from bot.sandbox_child import serve; serve()"


class _Child:
    """One child process, asked one thing at a time over length-prefixed frames."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, bounds: TemplateBounds) -> _Child:
        arguments = (bounds.memory_mb, bounds.max_output, bounds.timeout, os.getpid())
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CHILD,
            *map(str, arguments),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        child = cls(process)
        try:
            async with asyncio.timeout(START_SECONDS):
                await child._receive(1024)  # ready
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
            code = await child.kill()
            detail = f"exit code {code}" if code is not None else type(exc).__name__
            raise UserFacingError(replies.template_process_failed(detail)) from exc
        return child

    async def ask(self, request: bytes, bounds: TemplateBounds) -> dict[str, Any]:
        """The child's reply; past the deadline, or if it dies, it is killed and the bound
        it broke raised."""
        try:
            async with asyncio.timeout(bounds.timeout):
                assert self.process.stdin is not None
                self.process.stdin.write(frame(request))
                await self.process.stdin.drain()
                reply: dict[str, Any] = json.loads(await self._receive(bounds.max_output * 6))
                return reply
        except TimeoutError:
            await self.kill()
            raise LimitExceeded(replies.template_too_slow(bounds.timeout)) from None
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            code = await self.kill()
            raise LimitExceeded(_death(code, bounds.timeout)) from None
        except BaseException:  # cancelled mid-render: its answer must not reach the next one
            await self.kill()
            raise

    async def _receive(self, limit: int) -> bytes:
        assert self.process.stdout is not None
        size = int.from_bytes(await self.process.stdout.readexactly(4), "big")
        if size > limit + 4096:
            raise ValueError("a reply larger than the bound")
        return await self.process.stdout.readexactly(size)

    async def kill(self) -> int | None:
        # os.kill, not process.kill(): that one first polls with waitpid, which reaps a child
        # that just died before asyncio's watcher can, and its exit code is lost (255).
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
        return await self.process.wait()

    async def stop(self) -> None:
        """Ask it to leave (its stdin ends); kill it if it does not within a second."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            async with asyncio.timeout(1.0):
                await self.process.wait()
        except TimeoutError:
            await self.kill()


def _death(code: int | None, timeout: float) -> str:
    if code == -signal.SIGXCPU:  # the kernel's CPU limit, when the deadline did not come first
        return replies.template_too_slow(timeout)
    return replies.template_crashed(code)
