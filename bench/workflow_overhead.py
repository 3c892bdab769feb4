"""Engine overhead per node, state persisted, against LangGraph with its Postgres checkpointer.

Two graphs of no-op nodes (``template`` with a constant text): a 50-node chain, and a 50-way
fan-out (one start node, 50 parallel nodes, one join; its time is divided by the 50). Ours
runs through ``Engine`` with ``PostgresRunStore`` on the embedded Postgres, exactly as a
worker does: the workflow is saved, a run created, and ``engine.advance(run_id)`` timed —
the load, each wave's finished steps written before the next wave starts (no-op nodes are
pure: they are not also written when they start), and the run's end written with the last
wave's steps. Nothing is subtracted. The same engine on ``MemoryStore`` is there for
reference.

The peer: the same graphs as LangGraph ``StateGraph``s (async no-op nodes returning a small
update; the fan-out through a list reducer), ``ainvoke`` timed without a checkpointer, with
``InMemorySaver``, and with ``AsyncPostgresSaver`` on the same Postgres server — with its
default durability ("async": a step's checkpoint is written while the next step runs) and
with "sync" (written before the next step starts, like ours).

Each figure is the median of ``--repeats`` runs after ``--warmup`` unmeasured ones.
Targets: ≤ 1 ms per persisted node, and fewer ms per node than LangGraph + Postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypedDict

from bench._common import emit, quiet_logs, say, settings, temp_home
from bot.app import Runtime, open_runtime
from bot.config import TemplateBounds
from bot.messages import Attachment, ConversationRef
from bot.sandbox import Sandbox
from workflows import runs, store
from workflows.engine import Engine
from workflows.state import MemoryStore, RunState
from workflows.validate import load

WIDTH = 50
LIMITS = f"limits: {{max_parallel: {WIDTH}, max_steps: {4 * WIDTH}}}"


def chain_source(name: str) -> str:
    nodes = ["  n0: {type: template, text: ok}"]
    nodes += [f"  n{i}: {{type: template, needs: [n{i - 1}], text: ok}}" for i in range(1, WIDTH)]
    return "\n".join([f"name: {name}", LIMITS, "nodes:", *nodes]) + "\n"


def fanout_source(name: str) -> str:
    fans = [f"f{i}" for i in range(WIDTH)]
    nodes = ["  start: {type: template, text: ok}"]
    nodes += [f"  {f}: {{type: template, needs: [start], text: ok}}" for f in fans]
    nodes += [f"  join: {{type: template, needs: [{', '.join(fans)}], text: ok}}"]
    return "\n".join([f"name: {name}", LIMITS, "nodes:", *nodes]) + "\n"


Once = Callable[[], Awaitable[float]]  # one run, returns its seconds
Target = ConversationRef | None


async def median_ms_per_node(once: Once, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        await once()
    times = [await once() for _ in range(repeats)]
    return round(statistics.median(times) * 1000 / WIDTH, 4)


# --- ours -----------------------------------------------------------------------------------


def persisted(runtime: Runtime, name: str) -> Once:
    core, engine = runtime.core, runs.engine(runtime.core)

    async def once() -> float:
        current = await store.current(core.autocommit, name)
        assert current is not None
        run_id = await store.create_run(
            core.autocommit,
            current,
            inputs={},
            trigger="shell",
            ref=None,
            conversation_id=None,
            user_id=None,
        )
        assert run_id is not None
        started = time.perf_counter()
        run = await engine.advance(run_id)
        elapsed = time.perf_counter() - started
        assert run.status == "succeeded", (run.status, run.error)
        return elapsed

    return once


def in_memory(source: str, workspace: Path) -> Once:
    spec, memory = load(source), MemoryStore()

    async def post(
        run: RunState, node: str, text: str, files: tuple[Attachment, ...], to: Target
    ) -> None:
        raise AssertionError("no node posts")

    async def wake(run: RunState, when: datetime) -> None:
        raise AssertionError("no node waits")

    # Its templates are plain text: the sandbox never starts a child process here.
    engine = Engine(None, memory, post, wake, workspace, Sandbox(TemplateBounds()))

    async def once() -> float:
        run_id = len(memory.runs) + 1
        run = memory.add(RunState(id=run_id, workflow=spec.name, version=1, spec=spec))
        started = time.perf_counter()
        await engine.advance(run.id)
        elapsed = time.perf_counter() - started
        assert run.status == "succeeded", (run.status, run.error)
        return elapsed

    return once


# --- the peer -------------------------------------------------------------------------------


class ChainState(TypedDict):
    value: str


class FanState(TypedDict):
    out: Annotated[list[str], operator.add]


async def set_value(state: ChainState) -> dict[str, Any]:
    return {"value": "ok"}


async def append(state: FanState) -> dict[str, Any]:
    return {"out": ["ok"]}


def langgraph_chain(checkpointer: Any = None) -> Any:
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(ChainState)
    names = [f"n{i}" for i in range(WIDTH)]
    for name in names:
        graph.add_node(name, set_value)
    for before, after in zip([START, *names], [*names, END], strict=True):
        graph.add_edge(before, after)
    return graph.compile(checkpointer=checkpointer)


def langgraph_fanout(checkpointer: Any = None) -> Any:
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(FanState)
    fans = [f"f{i}" for i in range(WIDTH)]
    graph.add_node("start", append)
    graph.add_node("join", append)
    graph.add_edge(START, "start")
    for fan in fans:
        graph.add_node(fan, append)
        graph.add_edge("start", fan)
    graph.add_edge(fans, "join")
    graph.add_edge("join", END)
    return graph.compile(checkpointer=checkpointer)


def invoking(graph: Any, start: dict[str, Any], durability: str | None = None) -> Once:
    async def once() -> float:
        config = {"recursion_limit": 4 * WIDTH, "configurable": {"thread_id": uuid.uuid4().hex}}
        started = time.perf_counter()
        await graph.ainvoke(start, config, durability=durability)
        return time.perf_counter() - started

    return once


async def langgraph_figures(pg_url: str, warmup: int, repeats: int) -> dict[str, float]:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    builds: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
        "chain": (langgraph_chain, {"value": ""}),
        "fanout": (langgraph_fanout, {"out": []}),
    }
    found: dict[str, float] = {}

    async def measure(key: str, once: Once) -> None:
        found[key] = await median_ms_per_node(once, warmup, repeats)
        say(f"  {key}: {found[key]} ms/node")

    async with AsyncPostgresSaver.from_conn_string(pg_url) as saver:
        await saver.setup()
        for shape, (build, start) in builds.items():
            await measure(f"langgraph_mem_{shape}", invoking(build(), start))
            saved_in_memory = build(InMemorySaver())
            await measure(f"langgraph_inmemorysaver_{shape}", invoking(saved_in_memory, start))
            await measure(f"langgraph_pg_{shape}", invoking(build(saver), start))
            await measure(f"langgraph_pg_sync_{shape}", invoking(build(saver), start, "sync"))
    return found


# --- the run --------------------------------------------------------------------------------


def require_peer() -> None:
    try:
        import langgraph.checkpoint.postgres.aio  # noqa: F401
    except ImportError as exc:
        raise SystemExit(
            f"the peer is missing ({exc}): install the bench extra "
            "(langgraph, langgraph-checkpoint-postgres, psycopg[binary])"
        ) from exc


async def main(args: argparse.Namespace) -> None:
    require_peer()
    quiet_logs()
    found: dict[str, float] = {}
    with temp_home() as home, tempfile.TemporaryDirectory() as scratch:
        say(f"starting embedded services in {home}")
        async with open_runtime(settings(home)) as runtime:
            for shape, source in (("chain", chain_source), ("fanout", fanout_source)):
                async with runtime.core.sessions.begin() as session:
                    await store.save(session, source(f"bench-{shape}"), origin="bench")
                say(f"ours, {shape} of {WIDTH} no-op nodes: {args.repeats} runs, median")
                runners = {
                    f"per_node_ms_{shape}": persisted(runtime, f"bench-{shape}"),
                    f"memory_per_node_ms_{shape}": in_memory(source("mem"), Path(scratch)),
                }
                for key, once in runners.items():
                    found[key] = await median_ms_per_node(once, args.warmup, args.repeats)
                    say(f"  {key}: {found[key]} ms/node")
            say("LangGraph, the same graphs (no checkpointer, InMemorySaver, AsyncPostgresSaver)")
            pg_url = runtime.endpoints.database_url.replace(
                "postgresql+asyncpg://", "postgresql://"
            )
            found.update(await langgraph_figures(pg_url, args.warmup, args.repeats))

    ratio = round(found["per_node_ms_chain"] / found["langgraph_pg_chain"], 3)
    worst = max(found["per_node_ms_chain"], found["per_node_ms_fanout"])
    say(
        f"ours persisted: chain {found['per_node_ms_chain']} ms/node, fan-out "
        f"{found['per_node_ms_fanout']} ms/node "
        f"(target <= 1 ms: {'met' if worst <= 1 else 'MISSED'})"
    )
    say(
        f"LangGraph + Postgres: chain {found['langgraph_pg_chain']} ms/node; ratio ours/theirs "
        f"{ratio} (target < 1: {'met' if ratio < 1 else 'MISSED'})"
    )
    emit(
        "workflow_overhead",
        per_node_ms_chain=found.pop("per_node_ms_chain"),
        per_node_ms_fanout=found.pop("per_node_ms_fanout"),
        langgraph_mem_per_node_ms=found["langgraph_mem_chain"],
        langgraph_pg_per_node_ms=found["langgraph_pg_chain"],
        ratio_vs_langgraph_pg=ratio,
        **found,
        nodes=WIDTH,
        repeats=args.repeats,
        warmup=args.warmup,
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description="Workflow engine overhead per node vs LangGraph.")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
