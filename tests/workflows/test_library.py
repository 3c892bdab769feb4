"""The template library (workflows/library): every template is valid, documented, and passes
its own tests — with no model, no network and no database."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.messages import ConversationRef
from workflows.nodes import NODE_TYPES
from workflows.spec import WorkflowSpec
from workflows.testing import run_in_memory, run_tests
from workflows.validate import load

LIBRARY = Path(__file__).parents[2] / "workflows" / "library"
PATHS = sorted(LIBRARY.glob("*.yaml"))
# The themes the library promises (issue 3, "Templates and prompt actions").
PROMISED = {
    "summarize",
    "daily-digest",
    "translate",
    "email-triage",
    "research-report",
    "meeting-tasks",
    "draft-critique-refine",
    "remind",
    "standup",
    "field-action",
}

each_template = pytest.mark.parametrize("path", PATHS, ids=lambda path: path.stem)


def template(path: Path) -> WorkflowSpec:
    """The template, or WorkflowInvalid listing every problem with its line."""
    return load(path.read_text(encoding="utf-8"), source=str(path))


def scheduled() -> list[Path]:
    return [path for path in PATHS if template(path).schedule is not None]


def test_the_library_has_the_promised_templates() -> None:
    assert len(PATHS) >= 10
    assert PROMISED - {path.stem for path in PATHS} == set()


@each_template
def test_a_template_is_valid_and_documented(path: Path) -> None:
    spec = template(path)

    assert spec.name == path.stem
    assert spec.description.strip()
    assert spec.tests, "a template needs at least one test case"
    undocumented = [name for name, declared in spec.inputs.items() if not declared.description]
    assert undocumented == []


@each_template
async def test_a_template_passes_its_own_tests(path: Path) -> None:
    results = await run_tests(template(path))

    failures = [f"{r.name}: {problem}" for r in results if not r.passed for problem in r.problems]
    assert failures == [], "\n".join(failures)


@each_template
async def test_mocked_nodes_still_get_valid_parameters(path: Path) -> None:
    """A mock skips its node's parameter check; a test passing with parameters the node would
    refuse (a temperature of "high", a `to:` that is not a conversation) proves nothing."""
    spec = template(path)
    for case in spec.tests:
        run = (await run_in_memory(spec, case.inputs, case.mocks)).run
        for node_id in case.mocks:
            step = run.steps.get(node_id)
            if step is not None and step.status != "skipped":
                NODE_TYPES[spec.nodes[node_id].type].params.model_validate(step.input)


def test_no_two_templates_share_a_command() -> None:
    commands = Counter(template(path).command for path in PATHS)
    assert [command for command, n in commands.items() if command and n > 1] == []


@pytest.mark.parametrize("path", scheduled(), ids=lambda path: path.stem)
async def test_a_scheduled_run_needs_no_inputs(path: Path) -> None:
    spec = template(path)
    outcome = await run_in_memory(spec, {}, spec.tests[0].mocks)

    assert outcome.run.status == "succeeded", outcome.run.error
    assert all(post.target is None for post in outcome.posts)


@pytest.mark.parametrize("path", scheduled(), ids=lambda path: path.stem)
async def test_a_scheduled_template_posts_to_the_named_conversation(path: Path) -> None:
    spec = template(path)
    outcome = await run_in_memory(spec, {"channel": "slack", "chat": "C042"}, spec.tests[0].mocks)

    assert outcome.posts, "the scheduled run posted nothing"
    assert {post.target for post in outcome.posts} == {ConversationRef("slack", "C042")}


async def test_a_reminder_waits_without_a_mock() -> None:
    spec = template(LIBRARY / "remind.yaml")
    before = datetime.now(UTC)
    run = (await run_in_memory(spec, {"message": "tea", "minutes": 5})).run

    assert run.status == "waiting" and run.wait_until is not None
    assert timedelta(minutes=5) <= run.wait_until - before < timedelta(minutes=6)
    assert "remind" not in run.steps


async def test_the_research_report_is_attached() -> None:
    spec = template(LIBRARY / "research-report.yaml")
    case = spec.tests[0]
    outcome = await run_in_memory(spec, case.inputs, case.mocks)

    assert [post.files for post in outcome.posts] == [("report.md",)]
