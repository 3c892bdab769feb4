"""The engine on in-memory runs: order, branching, failures, limits, timers, parallelism."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bot import replies
from workflows.errors import WorkflowError
from workflows.spec import WorkflowSpec
from workflows.testing import plan, run_in_memory, run_tests


def spec(nodes: dict[str, Any], **extra: Any) -> WorkflowSpec:
    return WorkflowSpec.model_validate({"name": "t", "nodes": nodes, **extra})


async def test_a_chain_passes_values_along() -> None:
    flow = spec(
        {
            "greet": {"type": "template", "text": "hello {{ who }}"},
            "shout": {"type": "template", "needs": ["greet"], "text": "{{ greet | upper }}!"},
        },
        inputs={"who": {"type": "string"}},
        output="{{ shout }}",
    )
    outcome = await run_in_memory(flow, {"who": "ada"})

    assert outcome.run.status == "succeeded"
    assert outcome.run.output == "HELLO ADA!"
    assert outcome.run.steps["greet"].input == {"text": "hello ada"}


async def test_whole_expressions_keep_their_type() -> None:
    flow = spec(
        {
            "numbers": {"type": "template", "data": [1, 2, 3]},
            "total": {"type": "template", "needs": ["numbers"], "data": "{{ numbers | sum }}"},
        }
    )
    run = (await run_in_memory(flow, {})).run

    assert run.steps["numbers"].output == [1, 2, 3]
    assert run.output == 6


async def test_condition_branches_and_the_join_still_runs() -> None:
    flow = spec(
        {
            "big": {"type": "condition", "if": "n > 10"},
            "yes": {"type": "template", "needs": ["big"], "when": "big", "text": "large"},
            "no": {"type": "template", "needs": ["big"], "when": "not big", "text": "small"},
            "join": {"type": "template", "needs": ["yes", "no"], "text": "{{ yes or no }}"},
        },
        inputs={"n": {"type": "integer"}},
    )
    run = (await run_in_memory(flow, {"n": 3})).run

    assert run.steps["yes"].status == "skipped" and run.steps["no"].status == "succeeded"
    assert run.output == "small"


async def test_switch_picks_a_case() -> None:
    flow = spec(
        {
            "route": {"type": "switch", "value": "lang", "cases": {"german": "de", "french": "fr"}},
            "de": {
                "type": "template",
                "needs": ["route"],
                "when": "route == 'german'",
                "text": "Hallo",
            },
            "other": {
                "type": "template",
                "needs": ["route"],
                "when": "route == 'default'",
                "text": "Hi",
            },
        },
        inputs={"lang": {"type": "string"}},
    )
    assert (await run_in_memory(flow, {"lang": "de"})).run.output == "Hallo"
    assert (await run_in_memory(flow, {"lang": "es"})).run.output == "Hi"


async def test_a_failing_node_fails_the_run_and_says_which_and_why() -> None:
    flow = spec(
        {
            "ok": {"type": "template", "text": "fine"},
            "bad": {"type": "template", "needs": ["ok"], "text": "{{ missing_name }}"},
            "never": {"type": "template", "needs": ["bad"], "text": "x"},
        }
    )
    run = (await run_in_memory(flow, {})).run

    assert run.status == "failed" and run.failed_node == "bad"
    assert run.error == "the expression '{{ missing_name }}' failed: 'missing_name' is undefined"
    assert "never" not in run.steps


async def test_sandbox_escapes_fail_the_node() -> None:
    flow = spec({"evil": {"type": "template", "text": "{{ ''.__class__.__mro__ }}"}})
    run = (await run_in_memory(flow, {})).run

    assert run.status == "failed"
    assert "unsafe" in (run.error or "")


LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x"


async def test_a_bomb_in_when_a_parameter_or_the_output_fails_with_the_bound() -> None:
    too_slow = replies.template_too_slow(2)
    too_big = replies.template_too_big(1_000_000)
    flows = {
        "when": spec({"a": {"type": "template", "when": "('a' * 10**8)|length > 3", "text": "x"}}),
        "param": spec({"a": {"type": "template", "text": LOOPS}}),
        "if": spec({"a": {"type": "condition", "if": "range(10**9)|length > 3"}}),
        "items": spec(
            {
                "a": {
                    "type": "map",
                    "items": "range(3)|list",
                    "node": {"type": "template", "text": "{{ 'ab' * 10**7 }}"},
                }
            }
        ),
        "output": spec({"a": {"type": "template", "text": "x"}}, output=LOOPS),
    }
    started = time.monotonic()
    runs = {name: (await run_in_memory(flow, {})).run for name, flow in flows.items()}

    assert time.monotonic() - started < 60
    assert {name: (run.status, run.failed_node) for name, run in runs.items()} == {
        "when": ("failed", "a"),
        "param": ("failed", "a"),
        "if": ("failed", "a"),
        "items": ("failed", "a"),
        "output": ("failed", None),
    }
    assert runs["when"].error == f"when: {too_big}"
    assert runs["param"].error == too_slow
    assert runs["if"].error == replies.template_range_too_long(100_000, 10**9)
    assert runs["items"].error == too_big
    assert runs["output"].error == f"output: {too_slow}"


async def test_a_workflows_own_tests_are_bounded_too() -> None:
    flow = spec(
        {"a": {"type": "template", "text": LOOPS}},
        tests=[{"name": "bomb", "expect": {"status": "succeeded"}}],
    )
    [result] = await run_tests(flow)

    assert result.problems == (
        f"status: expected succeeded, got failed at node 'a': {replies.template_too_slow(2)}",
    )


async def test_mocks_replace_nodes_that_need_a_model() -> None:
    flow = spec(
        {
            "draft": {"type": "llm", "prompt": "write about {{ topic }}"},
            "post": {"type": "reply", "needs": ["draft"], "text": "{{ draft }}"},
        },
        inputs={"topic": {"type": "string"}},
    )
    outcome = await run_in_memory(flow, {"topic": "owls"}, {"draft": "Owls are quiet."})

    assert outcome.run.status == "succeeded"
    assert [p.text for p in outcome.posts] == ["Owls are quiet."]
    unmocked = (await run_in_memory(flow, {"topic": "owls"})).run
    assert unmocked.error == "this node calls a model: give it a mock in the test"


async def test_limits_stop_a_runaway_graph() -> None:
    nodes = {f"n{i}": {"type": "template", "text": "x"} for i in range(5)}
    run = (await run_in_memory(spec(nodes, limits={"max_steps": 3}), {})).run

    assert run.status == "failed"
    assert run.error == "stopped after 3 steps: the limit is 3 (max_steps)"


async def test_a_delay_parks_the_run_as_waiting() -> None:
    flow = spec(
        {
            "pause": {"type": "delay", "seconds": 3600},
            "after": {"type": "template", "needs": ["pause"], "text": "later"},
        }
    )
    run = (await run_in_memory(flow, {})).run

    assert run.status == "waiting" and run.wait_until is not None
    assert run.steps["pause"].status == "waiting" and "after" not in run.steps


async def test_independent_nodes_run_at_the_same_time() -> None:
    nodes: dict[str, Any] = {
        f"b{i}": {"type": "http", "url": "https://example.org/{{ i }}"} for i in range(4)
    }
    flow = spec(nodes, limits={"max_parallel": 4})
    assert plan(flow) == [["b0", "b1", "b2", "b3"]]


def test_the_plan_lists_the_waves() -> None:
    flow = spec(
        {
            "a": {"type": "template", "text": "1"},
            "b": {"type": "template", "needs": ["a"], "text": "2"},
            "c": {"type": "template", "needs": ["a"], "text": "3"},
            "d": {"type": "template", "needs": ["b", "c"], "text": "4"},
        }
    )
    assert plan(flow) == [["a"], ["b", "c"], ["d"]]


async def test_inputs_are_checked_and_converted() -> None:
    flow = spec(
        {"show": {"type": "template", "data": "{{ n * 2 }}"}},
        inputs={"n": {"type": "integer"}, "tag": {"type": "string", "default": "x"}},
    )
    assert (await run_in_memory(flow, {"n": "21"})).run.output == 42
    with pytest.raises(WorkflowError) as caught:
        await run_in_memory(flow, {"n": "many", "colour": "red"})
    assert caught.value.text == (
        "unknown input 'colour'; input 'n': expected integer, got 'many'. t takes: n=… tag=…"
    )


async def test_a_workflows_own_tests_report_pass_and_fail() -> None:
    flow = spec(
        {"draft": {"type": "llm", "prompt": "{{ topic }}"}},
        inputs={"topic": {"type": "string"}},
        output="{{ draft }}",
        tests=[
            {
                "name": "passes",
                "inputs": {"topic": "a"},
                "mocks": {"draft": "A"},
                "expect": {"output": "A"},
            },
            {
                "name": "fails",
                "inputs": {"topic": "b"},
                "mocks": {"draft": "B"},
                "expect": {"output": "C"},
            },
        ],
    )
    results = await run_tests(flow)

    assert [(r.name, r.passed) for r in results] == [("passes", True), ("fails", False)]
    assert results[1].problems == ("output: expected 'C', got 'B'",)


async def test_fan_out_waves_really_overlap() -> None:
    flow = spec({f"p{i}": {"type": "delay", "seconds": 0} for i in range(3)})
    started = asyncio.get_running_loop().time()
    run = (await run_in_memory(flow, {})).run
    assert asyncio.get_running_loop().time() - started < 1.0
    assert {s.status for s in run.steps.values()} == {"waiting"}
