"""`switchboard workflows|run|runs|test|templates`: workflows from the shell."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from bot import replies
from bot.cli_support import Typer, run_async, settings_for
from bot.config import Settings

workflows_app = Typer(help="Stored workflows: validate, import, export, versions.")
runs_app = Typer(help="Workflow runs.")
templates_app = Typer(help="Ready workflows to install.")
secrets_app = Typer(help="Credentials, stored encrypted (for workflow http nodes).")


def register(app: typer.Typer) -> None:
    app.add_typer(workflows_app, name="workflows", no_args_is_help=True)
    app.add_typer(runs_app, name="runs", no_args_is_help=True)
    app.add_typer(templates_app, name="templates", no_args_is_help=True)
    app.add_typer(secrets_app, name="secrets", no_args_is_help=True)
    app.command("run")(run)
    app.command("test")(test)


def _quiet() -> Settings:
    return settings_for("WARNING")


# --- documents --------------------------------------------------------------------------------


@workflows_app.command("validate")
def validate(files: Annotated[list[Path], typer.Argument(metavar="FILE")]) -> None:
    """Check workflow files without saving them (exit 1 if any has a problem)."""
    from workflows.validate import validate_file

    bad = 0
    for path in files:
        problems = validate_file(path)
        for problem in problems:
            typer.echo(str(problem), err=True)
        if not problems:
            typer.echo(f"ok: {path}")
        bad += bool(problems)
    raise typer.Exit(1 if bad else 0)


@workflows_app.command("import")
def import_(files: Annotated[list[Path], typer.Argument(metavar="FILE")]) -> None:
    """Save workflow files (YAML or JSON) as new versions: all of them, or none."""
    from workflows import store

    sources = {path: _read(path) for path in files}  # an unreadable file stops it before
    saved: list[store.Saved] = []

    async def work(session: Any) -> None:
        for path, source in sources.items():
            saved.append(await store.save(session, source, origin=str(path)))

    _with_session(work, config=True)
    for one in saved:  # said once the transaction has committed
        typer.echo(f"{one.name}: {f'version {one.version}' if one.changed else 'unchanged'}")


@workflows_app.command("export")
def export(
    name: str,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of YAML.")] = False,
) -> None:
    """Print a workflow's current version."""
    from workflows import store

    async def work(session: Any) -> None:
        _, version = await store.find(session, name)
        typer.echo(json.dumps(version.spec, indent=2) if as_json else version.source.rstrip())

    _with_session(work)


@workflows_app.command("list")
def list_() -> None:
    """The stored workflows, one per line, with their runs, tokens and cost so far."""
    from workflows import store

    async def work(session: Any) -> None:
        for total in await store.totals(session):
            command = f" {total.command}" if total.command else ""
            cost = replies.cost(total.cost_usd)
            typer.echo(
                f"{total.name}{command} (version {total.version}): {total.runs} runs, "
                f"{total.tokens:,} tokens, {cost}"
            )

    _with_session(work, config=True)


@workflows_app.command("webhook")
def webhook(name: str) -> None:
    """Make a new webhook secret for a workflow and show how to call it (shown only once)."""
    settings = _quiet()

    async def work(session: Any) -> None:
        from workflows import store
        from workflows.validate import unaddressed_replies

        secret = await store.rotate_webhook_secret(session, name)
        url = f"http://{settings.web_host}:{settings.web_port}/hooks/{name}"
        typer.echo(f"New secret for {name} (any earlier one no longer works):\n  {secret}")
        typer.echo(
            f"Start a run:\n  curl -X POST {url} -H 'X-Switchboard-Secret: {secret}' "
            "-H 'Content-Type: application/json' -d '{}'"
        )
        _, version = await store.find(session, name)
        if nowhere := unaddressed_replies(store.spec_of(version.source)):
            typer.echo(replies.unaddressed_webhook(nowhere), err=True)

    _with_session(work)


@workflows_app.command("history")
def history(name: str) -> None:
    """Every version of a workflow."""
    from workflows import store

    async def work(session: Any) -> None:
        for version in await store.history(session, name):
            typer.echo(f"v{version.version}  {version.created_at:%Y-%m-%d %H:%M}  {version.origin}")

    _with_session(work)


@workflows_app.command("diff")
def diff(name: str, old: int, new: int) -> None:
    """What changed between two versions."""
    from workflows import store

    async def work(session: Any) -> None:
        typer.echo((await store.diff(session, name, old, new)).rstrip())

    _with_session(work)


