"""A workflow's ``tool`` node calls a registered tool: checked when the document is saved,
audited when it runs, mockable (or run for real when offline) in a workflow's tests."""

from __future__ import annotations

from textwrap import dedent

from sqlalchemy import select

from bot.app import Runtime
from bot.storage.models import AuditEvent, WorkflowRun
from tests.support import delivered, drain, say
from workflows import store
from workflows.testing import run_tests
from workflows.validate import WorkflowInvalid, load

SPLIT = """\
name: split
command: /split
inputs:
  total: {type: number, description: the bill}
  people: {type: integer, default: 3}
nodes:
  share:
    type: tool
    tool: calculate
    args: {expression: "{{ total }} / {{ people }}"}
  say:
    type: reply
    needs: [share]
    text: "Each pays {{ share.result }}."
tests:
  - name: the real calculator runs offline
    inputs: {total: 90}
    expect: {nodes: {say: Each pays 30.}}
"""


def problems(source: str) -> list[str]:
    try:
        load(dedent(source))
    except WorkflowInvalid as exc:
        return [str(problem) for problem in exc.problems]
    return []


async def test_a_tool_node_runs_the_tool_and_the_call_is_audited(runtime: Runtime) -> None:
    async with runtime.core.sessions.begin() as session:
        await store.save(session, SPLIT, origin="test")
    await say(runtime, "/split 100 people=4")
    await drain(runtime)

    assert (await delivered(runtime))[-1].text == "Each pays 25."
    async with runtime.core.sessions() as session:
        [event] = await session.scalars(select(AuditEvent))
    assert (event.actor, event.subject, event.status) == ("run:1/share", "calculate", "ok")
    assert event.data["arguments"] == {"expression": "100.0 / 4"}
    async with runtime.core.sessions() as session:
        started = (await session.get(WorkflowRun, 1)).started_at  # type: ignore[union-attr]
    assert event.key == f"run-1-{int(started.timestamp() * 1000)}-share"


async def test_offline_tools_run_in_a_workflows_tests_and_others_want_a_mock() -> None:
    [passed] = await run_tests(load(SPLIT))
    assert passed.passed, passed.problems

    reader = load(
        dedent("""\
        name: reader
        nodes:
          page: {type: tool, tool: read_webpage, args: {url: "https://example.org"}}
        tests:
          - name: unmocked
            expect: {status: succeeded}
          - name: mocked
            mocks: {page: {title: Example, text: hello}}
            expect: {output: {title: Example, text: hello}}
        """)
    )
    unmocked, mocked = await run_tests(reader)
    assert "read_webpage needs the network or the database: mock it in the test" in str(
        unmocked.problems
    )
    assert mocked.passed, mocked.problems


def test_tool_names_and_arguments_are_checked_when_saved() -> None:
    assert problems("""\
        name: t
        inputs:
          page: {type: string}
        nodes:
          a: {type: tool, tool: calculator, args: {expression: "1+1"}}
          b: {type: tool, tool: calculate, args: {expresion: "1+1"}}
          c: {type: tool, tool: read_webpage, args: {url: "{{ page }}", max_chars: lots}}
          d: {type: tool, tool: current_time, args: {zone: "{{ page }}"}}
        """) == [
        "<workflow>:5: nodes.a.tool: unknown tool 'calculator' — did you mean 'calculate'?",
        "<workflow>:6: nodes.b.args.expression: required by tool 'calculate'",
        "<workflow>:6: nodes.b.args.expresion: unknown calculate argument 'expresion' — did "
        "you mean 'expression'?",
        "<workflow>:7: nodes.c.args.max_chars: should be a valid integer, got 'lots'",
    ]
