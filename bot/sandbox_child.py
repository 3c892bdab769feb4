"""Inside a sandbox's child process: confine itself, then render what the parent sends.

Started by bot/sandbox.py as ``python -c "…serve()" MEMORY_MB MAX_OUTPUT TIMEOUT PARENT``.
Each request is a length-prefixed pickle of (kind, source, variables); each reply a
length-prefixed JSON object: ``{"value": …}``, ``{"refused": sentence}`` for a broken
bound, or ``{"failed": reason}`` for a template that cannot run. It leaves when its stdin
ends, and the kernel kills it when its parent dies or its CPU time runs out.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import resource
import signal
import sys
from collections.abc import Callable
from typing import IO

from bot import replies
from bot.errors import BadTemplate, LimitExceeded
from bot.templating import (
    BoundedEnvironment,
    Compiled,
    Kind,
    attempt,
    check_size,
    compiler,
    render_here,
)
from bot.values import to_json

NICENESS = 10  # added to the child's scheduling niceness: the core is served first


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def serve() -> None:
    """A child's life: confine itself, say it is ready, answer requests until stdin ends."""
    memory_mb, max_output, timeout, parent = sys.argv[1:5]
    _confine(int(memory_mb), int(parent))
    env = BoundedEnvironment(int(max_output))
    compiled = compiler(env)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    _send(stdout, '{"ready": true}')
    while (request := _read_frame(stdin)) is not None:
        _allow_cpu(float(timeout))
        reply, leaving = _serve_one(compiled, request, int(max_output), int(memory_mb))
        _send(stdout, reply)
        if leaving:
            return


def _serve_one(
    compiled: Callable[[Kind, str], Compiled], request: bytes, max_output: int, memory_mb: int
) -> tuple[str, bool]:
    """The reply as JSON text, and whether this child must leave after sending it."""
    try:
        kind, source, variables = pickle.loads(request)
        value = render_here(attempt(lambda: compiled(kind, source)), variables, max_output)
        encoded = to_json(value)
        if kind == "expression":
            check_size(len(encoded), max_output)
        return '{"value": ' + encoded + "}", False
    except LimitExceeded as exc:
        return json.dumps({"refused": exc.text}), False
    except BadTemplate as exc:
        return json.dumps({"failed": exc.text}), False
    except MemoryError:  # what is left may be fragile: answer, then make way for a new child
        refusal = replies.template_too_much_memory(memory_mb)
        return json.dumps({"refused": refusal, "leaving": True}), True
    except Exception as exc:  # a value JSON cannot hold (it contains itself)
        return json.dumps({"failed": str(exc) or type(exc).__name__}), False


def _send(stream: IO[bytes], reply: str) -> None:
    stream.write(frame(reply.encode()))
    stream.flush()


def _read_frame(stream: IO[bytes]) -> bytes | None:
    head = stream.read(4)
    if len(head) < 4:
        return None  # the parent closed our stdin, or is gone
    return stream.read(int.from_bytes(head, "big"))


def _confine(memory_mb: int, parent: int) -> None:
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # A template that burns its CPU bound yields the processor to everyone else's replies.
    os.nice(NICENESS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is for the parent, which stops us
    _die_with_parent()
    if os.getppid() != parent:  # it died before we asked
        sys.exit(0)


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent dies, even mid-render."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _allow_cpu(seconds: float) -> None:
    """Let the next render use ``seconds`` more of CPU (and a second of slack) before the
    kernel stops the process: a backstop for when the parent cannot."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + seconds) + 1
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