@workflows_app.command("plan")
def plan(target: Annotated[str, typer.Argument(metavar="FILE_OR_TEMPLATE")]) -> None:
    """Dry run: the order a file's (or template's) nodes would run in, without running them."""
    from workflows.testing import plan as waves

    spec = _spec(target)
    for number, wave in enumerate(waves(spec), 1):
        typer.echo(f"{number}. {', '.join(_node_line(spec, node) for node in wave)}")


def _node_line(spec: Any, node_id: str) -> str:
    node = spec.nodes[node_id]
    condition = f" when {node.when}" if node.when else ""
    return f"{node_id} ({node.type}{condition})"


# --- tests ------------------------------------------------------------------------------------


def test(target: Annotated[str, typer.Argument(metavar="FILE_OR_TEMPLATE")]) -> None:
    """Run a workflow's `tests:` with mocked node outputs (no model, no network)."""
    from workflows.testing import run_tests

    spec = _spec(target)
    if not spec.tests:
        typer.secho(f"{spec.name} has no tests: add a `tests:` section.", err=True, fg="red")
        raise typer.Exit(1)
    results = asyncio.run(run_tests(spec))
    for result in results:
        mark = "PASS" if result.passed else "FAIL"
        typer.echo(f"{mark} {spec.name}: {result.name}")
        for problem in result.problems:
            typer.echo(f"     {problem}")
    failed = sum(not r.passed for r in results)
    typer.echo(f"{len(results) - failed} passed, {failed} failed")
    raise typer.Exit(1 if failed else 0)


def _spec(target: str) -> Any:
    """A workflow file, else a template of that name."""
    from workflows import templates
    from workflows.errors import WorkflowError
    from workflows.validate import load

    path = Path(target)
    try:
        if path.exists():
            return load(_read(path), source=str(path))
        template = templates.get(target)
        return load(template.source, source=str(template.path))
    except WorkflowError as exc:
        typer.secho(exc.text, err=True, fg="red")
        raise typer.Exit(1) from exc


def _read(path: Path) -> str:
    from workflows.errors import WorkflowError
    from workflows.validate import read_file

    try:
        return read_file(path)
    except WorkflowError as exc:
        typer.secho(exc.text, err=True, fg="red")
        raise typer.Exit(1) from exc


# --- runs -------------------------------------------------------------------------------------


def run(
    name: str,
    input_: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", metavar="KEY=VALUE", help="An input (repeatable)."),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the run to end.")] = True,
    timeout: Annotated[float, typer.Option(metavar="SECONDS", help="Seconds to wait.")] = 600.0,
) -> None:
    """Start a workflow run; print its output when it ends (exit 1 if it fails)."""
    settings = _quiet()
    status = run_async(lambda: _start_and_wait(settings, name, input_ or [], wait, timeout))
    raise typer.Exit(0 if status in ("succeeded", "queued", "waiting") else 1)


async def _start_and_wait(
    settings: Settings, name: str, pairs: list[str], wait: bool, timeout: float
) -> str:
    from bot.app import in_process_worker, open_runtime, worker_alive
    from workflows.inputs import parse_pairs

    async with open_runtime(settings) as runtime:
        run_id, workflow = await _start(runtime.core, name, parse_pairs(pairs))
        typer.echo(f"Started run #{run_id} of {workflow}.", err=True)
        if not wait:
            return "queued"
        if await worker_alive(runtime):
            return await _report(runtime.core, run_id, timeout)
        async with in_process_worker(runtime):
            return await _report(runtime.core, run_id, timeout)


async def _start(core: Any, name: str, given: dict[str, str]) -> tuple[int, str]:
    """A shell run started; inputs it refuses end the command, saying how to give them."""
    from workflows import runs
    from workflows.errors import InputsRefused

    try:
        return await runs.start(core, name, given, trigger="shell")
    except InputsRefused as exc:
        typer.secho(f"error: {exc.text}", err=True, fg="red")
        if exc.missing:
            example = " ".join(f"-i {input_name}=…" for input_name in exc.missing)
            typer.echo(
                f"Give inputs with -i NAME=VALUE: switchboard run {name} {example}", err=True
            )
        raise typer.Exit(2) from exc


