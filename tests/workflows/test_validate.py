"""Workflow documents are checked before they are saved: messages name file, line and node."""

from __future__ import annotations

import json
import time
from pathlib import Path
from textwrap import dedent
from typing import Any, ClassVar

import pytest
import yaml

from tests.bot.test_yamlsafe import BRACKETS, LAUGHS
from workflows.errors import WorkflowError
from workflows.nodes import NODE_TYPES
from workflows.nodes.base import NodeContext, NodeResult, NodeType, Params
from workflows.spec import NodeSpec, WorkflowSpec
from workflows.validate import Positions, Problem, WorkflowInvalid, check, load, validate_file

POLISH = """\
name: polish
description: Draft with one model, critique with another, refine with the first.
command: /polish
inputs:
  topic: {type: string, description: what to write about}
  words: {type: integer, default: 200}
nodes:
  draft:
    type: llm
    model: openai/gpt-4o-mini
    temperature: 0.7
    system: "Write plain prose for {{ run.workflow }}; today is {{ now.strftime('%A') }}."
    prompt: "Write about {{ topic }} in at most {{ words }} words."
  critique:
    type: llm
    needs: [draft]
    model: anthropic/claude-3-5-haiku-latest
    temperature: 0
    prompt: |
      Critique this draft about {{ inputs.topic }}. List concrete problems.
      {{ draft }}
  worth_fixing:
    type: condition
    needs: critique
    if: critique | length > 20
  refine:
    type: llm
    needs: [critique, worth_fixing]
    when: "{{ worth_fixing }}"
    model: openai/gpt-4o-mini
    temperature: "{{ 0.2 if words > 500 else 0.5 }}"
    prompt: |
      Rewrite the draft, fixing each point.
      {% for point in critique.splitlines() if point %}{{ loop.index }}. {{ point }}
      {% endfor %}{% set original = draft %}Draft: {{ original }}
  post:
    type: reply
    needs: [refine]
    text: "{{ refine or draft }}"
output: "{{ refine or draft }}"
limits: {max_steps: 20, retries: 2}
tests:
  - name: refines a weak draft
    inputs: {topic: tides}
    mocks:
      draft: Tides go.
      critique: Too short; say what causes tides and why there are two a day.
      refine: The moon pulls the sea.
    expect:
      output: The moon pulls the sea.
      status: succeeded
      nodes: {post: The moon pulls the sea.}
"""

DIGEST = """\
name: digest
schedule: {cron: "0 9 * * 1-5", timezone: Europe/Berlin}
inputs:
  last: {type: string, default: 24h}
nodes:
  summary: {type: llm, prompt: "Summarise the last {{ last }}."}
  post: {type: reply, needs: [summary], text: "{{ summary }}", to: {channel: web, chat: team}}
"""


def problems(text: str, node_types: dict[str, NodeType] | None = None) -> list[str]:
    with pytest.raises(WorkflowInvalid) as caught:
        load(dedent(text), node_types=node_types)
    return [str(problem) for problem in caught.value.problems]


class MapParams(Params):
    over: Any = None
    do: str = ""


class FakeMap:
    """A stand-in ``map`` node type: validation only reads its name, params and raw."""

    name: ClassVar[str] = "map"
    params: ClassVar[type[Params]] = MapParams
    raw: ClassVar[tuple[str, ...]] = ()

    async def run(self, ctx: NodeContext, params: Any) -> NodeResult:
        return NodeResult()


# Valid documents.


def test_a_multi_model_draft_critique_refine_workflow_is_valid() -> None:
    spec = load(POLISH)

    assert list(spec.nodes) == ["draft", "critique", "worth_fixing", "refine", "post"]
    assert spec.nodes["critique"].params["model"] != spec.nodes["draft"].params["model"]
    assert spec.nodes["worth_fixing"].needs == ("critique",)


def test_a_scheduled_workflow_with_defaults_is_valid() -> None:
    assert load(DIGEST).schedule is not None


def test_json_is_read_as_yaml_even_indented_with_tabs() -> None:
    data = yaml.safe_load(POLISH)

    assert load(json.dumps(data, indent="\t")) == load(POLISH)


