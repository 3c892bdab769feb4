"""The README's examples work as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from bot.app import Runtime
from bot.config import Settings
from personas.spec import PersonaSpec
from tests.bot.test_cli import switchboard
from tests.fakes.llm_server import FakeLLM
from workflows.testing import run_tests
from workflows.validate import load

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```yaml\n(.*?)```", README, re.S)


def test_the_quickstart_is_the_two_commands() -> None:
    quickstart = README.split("## Quickstart", 1)[1].split("##", 1)[0]
    assert "make run" in quickstart and "make test" in quickstart


async def test_the_workflow_example_validates_and_its_tests_pass() -> None:
    (example,) = [block for block in BLOCKS if "nodes:" in block]
    results = await run_tests(load(example, source="README.md"))
    assert results and all(r.passed for r in results)


def test_the_persona_example_is_a_valid_persona() -> None:
    (example,) = [block for block in BLOCKS if "system_prompt:" in block]
    assert PersonaSpec.model_validate(yaml.safe_load(example)).name == "analyst"


def test_every_setting_is_documented() -> None:
    from bot.config import Settings

    for name, field in Settings.model_fields.items():
        variable = (
            str(field.validation_alias.choices[0])  # type: ignore[union-attr]
            if field.validation_alias
            else f"SWITCHBOARD_{name.upper()}"
        )
        assert f"`{variable}`" in README, f"README does not document {variable}"


def _terminal_examples() -> list[list[str]]:
    """The commands of the Terminal section that run and exit (not the interactive chat)."""
    block = README.split("### Terminal", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [line.split("  #", 1)[0].strip() for line in block.splitlines()]
    return [
        shlex.split(line)[1:]
        for line in lines
        if line.startswith("switchboard ") and " " in line[12:]
    ]


async def test_the_terminal_examples_work_on_a_fresh_install(
    runtime: Runtime, settings: Settings, llm: FakeLLM, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("- Ann: the demo is ready\n- Bo: who books the room?")
    config = {"SWITCHBOARD_CONFIG_DIR": str(tmp_path / "config")}
    examples = _terminal_examples()
    assert len(examples) == 6

    for args in examples:
        args = [str(notes) if arg == "notes.md" else arg for arg in args]
        result = await switchboard(settings, *args, env=config)
        assert result.returncode == 0, (args, result.stderr)
    asked = [m["content"] for request in llm.requests for m in request["messages"]]
    assert any("--- notes.md ---\n- Ann: the demo is ready" in text for text in asked)
    assert result.stdout.startswith("Started run #1 of summarize.")
    assert "echo: Summarise the following text." in result.stdout