async def _report(core: Any, run_id: int, timeout: float) -> str:
    from workflows import runs
    from workflows.state import FINAL_RUN
    from workflows.store import PostgresRunStore

    store = PostgresRunStore(core.autocommit)
    deadline = time.monotonic() + timeout
    while (run := await store.load(run_id)).status not in (*FINAL_RUN, "waiting"):
        if time.monotonic() > deadline:
            typer.secho(f"run #{run_id} is still {run.status} after {timeout:.0f} s", err=True)
            return run.status
        await asyncio.sleep(0.1)
    if run.status == "failed":
        typer.secho(runs.failure_text(run), err=True, fg="red")
    elif run.status == "waiting":
        typer.echo(f"Run #{run_id} is waiting until {run.wait_until or 'it is approved'}.")
    elif run.output is None:
        typer.echo(f"Run #{run_id} finished with no output; `switchboard runs show {run_id}`.")
    else:
        output = run.output
        typer.echo(output if isinstance(output, str) else json.dumps(output, indent=2))
    return run.status


@runs_app.command("list")
def runs_list(
    limit: Annotated[int, typer.Option(metavar="N", help="How many, newest first.")] = 20,
) -> None:
    """The latest runs."""
    settings = _quiet()

    async def work() -> None:
        from bot.app import open_runtime
        from bot.people import SHELL
        from workflows import runs

        async with open_runtime(settings, config=False) as runtime:
            for line in await runs.recent(runtime.core, SHELL, limit):
                typer.echo(line)

    run_async(work)


@runs_app.command("show")
def runs_show(run_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """One run: every node's status, input, output, tokens, cost and timing."""
    settings = _quiet()

    async def work() -> None:
        from bot.app import open_runtime
        from workflows import runs

        async with open_runtime(settings, config=False) as runtime:
            typer.echo(await runs.describe(runtime.core, run_id, detail=True))

    run_async(work)


# --- templates --------------------------------------------------------------------------------


@templates_app.command("list")
def templates_list() -> None:
    """The template names, one per line."""
    from workflows import templates

    for template in templates.available():
        typer.echo(template.name)


@templates_app.command("show")
def templates_show(name: str) -> None:
    """A template's document."""
    typer.echo(_template(name).source.rstrip())


@templates_app.command("install")
def templates_install(name: str) -> None:
    """Copy a template into the config dir and save it as a workflow."""
    settings = _quiet()
    _template(name)

    async def work() -> None:
        from bot.app import open_runtime
        from workflows.commands import install_template

        async with open_runtime(settings) as runtime:
            typer.echo(await install_template(runtime.core, name))

    run_async(work)


def _template(name: str) -> Any:
    from workflows import templates
    from workflows.errors import WorkflowError

    try:
        return templates.get(name)
    except WorkflowError as exc:
        typer.secho(exc.text, err=True, fg="red")
        raise typer.Exit(1) from exc


def _with_session(work: Any, *, config: bool = False) -> None:
    """Run ``work`` in one transaction; ``config``: load the config dir's files first."""
    settings = _quiet()

    async def go() -> None:
        from bot.app import open_runtime

        async with (
            open_runtime(settings, config=config) as runtime,
            runtime.core.sessions.begin() as session,
        ):
            await work(session)

    run_async(go)


# --- secrets ----------------------------------------------------------------------------------


@secrets_app.command("set")
def secrets_set(name: str) -> None:
    """Store a secret; the value is read from standard input (or asked for), never an argument."""
    import sys

    value = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else None
    if value is None:
        value = typer.prompt(f"Value for {name}", hide_input=True)
    if not value:
        typer.secho("error: the value is empty.", err=True, fg="red")
        raise typer.Exit(2)
    settings = _quiet()

    async def work(session: Any) -> None:
        from bot import credentials

        await credentials.store(session, credentials.box(settings), name, value)
        typer.echo(f"Stored the secret {name} (encrypted).")

    _with_session(work)


@secrets_app.command("list")
def secrets_list() -> None:
    """The names of the stored secrets (never their values)."""

    async def work(session: Any) -> None:
        from bot import credentials

        for name in await credentials.names(session):
            typer.echo(name)

    _with_session(work)


@secrets_app.command("delete")
def secrets_delete(name: str) -> None:
    """Forget a secret."""

    async def work(session: Any) -> None:
        from bot import credentials

        found = await credentials.remove(session, name)
        typer.echo(f"Deleted the secret {name}." if found else f"There is no secret called {name}.")

    _with_session(work)