def test_validate_file_finds_nothing_wrong_with_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "polish.yaml"
    path.write_text(POLISH)

    assert validate_file(path) == []


def test_validate_file_names_the_file_in_each_problem(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nnodes:\n  a: {type: template, text: '{{ txt }}'}\n")

    found = validate_file(path)

    assert found == [
        Problem(str(path), 3, "nodes.a.text", "unknown variable 'txt'; known: run, now, inputs")
    ]


def test_a_file_that_cannot_be_read_is_one_problem(tmp_path: Path) -> None:
    [problem] = validate_file(tmp_path / "missing.yaml")

    assert problem.line is None and problem.path == ""
    assert str(problem).startswith(f"{tmp_path / 'missing.yaml'}: cannot read the file: ")


@pytest.mark.parametrize(
    ("bomb", "line", "message"),
    [
        (LAUGHS, 7, "the aliases here would expand to more than 10,000 extra values"),
        (f"x: {BRACKETS}\n", 3, "nested more than 100 levels deep"),
        (BRACKETS, 1, "nested more than 100 levels deep"),
        (f"\t{BRACKETS}", 1, "invalid YAML: found character '\\t' that cannot start any token"),
    ],
    ids=["billion-laughs", "brackets", "only-brackets", "brackets-and-a-tab"],
)
def test_a_yaml_bomb_is_refused_at_its_line_within_seconds(
    tmp_path: Path, bomb: str, line: int, message: str
) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(f"name: bomb\nnodes: {{}}\n{bomb}" if line > 1 else bomb)
    started = time.monotonic()

    [problem] = validate_file(path)

    assert time.monotonic() - started < 5
    assert (problem.source, problem.line) == (str(path), line)
    assert problem.message.startswith(message)


def test_a_file_too_large_is_refused_unparsed(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("name: big\nnodes: {}\ndescription: " + "x" * 1_000_000)

    [problem] = validate_file(path)

    assert str(problem).startswith(f"{path}: the document has 1,000,03")
    assert problem.message.endswith("it may have at most 1,000,000 characters")


# Parsing and the schema.


def test_a_yaml_syntax_error_gives_its_line() -> None:
    assert problems("name: x\nnodes:\n  a: {type: llm\n  b: 2\n") == [
        "<workflow>:4: invalid YAML: expected ',' or '}', but got ':' "
        "(while parsing a flow mapping)"
    ]


def test_an_alias_that_contains_itself_is_refused() -> None:
    assert problems("name: x\nnodes:\n  a: &loop {type: template, text: [*loop]}\n") == [
        "<workflow>:3: invalid YAML: an alias contains itself"
    ]


def test_a_document_that_is_not_a_mapping_is_refused() -> None:
    assert problems("- just\n- a list\n") == [
        "<workflow>:1: expected a mapping with at least name and nodes"
    ]


def test_a_key_given_twice_is_refused() -> None:
    assert problems("""\
        name: twice
        nodes:
          a: {type: template, text: one}
          a: {type: template, text: two}
        """) == ["<workflow>:4: nodes.a: defined twice (first at line 3)"]


def test_missing_name_and_nodes_are_reported() -> None:
    assert problems("description: nothing else\n") == [
        "<workflow>:1: name: required",
        "<workflow>:1: nodes: required",
    ]


def test_schema_errors_name_their_key_and_line() -> None:
    assert problems("""\
        name: Bad Name
        command: digest
        outptu: x
        inputs:
          n: {type: int, defalt: 3}
          m: 3
        nodes:
          a: {type: template, text: hi}
        limits: {max_steps: 0}
        """) == [
        "<workflow>:1: name: use lowercase letters, digits, '-' or '_', starting with a letter",
        "<workflow>:2: command: a command looks like /digest: a slash, then lowercase letters",
        "<workflow>:3: outptu: unknown key 'outptu' — did you mean 'output'?",
        "<workflow>:5: inputs.n.type: should be 'string', 'integer', 'number', 'boolean', "
        "'list' or 'object', got 'int'",
        "<workflow>:5: inputs.n.defalt: unknown key 'defalt' — did you mean 'default'?",
        "<workflow>:6: inputs.m: expected a mapping, got 3",
        "<workflow>:9: limits.max_steps: should be greater than 0, got 0",
    ]


def test_malformed_nodes_are_reported_each_at_its_own_line() -> None:
    assert problems("""\
        name: shapes
        nodes:
          a: {type: template, text: hi, needs: 5}
          b: 3
          c:
            type: template
            when: 4
          d: {type: template, needs: [1]}
        """) == [
        "<workflow>:3: nodes.a.needs: expected a node id or a list of node ids",
        "<workflow>:4: nodes.b: expected a mapping with the node's type and parameters",
        "<workflow>:7: nodes.c.when: should be a valid string, got 4",
        "<workflow>:8: nodes.d.needs[0]: should be a valid string, got 1",
    ]


def test_node_ids_must_be_usable_as_variables() -> None:
    assert problems("name: ids\nnodes:\n  Draft: {type: template, text: hi}\n") == [
        "<workflow>:2: nodes: node id 'Draft': use lowercase letters, digits and '_' "
        "(ids are variable names in expressions)"
    ]


# Node types and their parameters.


def test_an_unknown_node_type_suggests_the_closest() -> None:
    assert problems("name: t\nnodes:\n  fetch: {type: htp, url: 'https://example.org'}\n") == [
        "<workflow>:3: nodes.fetch.type: unknown node type 'htp' — did you mean 'http'?"
    ]


def test_an_unknown_node_type_with_no_close_match_lists_the_known_ones() -> None:
    known = ", ".join(sorted(NODE_TYPES))

    assert problems("name: t\nnodes:\n  x: {type: teleport}\n  y: {text: hi}\n") == [
        f"<workflow>:3: nodes.x.type: unknown node type 'teleport'; known: {known}",
        f"<workflow>:4: nodes.y.type: required; known: {known}",
    ]


def test_node_params_are_checked_by_their_node_type() -> None:
    assert problems("""\
        name: params
        nodes:
          a:
            type: llm
            prompt: hi
            temperatur: 0.3
          b:
            type: llm
            prompt: hi
            temperature: hot
            max_tokens: 0
          c: {type: llm, system: no prompt}
        """) == [
        "<workflow>:6: nodes.a.temperatur: unknown parameter 'temperatur' — did you mean "
        "'temperature'?",
        "<workflow>:10: nodes.b.temperature: should be a valid number, got 'hot'",
        "<workflow>:11: nodes.b.max_tokens: should be greater than 0, got 0",
        "<workflow>:12: nodes.c.prompt: required by node type 'llm'",
    ]


def test_a_templated_param_is_typed_when_rendered_but_an_unknown_one_is_always_wrong() -> None:
    assert problems("""\
        name: templated
        inputs:
          temp: {type: number, default: 0.5}
        nodes:
          a:
            type: llm
            prompt: hi
            temperature: "{{ temp }}"
            temprature: "{{ temp }}"
        """) == [
        "<workflow>:9: nodes.a.temprature: unknown parameter 'temprature' — did you mean "
        "'temperature'?"
    ]


def test_an_aliased_param_is_known_by_the_name_written_in_documents() -> None:
    assert problems("name: t\nnodes:\n  c: {type: condition, iff: 'true'}\n") == [
        "<workflow>:3: nodes.c.if: required by node type 'condition'",
        "<workflow>:3: nodes.c.iff: unknown parameter 'iff' — did you mean 'if'?",
    ]


# The needs graph.


def test_needs_naming_an_unknown_node_suggests_the_closest() -> None:
    assert problems("""\
        name: needs
        nodes:
          draft: {type: template, text: hi}
          post:
            type: reply
            text: done
            needs:
              - drafts
              - nothing_like_it
        """) == [
        "<workflow>:8: nodes.post.needs[0]: unknown node 'drafts' — did you mean 'draft'?",
        "<workflow>:9: nodes.post.needs[1]: unknown node 'nothing_like_it'; known: draft, post",
    ]


def test_a_cycle_is_listed_in_the_order_outputs_flow() -> None:
    assert problems("""\
        name: loop
        nodes:
          a: {type: template, text: x, needs: [c]}
          b: {type: template, text: x, needs: [a]}
          c: {type: template, text: x, needs: [b]}
        """) == ["<workflow>:2: nodes: cycle a → b → c → a"]


def test_a_node_that_needs_itself_is_a_cycle() -> None:
    assert problems("name: self\nnodes:\n  a: {type: template, text: x, needs: a}\n") == [
        "<workflow>:2: nodes: cycle a → a"
    ]


# Variables.


def test_an_unknown_variable_suggests_the_closest_name() -> None:
    assert problems("""\
        name: vars
        inputs:
          text: {type: string}
        nodes:
          summarize: {type: llm, prompt: "Summarise {{ txt }}"}
        """) == [
        "<workflow>:5: nodes.summarize.prompt: unknown variable 'txt' — did you mean 'text'?"
    ]


def test_an_unknown_variable_with_no_close_match_lists_what_is_known() -> None:
    assert problems("""\
        name: vars
        inputs:
          topic: {type: string}
        nodes:
          draft: {type: llm, prompt: "{{ topic }}"}
          post: {type: reply, needs: [draft], text: "{{ zebra }}"}
        """) == [
        "<workflow>:6: nodes.post.text: unknown variable 'zebra'; known: topic, draft, run, now, "
        "inputs"
    ]


def test_reading_a_node_that_is_not_waited_for_asks_for_needs() -> None:
    assert problems("""\
        name: order
        nodes:
          draft: {type: llm, prompt: write}
          post: {type: reply, text: "{{ draft }}"}
          echo: {type: template, text: "{{ echo }}"}
        """) == [
        "<workflow>:4: nodes.post.text: 'draft' is the output of a node this node does not wait "
        "for: add it to needs",
        "<workflow>:5: nodes.echo.text: 'echo' is this node's own output, which it cannot read",
    ]


def test_nested_params_raw_expressions_and_when_are_all_checked() -> None:
    assert problems("""\
        name: places
        inputs:
          score: {type: number, default: 1}
        nodes:
          fetch:
            type: http
            url: https://example.org
            headers:
              X-Score: "{{ scroe }}"
          high: {type: condition, if: "scor > 3"}
          post:
            type: reply
            needs: [high]
            when: "hihg"
            text: done
        """) == [
        "<workflow>:9: nodes.fetch.headers.X-Score: unknown variable 'scroe' — did you mean "
        "'score'?",
        "<workflow>:10: nodes.high.if: unknown variable 'scor' — did you mean 'score'?",
        "<workflow>:14: nodes.post.when: unknown variable 'hihg' — did you mean 'high'?",
    ]


def test_item_and_index_exist_only_inside_map_nodes() -> None:
    types: dict[str, NodeType] = {**NODE_TYPES, "map": FakeMap()}

    assert problems(
        """\
        name: each
        inputs:
          urls: {type: list, default: []}
        nodes:
          each: {type: map, over: "{{ urls }}", do: "{{ index }}: {{ item }}"}
          after: {type: template, needs: [each], text: "{{ item }}"}
        """,
        types,
    ) == ["<workflow>:6: nodes.after.text: 'item' exists only inside map nodes"]


def test_output_may_read_every_node_and_input() -> None:
    assert problems("""\
        name: out
        inputs:
          topic: {type: string, default: tides}
        nodes:
          a: {type: template, text: "{{ topic }}"}
          b: {type: template, text: two}
        output:
          both: "{{ a }} {{ b }} {{ topic }}"
          other: "{{ c }}"
        """) == [
        "<workflow>:9: output.other: unknown variable 'c'; known: topic, a, b, run, now, inputs"
    ]


# The sandbox and template syntax.


def test_reaching_for_python_internals_is_refused() -> None:
    assert problems("""\
        name: escape
        nodes:
          a: {type: template, text: "{{ ''.__class__.__mro__[1] }}"}
          b: {type: template, text: "{{ cycler['__init__']['__globals__'] }}"}
          c: {type: condition, if: "joiner.mro()"}
        """) == [
        "<workflow>:3: nodes.a.text: expressions may not use '__class__'",
        "<workflow>:3: nodes.a.text: expressions may not use '__mro__'",
        "<workflow>:4: nodes.b.text: expressions may not use '__globals__'",
        "<workflow>:4: nodes.b.text: expressions may not use '__init__'",
        "<workflow>:5: nodes.c.if: expressions may not use 'mro'",
    ]


def test_a_template_syntax_error_gives_jinjas_reason() -> None:
    assert problems("""\
        name: syntax
        nodes:
          a: {type: template, text: "{{ 1 + }}"}
          b: {type: template, text: "{% if true %}open"}
        """) == [
        "<workflow>:3: nodes.a.text: invalid expression: unexpected 'end of print statement'",
        "<workflow>:4: nodes.b.text: invalid expression: Unexpected end of template. Jinja was "
        "looking for the following tags: 'elif' or 'else' or 'endif'. The innermost block that "
        "needs to be closed is 'if'.",
    ]


# Names.


def test_names_may_not_clash_with_each_other_or_with_globals() -> None:
    assert problems("""\
        name: clash
        inputs:
          topic: {type: string, default: x}
          my-topic: {type: string, default: x}
        nodes:
          topic: {type: template, text: hi}
          run: {type: template, text: hi}
        """) == [
        "<workflow>:4: inputs.my-topic: use letters, digits and '_' (inputs are variables in "
        "expressions)",
        "<workflow>:6: nodes.topic: 'topic' is also an input: rename one, expressions cannot "
        "tell them apart",
        "<workflow>:7: nodes.run: 'run' is reserved: expressions already have a variable by "
        "that name",
    ]


# Inputs and tests.


def test_defaults_must_have_the_declared_type() -> None:
    assert problems("""\
        name: defaults
        inputs:
          n: {type: integer, default: ten}
          flag: {type: integer, default: true}
          ratio: {type: number, default: 3}
          tags: {type: list, default: a}
        nodes:
          a: {type: template, text: hi}
        """) == [
        "<workflow>:3: inputs.n.default: expected integer, got 'ten'",
        "<workflow>:4: inputs.flag.default: expected integer, got True",
        "<workflow>:6: inputs.tags.default: expected list, got 'a'",
    ]


def test_test_cases_must_give_the_inputs_the_workflow_declares() -> None:
    assert problems("""\
        name: cases
        inputs:
          topic: {type: string}
          n: {type: integer, default: 3}
        nodes:
          a: {type: template, text: "{{ topic }}"}
        tests:
          - name: typed
            inputs: {topic: tides, n: ten, tpoic: x}
          - name: missing
            inputs: {n: "4"}
          - name: typed as on a command line
            inputs: {topic: 7, n: "4"}
        """) == [
        "<workflow>:9: tests[0].inputs.n: expected integer, got 'ten'",
        "<workflow>:9: tests[0].inputs.tpoic: unknown input 'tpoic' — did you mean 'topic'?",
        "<workflow>:11: tests[1].inputs: missing required input 'topic'",
        "<workflow>:13: tests[2].inputs.topic: expected string, got 7",
    ]


def test_mocks_and_expectations_must_name_real_nodes_and_keys() -> None:
    assert problems("""\
        name: cases
        nodes:
          draft: {type: llm, prompt: write}
        tests:
          - name: one
            mocks: {drfat: text}
            expect:
              outptu: text
              status: done
              nodes: {darft: text}
          - name: one
            expect: {nodes: [draft]}
        """) == [
        "<workflow>:6: tests[0].mocks.drfat: unknown node 'drfat' — did you mean 'draft'?",
        "<workflow>:8: tests[0].expect.outptu: unknown key 'outptu' — did you mean 'output'?",
        "<workflow>:9: tests[0].expect.status: expected 'succeeded' or 'failed', got 'done'",
        "<workflow>:10: tests[0].expect.nodes.darft: unknown node 'darft' — did you mean 'draft'?",
        "<workflow>:11: tests[1].name: another test is also named 'one'",
        "<workflow>:12: tests[1].expect.nodes: expected a mapping of node id to expected output, "
        "got ['draft']",
    ]


# Schedule and permissions.


def test_a_schedule_that_never_fires_is_refused() -> None:
    assert problems(DIGEST.replace("0 9 * * 1-5", "0 0 30 2 *")) == [
        "<workflow>:2: schedule.cron: '0 0 30 2 *' never fires"
    ]


def test_a_leap_day_schedule_fires_within_the_horizon() -> None:
    assert load(DIGEST.replace("0 9 * * 1-5", "0 0 29 2 *")).schedule is not None


def test_a_malformed_cron_expression_is_refused() -> None:
    [message] = problems(DIGEST.replace("0 9 * * 1-5", "61 * * * *"))

    assert message.startswith("<workflow>:2: schedule.cron: '61 * * * *' is not a cron expression")
    assert message.endswith(
        "write 'minute hour day-of-month month day-of-week', e.g. '0 9 * * 1-5'"
    )


def test_the_time_zone_must_exist() -> None:
    assert problems(DIGEST.replace("Europe/Berlin", "Mars/Base")) == [
        "<workflow>:2: schedule.timezone: unknown time zone 'Mars/Base'"
    ]


def test_a_scheduled_workflow_cannot_have_inputs_nobody_gives() -> None:
    assert problems(DIGEST.replace("default: 24h", "required: true")) == [
        "<workflow>:4: inputs.last: required, but a scheduled run has no one to give it: "
        "give it a default"
    ]


def test_allow_names_users_roles_or_channels() -> None:
    assert problems("name: a\nnodes:\n  a: {type: template, text: hi}\nallow: {user: [ann]}\n") == [
        "<workflow>:4: allow.user: unknown key 'user' — did you mean 'users'?"
    ]


# The problem vocabulary.


def test_problems_read_like_compiler_messages_and_join_into_one_error() -> None:
    found = [
        Problem("digest.yaml", 4, "nodes.a.text", "unknown variable 'x'"),
        Problem("digest.yaml", None, "", "cannot read the file"),
    ]
    error = WorkflowInvalid(found)

    assert isinstance(error, WorkflowError)
    assert (
        error.text
        == "digest.yaml:4: nodes.a.text: unknown variable 'x'\ndigest.yaml: cannot read the file"
    )


def test_check_works_on_a_spec_built_in_code_without_positions() -> None:
    spec = WorkflowSpec(
        name="built",
        nodes={"a": NodeSpec(id="a", type="template", params={"text": "{{ b }}"})},
    )

    assert check(spec) == [
        Problem("<workflow>", None, "nodes.a.text", "unknown variable 'b'; known: run, now, inputs")
    ]


def test_a_missing_key_takes_the_line_of_its_nearest_parent() -> None:
    where = Positions("w.yaml", {"": 1, "nodes": 2, "nodes.a": 3, "tests": 9})

    assert where.line("nodes.a.prompt") == 3
    assert where.line("tests[2].inputs.n") == 9
    assert where.line("name") == 1
    assert Positions().line("name") is None


def test_problems_come_in_the_order_of_their_lines() -> None:
    found = problems("""\
        name: order
        output: "{{ late }}"
        nodes:
          a: {type: template, text: "{{ early }}"}
        """)

    assert [line.split(":")[1] for line in found] == ["2", "4"]


def test_the_node_a_map_runs_is_checked_like_any_node() -> None:
    assert problems("""\
        name: m
        nodes:
          each:
            type: map
            items: "[1, 2]"
            node: {type: htp, url: "{{ item }}"}
          again:
            type: map
            items: "[1, 2]"
            node: {type: http, urll: "{{ item }}"}
          deeper:
            type: map
            items: "[1, 2]"
            node: {type: map, items: "[3]", node: {type: template, text: x}}
        """) == [
        "<workflow>:6: nodes.each.node.type: unknown node type 'htp' — did you mean 'http'?",
        "<workflow>:10: nodes.again.node.url: required by node type 'http'",
        "<workflow>:10: nodes.again.node.urll: unknown parameter 'urll' — did you mean 'url'?",
        "<workflow>:14: nodes.deeper.node.type: unknown node type 'map'; known: approval, "
        "condition, delay, file, http, input, llm, persona, reply, switch, template, tool, "
        "workflow",
    ]
