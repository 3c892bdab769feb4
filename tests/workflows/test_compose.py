"""Map, persona and sub-workflow nodes."""

from __future__ import annotations

from sqlalchemy import select

from bot.app import Runtime
from bot.storage.models import WorkflowRun, WorkflowStep
from tests.fakes.llm_server import FakeLLM
from tests.support import delivered, drain, say
from workflows import store
from workflows.testing import run_in_memory, run_tests
from workflows.validate import load

MAP = """
name: shout
inputs:
  words: {type: list, default: [owl, bee, ant], description: words to shout}
nodes:
  each: {type: map, items: words, parallel: 2,
         node: {type: template, text: "{{ index }}:{{ item | upper }}"}}
output: "{{ each | join(', ') }}"
tests:
  - name: maps every item in order
    expect: {output: "0:OWL, 1:BEE, 2:ANT"}
"""


async def test_map_runs_a_node_per_item_in_order() -> None:
    (result,) = await run_tests(load(MAP))
    assert result.passed, result.problems


ASK = """
name: ask
inputs:
  question: {type: string, description: what to ask}
nodes:
  answer: {type: persona, persona: coder, prompt: "{{ question }}"}
  post: {type: reply, needs: [answer], text: "{{ answer }}"}
"""

OUTER = """
name: outer
inputs:
  words: {type: list, default: [a, b], description: words}
nodes:
  inner: {type: workflow, workflow: shout, inputs: {words: "{{ words }}"}}
output: "inner said {{ inner }}"
"""


async def test_a_persona_node_answers_with_the_personas_prompt_and_model(
    runtime: Runtime, llm: FakeLLM
) -> None:
    async with runtime.core.sessions.begin() as session:
        await store.save(session, ASK, origin="test")
    await say(runtime, "/run ask question=why")
    await drain(runtime)

    assert "senior software engineer" in llm.requests[-1]["messages"][0]["content"]
    assert (await delivered(runtime))[-1].text == "echo: why"


async def test_a_workflow_node_runs_a_stored_workflow(runtime: Runtime) -> None:
    async with runtime.core.sessions.begin() as session:
        await store.save(session, MAP, origin="test")
        await store.save(session, OUTER, origin="test")
    await say(runtime, "/run outer")
    await drain(runtime)

    assert (await delivered(runtime))[-1].text.endswith("inner said 0:A, 1:B")


TWO_STEPS = """
name: twostep
nodes:
  first:  {type: llm, prompt: "one"}
  second: {type: llm, needs: [first], prompt: "two after {{ first }}"}
output: "{{ second }}"
"""

PARENT = """
name: parent
command: /parent
nodes:
  child: {type: workflow, workflow: twostep}
  post:  {type: reply, needs: [child], text: "got {{ child }}"}
"""


async def _saved(runtime: Runtime, *sources: str) -> None:
    async with runtime.core.sessions.begin() as session:
        for source in sources:
            await store.save(session, source, origin="test")


async def _runs(runtime: Runtime) -> list[WorkflowRun]:
    async with runtime.core.sessions() as session:
        return list(await session.scalars(select(WorkflowRun).order_by(WorkflowRun.id)))


async def _step(runtime: Runtime, run_id: int, node_id: str) -> WorkflowStep:
    async with runtime.core.sessions() as session:
        step = await session.scalar(
            select(WorkflowStep).where(
                WorkflowStep.run_id == run_id, WorkflowStep.node_id == node_id
            )
        )
    assert step is not None
    return step


async def test_a_sub_workflow_is_a_run_of_its_own_that_its_node_waits_for(
    runtime: Runtime, llm: FakeLLM
) -> None:
    await _saved(runtime, TWO_STEPS, PARENT)
    await say(runtime, "/parent")
    await drain(runtime)

    parent, child = await _runs(runtime)
    assert (parent.status, child.status) == ("succeeded", "succeeded")
    assert (child.parent_run_id, child.parent_node, child.depth) == (parent.id, "child", 1)
    assert child.trigger == "workflow" and child.conversation_id == parent.conversation_id
    assert child.output == "echo: two after echo: one"
    node = await _step(runtime, parent.id, "child")
    assert (node.status, node.output) == ("succeeded", child.output)
    assert node.prompt_tokens == child.prompt_tokens > 0
    assert parent.prompt_tokens == child.prompt_tokens  # the parent's own nodes used no model
    assert (await delivered(runtime))[-1].text == "got echo: two after echo: one"


async def test_a_failed_child_fails_its_parent_and_a_retry_resumes_the_child(
    runtime: Runtime, llm: FakeLLM
) -> None:
    await _saved(runtime, TWO_STEPS, PARENT)
    llm.script("first answer", FakeLLM.error(400, "the model refused on purpose"))
    await say(runtime, "/parent")
    await drain(runtime)

    parent, child = await _runs(runtime)
    assert (parent.status, parent.failed_node, child.status) == ("failed", "child", "failed")
    assert parent.error is not None and parent.error.startswith("twostep failed at 'second':")
    assert "the model refused on purpose" in parent.error
    failure = (await delivered(runtime))[-1].text
    assert failure.startswith(f"Run #{parent.id} of parent failed at node 'child'")

    await say(runtime, f"/run retry {parent.id}")
    await drain(runtime)

    assert [run.status for run in await _runs(runtime)] == ["succeeded", "succeeded"]  # no third
    first = await _step(runtime, child.id, "first")
    assert (first.attempts, first.output) == (1, "first answer")  # kept, not asked again
    assert [r["messages"][-1]["content"] for r in llm.requests].count("one") == 1
    assert (await delivered(runtime))[-1].text == "got echo: two after first answer"


async def test_in_a_workflows_tests_the_child_still_runs_in_memory(runtime: Runtime) -> None:
    async with runtime.core.sessions.begin() as session:
        await store.save(session, MAP, origin="test")
    outcome = await run_in_memory(load(OUTER, source="test"), {}, core=runtime.core)

    assert outcome.run.status == "succeeded"
    assert outcome.run.output == "inner said 0:A, 1:B"
    assert await _runs(runtime) == []  # nothing stored
