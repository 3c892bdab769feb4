"""Map, persona and sub-workflow nodes."""

from __future__ import annotations

from bot.app import Runtime
from tests.fakes.llm_server import FakeLLM
from tests.support import delivered, drain, say
from workflows import store
from workflows.testing import run_tests
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
